"""`fab <env> rollback`: undo the last successful deploy (DESIGN: Rollback).

The target deploy's journal record says what "back" means: its verified backup
(file, sha256, before-state figures, migration set, database properties) and
the release `current` pointed at before it, per host. Writes since Seed last
left the database (write counters recorded in the newest journal record) make
it refuse unless `--discard-writes`: a restore would silently lose them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from seed import release as rel
from seed import restore as restorelib
from seed.config import Environment
from seed.errors import HumanNeeded, PreflightFailed, SeedError
from seed.operation import Operation
from seed.remote import q
from seed.report import Output


def choose_target(records: list[dict[str, Any]], to: str | None) -> dict[str, Any]:
    """The deploy to undo: the newest successful one, or `--to ID`. PreflightFailed if none."""
    deploys = [r for r in records if r.get("kind") == "upgradedb"]
    good = [r for r in deploys if r.get("outcome") == "succeeded"]
    if to:
        match = [r for r in deploys if r.get("deploy_id") == to]
        if not match:
            raise PreflightFailed(f"--to {to}: no such deploy in the journal")
        target = match[0]
        if target.get("outcome") != "succeeded":
            raise PreflightFailed(
                f"--to {to}: that deploy ended '{target.get('outcome')}'; only a successful "
                "deploy can be rolled back"
            )
        if target.get("rolled_back_by"):
            raise PreflightFailed(f"--to {to}: already rolled back by {target['rolled_back_by']}")
        return target
    if not good:
        raise PreflightFailed("nothing to roll back: the journal has no successful deploy")
    last = good[-1]
    if last.get("rolled_back_by"):
        earlier = [r for r in good[:-1] if not r.get("rolled_back_by")]
        hint = (
            f"; to go one deploy further back: --to {earlier[-1]['deploy_id']}" if earlier else ""
        )
        raise PreflightFailed(
            f"nothing to roll back: the last deploy {last['deploy_id']} was already rolled "
            f"back by {last['rolled_back_by']}{hint}"
        )
    return last


class Rollback(Operation):
    """One `rollback` run. `run()` returns the report or raises a SeedError (exit code)."""

    kind = "rollback"

    def __init__(
        self,
        env: Environment,
        command: str,
        local_root: Path,
        out: Output,
        report_path: Path | None = None,
        to: str | None = None,
        discard_writes: bool = False,
    ) -> None:
        super().__init__(env, command, local_root, out, report_path)
        self.to = to
        self.discard_writes = discard_writes
        self.state: dict[str, str] = {"database": "untouched", "code": "untouched", "app": "?"}
        self.report.data["state"] = self.state

    def body(self) -> str:
        assert self.journal is not None
        records = self.journal.records()
        with self.step("choose deploy") as s:
            target = self.target = choose_target(records, self.to)
            self.report.data["target"] = target["deploy_id"]
            s.detail = (
                f"undo {target['deploy_id']} ({target.get('ref')}, "
                f"{str(target.get('sha_after', ''))[:12]})"
            )
        self.preflight()
        self.freeze_checking_writes(records, self.discard_writes, self.state)
        try:
            self.execute()
        except Exception as exc:
            self.fail(exc)
        return (
            f"rolled back deploy {target['deploy_id']} ({target.get('ref')}): database "
            f"restored from its backup and verified identical; code {self.state['code']}"
        )

    def after_success(self) -> None:
        """Record on the undone deploy who rolled it back (so it is not undone twice)."""
        assert self.journal is not None
        self.target["rolled_back_by"] = self.id
        with contextlib.suppress(SeedError, OSError):
            self.journal.write(self.target["deploy_id"], self.target)

    def preflight(self) -> None:
        session, target = self.session, self.target
        backup = target.get("backup") or {}
        before = target.get("before") or {}
        if not backup.get("path") or "database_properties" not in before:
            raise PreflightFailed(
                f"deploy {target['deploy_id']} has no usable backup record; cannot restore"
            )
        with self.step("verify backup") as s:
            restorelib.verify_backup(self.env, session.state, backup["path"], backup["sha256"])
            s.detail = f"{backup['path']} sha256 {backup['sha256'][:12]}, full read ok"
        with self.step("releases") as s:
            self.previous: dict[str, str | None] = dict(target.get("previous_releases") or {})
            for remote in session.serving_remotes():
                prev = self.previous.get(remote.label)
                if prev and not remote.is_dir(self.layout.release(prev)):
                    raise PreflightFailed(
                        f"the release before {target['deploy_id']} ({prev}) is gone from "
                        f"{remote.label}; cannot put the code back"
                    )
            s.detail = ", ".join(f"{k}: {v or 'none'}" for k, v in self.previous.items())

    def execute(self) -> None:
        session, target = self.session, self.target
        with self.step("code") as s:
            for remote in session.serving_remotes():
                prev = self.previous.get(remote.label)
                if prev:
                    rel.switch_current(remote, self.layout, prev)
                else:
                    remote.check(f"rm -f {q(self.layout.current)}", "removing current")
            self.state["code"] = self._code_text()
            s.detail = self.state["code"]
        backup = target["backup"]
        self.replace_database(backup["path"], backup["sha256"], target["before"], self.state)
        with self.step("start app") as s:
            hosts = [r for r in session.serving_remotes() if self.previous.get(r.label)]
            s.detail = self.state["app"] = self.start_app(hosts)
        self.record_after()

    def _code_text(self) -> str:
        prev = next((p for p in self.previous.values() if p), None)
        return f"current is {prev}" if prev else "no release (as before the first deploy)"

    def fail(self, exc: BaseException) -> None:
        message = (
            f"rollback of {self.target['deploy_id']} FAILED: {exc}. "
            f"Database: {self.state['database']}. Code: {self.state['code']}. "
            f"App: {self.state['app']}"
        )
        self.finish("failed", HumanNeeded.code, message)
        raise HumanNeeded(message) from None
