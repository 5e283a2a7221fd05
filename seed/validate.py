"""`fab <env> validate`: every check now, read-only, without the lock.

"Before" for checks that compare with a before-state is the after-state the last
successful deploy recorded in the journal (its post-check values); a check with no
such value is reported "skipped: no baseline". Checks come from the environment
file and from `deploy/checks.yml` of the release `current` points to on the
migrate host. Nothing is written on any server: the report goes to
`.seed/<env>/reports/` (and `--report PATH`). Exit 7 when a check fails.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from seed import invariants
from seed import release as rel
from seed.checkrun import REPO_CHECKS, CheckRun, repo_checks
from seed.config import Environment
from seed.errors import ChecksFailed, SeedError
from seed.journal import Journal
from seed.operation import new_deploy_id
from seed.report import Output, Report, iso, write_json
from seed.session import Session


def last_after_state(records: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    """(deploy id, check values) of the newest successful deploy that recorded them and
    still describes the database: deploys undone by a later rollback are skipped, and
    a later `restore` (the database replaced by a backup) leaves no baseline."""
    undone: set[str] = set()
    for record in reversed(records):
        kind, ok = record.get("kind"), record.get("outcome") == "succeeded"
        if kind == "restore" and ok:
            return None, {}
        if kind == "rollback" and ok and record.get("target"):
            undone.add(str(record["target"]))
        checks = (record.get("after") or {}).get("checks")
        if ok and isinstance(checks, dict) and record.get("deploy_id") not in undone:
            return record.get("deploy_id"), checks
    return None, {}


class Validate:
    kind = "validate"

    def __init__(
        self,
        env: Environment,
        command: str,
        local_root: Path,
        out: Output,
        report_path: Path | None = None,
    ) -> None:
        self.env = env
        self.local_root = local_root
        self.out = out
        self.report_path = report_path
        self.id = new_deploy_id()
        self.app_name = f"seed-{env.name}-{self.id}"
        self.report = Report(env.name, command, self.id)
        self.report.data["kind"] = self.kind
        self.layout = rel.Layout(env.app.deploy_to)
        self.session = Session(env)

    def run(self) -> Report:
        env = self.env
        self.out.line(f"seed validate {env.name} ({env.description}): read-only")
        try:
            self.body()
            failed = [c for c in self.report.checks if not c["passed"]]
            if failed:
                raise ChecksFailed(
                    f"{len(failed)} of {len(self.report.checks)} check(s) failed: "
                    + ", ".join(c["name"] for c in failed)
                    + "; nothing was changed"
                )
            self.finish("succeeded", 0, self.success_message())
            return self.report
        except SeedError as exc:
            if self.report.outcome == "running":
                self.finish("failed", exc.code, str(exc))
            raise
        except BaseException as exc:
            if self.report.outcome == "running":
                self.finish("failed", 1, f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.session.close()
            self.out.summary(self.report)

    def success_message(self) -> str:
        checks = self.report.checks
        skipped = sum(1 for c in checks if c["skipped"])
        tail = f" ({skipped} skipped: no baseline)" if skipped else ""
        return f"{len(checks) - skipped} check(s) passed on {self.env.name}{tail}"

    def finish(self, outcome: str, code: int, message: str) -> None:
        self.report.outcome = outcome
        self.report.exit_code = code
        self.report.message = self.out.scrub(message)
        self.report.finished_at = iso()
        local = self.local_root / self.env.name / "reports" / f"{self.id}.json"
        write_json(local, self.report.to_json(), self.out.scrub)
        if self.report_path:
            write_json(self.report_path, self.report.to_json(), self.out.scrub)

    def body(self) -> None:
        env, session = self.env, self.session
        with self.out.step(self.report, "connect") as s:
            session.open()
            s.detail = ", ".join(r.label for r in session.remotes.values())
            s.detail += session.accepted_keys_note(self.report)
        with self.out.step(self.report, "baseline") as s:
            journal = Journal(env, session.state, self.local_root, self.out.scrub)
            deploy_id, values = last_after_state(journal.records())
            self.report.data["baseline"] = {"deploy_id": deploy_id, "checks": len(values)}
            s.detail = (
                f"after-state of {deploy_id} ({len(values)} value(s))"
                if deploy_id
                else "no deploy recorded an after-state: before-type checks are skipped"
            )
        with self.out.step(self.report, "checks") as s:
            migrator = session.migrator
            current = rel.current_release(migrator, self.layout)
            self.report.data["release"] = current
            release_path = self.layout.release(current) if current else None
            checks = env.checks
            if release_path:
                path = posixpath.join(release_path, REPO_CHECKS)
                text = migrator.get_bytes(path) if migrator.exists(path) else None
                checks += repo_checks(text, f"{path} on {migrator.label}", env.checks)
            run = CheckRun(checks, env.db.statement_timeout, baselines=dict(values))
            app = session.connect(admin=False, app_name=self.app_name)
            try:
                run.after_state(app, when=("pre", "post"))
                run.add(invariants.database_invariants(app, env.invariants, run.statement_timeout))
            finally:
                app.close()
            if release_path:
                run.add(
                    invariants.django_invariants(
                        env,
                        migrator,
                        release_path,
                        self.layout.env_file,
                        env.invariants,
                        self.app_name,
                    )
                )
            for result in run.results:
                self.report.checks.append(result.to_json())
                mark = "skip " if result.skipped else "ok   " if result.passed else "FAIL "
                self.out.detail(mark + result.describe())
            failed = len(run.failed)
            s.detail = f"{len(run.results)} check(s), {failed} failed"
            if not release_path:
                s.detail += "; no release deployed (Django checks not run)"
            if failed:
                s.outcome = "failed"
