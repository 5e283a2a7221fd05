"""`fab <env> rollback`: undo the last successful deploy (DESIGN: Rollback).

The target deploy's journal record says what "back" means: its verified backup
(file, sha256, before-state figures, migration set, database properties) and
the release `current` pointed at before it, per host. Writes since Seed last
left the database (write counters recorded in the newest journal record) make
it refuse unless `--discard-writes`: a restore would silently lose them.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from seed import db as dblib
from seed import release as rel
from seed import restore as restorelib
from seed.config import Environment
from seed.errors import HumanNeeded, PreflightFailed, SeedError
from seed.journal import Journal, acquire_lock, release_lock
from seed.pipeline import new_deploy_id
from seed.remote import Remote, q
from seed.report import Output, Report, iso, write_json
from seed.session import Session


@dataclass
class RollbackOptions:
    command: str
    local_root: Path
    to: str | None = None
    discard_writes: bool = False
    report_path: Path | None = None


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


def baseline_counters(records: list[dict[str, Any]]) -> tuple[str, dict[str, int]] | None:
    """Write counters as Seed last left the database (newest record that has them)."""
    for record in reversed(records):
        after = record.get("after") or {}
        if "write_counters" in after:
            return str(record["deploy_id"]), dict(after["write_counters"])
    return None


class Rollback:
    """One `rollback` run. `run()` returns the report or raises a SeedError (exit code)."""

    def __init__(self, env: Environment, opts: RollbackOptions, out: Output) -> None:
        self.env = env
        self.opts = opts
        self.out = out
        self.id = new_deploy_id()
        self.app_name = f"seed-{env.name}-{self.id}"
        self.report = Report(env.name, opts.command, self.id)
        self.report.data["kind"] = "rollback"
        self.layout = rel.Layout(env.app.deploy_to)
        self.session = Session(env)
        self.journal: Journal | None = None
        self.state: dict[str, str] = {"database": "untouched", "code": "untouched", "app": "?"}
        self.report.data["state"] = self.state

    def step(self, name: str) -> Any:
        return self.out.step(self.report, name)

    def finish(self, outcome: str, code: int, message: str) -> None:
        self.report.outcome = outcome
        self.report.exit_code = code
        self.report.message = self.out.scrub(message)
        self.report.finished_at = iso()
        if self.journal is not None:
            with contextlib.suppress(SeedError, OSError):
                self.journal.write(self.id, self.report.to_json())
        local = self.opts.local_root / self.env.name / "reports" / f"{self.id}.json"
        write_json(local, self.report.to_json(), self.out.scrub)
        if self.opts.report_path:
            write_json(self.opts.report_path, self.report.to_json(), self.out.scrub)

    def run(self) -> Report:
        env = self.env
        self.out.line(f"seed rollback {env.name} ({env.description}): {self.id}")
        lock_conn: psycopg.Connection[Any] | None = None
        try:
            with self.step("connect") as s:
                self.session.open()
                s.detail = ", ".join(r.label for r in self.session.remotes.values())
            self.journal = Journal(env, self.session.state, self.opts.local_root, self.out.scrub)
            with self.step("lock"):
                self.journal.ensure()
                lock_conn = self.session.connect(
                    admin=True, dbname="postgres", app_name=self.app_name
                )
                acquire_lock(lock_conn, self.journal, self.id, self.opts.command)
            records = self.journal.records()
            with self.step("choose deploy") as s:
                target = choose_target(records, self.opts.to)
                self.target = target
                self.report.data["target"] = target["deploy_id"]
                s.detail = (
                    f"undo {target['deploy_id']} ({target.get('ref')}, "
                    f"{str(target.get('sha_after', ''))[:12]})"
                )
            self.preflight(records)
            self.freeze()
            try:
                self.check_writes(records)
            except SeedError:
                self.unfreeze()
                raise
            try:
                self.execute()
            except Exception as exc:
                self.fail(exc)
            message = (
                f"rolled back deploy {target['deploy_id']} ({target.get('ref')}): database "
                f"restored from its backup and verified identical; code {self.state['code']}"
            )
            self.finish("succeeded", 0, message)
            self.mark_target()
            return self.report
        except SeedError as exc:
            if self.report.outcome == "running":
                self.finish("failed", exc.code, str(exc))
            raise
        except BaseException as exc:  # a bug or an interrupt: still leave an honest record
            if self.report.outcome == "running":
                with contextlib.suppress(Exception):
                    self.finish("failed", 1, f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            if lock_conn is not None and self.journal is not None:
                with contextlib.suppress(Exception):
                    release_lock(lock_conn, self.journal, self.id)
            self.session.close()

    def preflight(self, records: list[dict[str, Any]]) -> None:
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
            self.current = {
                r.label: rel.current_release(r, self.layout) for r in session.serving_remotes()
            }
            s.detail = ", ".join(f"{k}: {v or 'none'}" for k, v in self.previous.items())

    def freeze(self) -> None:
        """Stop the app (maintenance on) and end the app role's sessions, so that no write
        can slip in after the writes check and every write is counted."""
        env, session = self.env, self.session
        with self.step("maintenance on") as s:
            self.running = [r for r in session.serving_remotes() if self.current.get(r.label)]
            if env.app.maintenance_on:
                for remote in self.running:
                    rel.run_hook(remote, self.layout, env.app.maintenance_on, "maintenance on")
                self.state["app"] = "stopped (maintenance on)"
            self.admin = session.connect(admin=True, app_name=self.app_name)
            ended = dblib.drain_sessions(self.admin, env.db.user, env.db.name, env.db.drain_timeout)
            s.detail = f"app stopped on {len(self.running)} host(s), {ended} session(s) ended"

    def unfreeze(self) -> None:
        """Nothing changed: start the app again where it was running."""
        command = self.env.app.maintenance_off or self.env.app.restart
        if command and self.env.app.maintenance_on:
            for remote in self.running:
                with contextlib.suppress(SeedError, OSError):
                    rel.run_hook(remote, self.layout, command, "maintenance off")
        self.state["app"] = "running as before"

    def check_writes(self, records: list[dict[str, Any]]) -> None:
        with self.step("writes since") as s:
            baseline = baseline_counters(records)
            now = dblib.write_counters(self.admin)
            if baseline is None:
                moved: dict[str, int | None] = {t: None for t in now}
                since = "(no record)"
            else:
                since, counters = baseline
                moved = dblib.writes_since(counters, now)
            self.report.data["writes_since"] = {"since": since, "tables": moved}
            if moved:
                listing = ", ".join(f"{t} {'?' if n is None else n}" for t, n in moved.items())
                if not self.opts.discard_writes:
                    raise PreflightFailed(
                        f"writes happened since {since}: {listing}; a restore would lose "
                        "them. Rerun with --discard-writes to roll back anyway"
                    )
                s.detail = f"discarding writes: {listing}"
            else:
                s.detail = f"no writes since {since}"

    def execute(self) -> None:
        env, session, target = self.env, self.session, self.target
        with self.step("code") as s:
            for remote in session.serving_remotes():
                prev = self.previous.get(remote.label)
                if prev:
                    rel.switch_current(remote, self.layout, prev)
                else:
                    remote.check(f"rm -f {q(self.layout.current)}", "removing current")
            self.state["code"] = self._code_text()
            s.detail = self.state["code"]
        with self.step("database") as s:
            backup = target["backup"]

            def close_live() -> None:
                self.admin.close()

            try:
                restored = restorelib.restore_as_live(
                    env,
                    session,
                    backup["path"],
                    backup["sha256"],
                    target["before"]["database_properties"],
                    self.id.lower().replace("-", "_"),
                    posixpath.join(env.state_dir, "jobs", self.id, "restore"),
                    self.app_name,
                    before_swap=close_live,
                )
            except restorelib.RestoreFailed as exc:
                self.state["database"] = (
                    "untouched (restore failed before the swap)" if exc.live_untouched else str(exc)
                )
                raise
            replaced = restored.plan.replaced
            self.state["database"] = f"restored from {backup['path']}; old kept as {replaced}"
            self.report.data["replaced_database"] = replaced
            s.detail = f"{backup['path']} restored, {replaced} kept"
        with self.step("verify") as s:
            self.admin = session.connect(admin=True, app_name=self.app_name)
            verification = restorelib.verify_like_before(env, self.admin, target["before"])
            self.report.data["verification"] = verification
            if verification["problems"]:
                self.state["database"] += "; VERIFICATION FAILED"
                raise SeedError("; ".join(verification["problems"]))
            self.state["database"] += "; verified identical to the backup's snapshot"
            s.detail = (
                f"{verification['tables']} tables, {verification['rows']} rows, "
                f"{verification['migrations']} migrations equal"
            )
        with self.step("start app") as s:
            s.detail = self.state["app"] = self.start_app()
        self.report.data["after"] = {"write_counters": dblib.write_counters(self.admin)}

    def start_app(self) -> str:
        env = self.env
        live: list[Remote] = [
            r for r in self.session.serving_remotes() if self.previous.get(r.label)
        ]
        if not live:
            return "not started (there was no release before that deploy)"
        command = env.app.maintenance_off or env.app.restart
        for remote in live:
            if command:
                rel.run_hook(remote, self.layout, command, "starting the app")
            if env.app.health:
                rel.health_check(env, remote, self.layout)
        return f"serving on {len(live)} host(s)"

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

    def mark_target(self) -> None:
        """Record on the undone deploy who rolled it back (so it is not undone twice)."""
        assert self.journal is not None
        self.target["rolled_back_by"] = self.id
        with contextlib.suppress(SeedError, OSError):
            self.journal.write(self.target["deploy_id"], self.target)
