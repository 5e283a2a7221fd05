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
from typing import Any

from seed.checks import check as checklib
from seed.checks import invariants
from seed.checks.run import REPO_CHECKS, CheckRun, repo_checks
from seed.deploy import release as rel
from seed.errors import ChecksFailed
from seed.journal.record import RunRecord
from seed.journal.store import Journal
from seed.run.operation import Operation


def last_after_state(records: list[RunRecord]) -> tuple[str | None, dict[str, Any]]:
    """(deploy id, check values) of the newest successful deploy that recorded them and
    still describes the database: deploys undone by a later rollback are skipped, and
    a later `restore` or `copy` (the database replaced) leaves no baseline."""
    undone: set[str] = set()
    for record in reversed(records):
        kind, ok = record.kind, record.outcome == "succeeded"
        if kind in ("restore", "copy") and ok:  # the database was replaced
            return None, {}
        if kind == "rollback" and ok and record.target:
            undone.add(record.target)
        checks = record.after_checks
        if ok and checks is not None and record.deploy_id not in undone:
            return record.deploy_id, checks
    return None, {}


class Validate(Operation):
    """Read-only: no lock, nothing written on servers (Operation's journal stays None),
    the report only on the control machine."""

    kind = "validate"
    read_only = True

    def success_message(self) -> str:
        checks = self.report.checks
        errors = sum(1 for c in checks if c.get("outcome") == "error")
        skipped = sum(1 for c in checks if c["skipped"]) - errors
        tail = f" ({skipped} skipped: no baseline)" if skipped else ""
        tail += f" ({errors} could not run: see above)" if errors else ""
        return f"{len(checks) - skipped - errors} check(s) passed on {self.env.name}{tail}"

    def body(self) -> str:
        env, session = self.env, self.session
        with self.out.step(self.report, "baseline") as s:
            journal = Journal(env, session.state, self.local_root, self.out.scrub)
            deploy_id, values = last_after_state(journal.records())
            self.report.baseline = {"deploy_id": deploy_id, "checks": len(values)}
            s.detail = (
                f"after-state of {deploy_id} ({len(values)} value(s))"
                if deploy_id
                else "no deploy recorded an after-state: before-type checks are skipped"
            )
        with self.out.step(self.report, "checks") as s:
            migrator = session.migrator
            current = rel.current_release(migrator, self.at(migrator))
            self.report.release = current
            release_path = self.at(migrator).release(current) if current else None
            checks = env.checks
            if release_path:
                path = posixpath.join(release_path, REPO_CHECKS)
                text = migrator.get_bytes(path) if migrator.exists(path) else None
                checks += repo_checks(text, f"{path} on {migrator.label}", env.checks)
            run = CheckRun(
                checks, env.db.statement_timeout, baselines=dict(values), digester=self.digester
            )
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
                        self.at(migrator).env_file,
                        env.invariants,
                        self.app_name,
                    )
                )
            for result in run.results:
                self.report.checks.append(result.to_json())
                mark = checklib.MARKS[result.outcome]
                self.out.detail(mark + result.describe())
            failed = len(run.failed)
            s.detail = f"{len(run.results)} check(s), {failed} failed"
            if not release_path:
                s.detail += "; no release deployed (Django checks not run)"
            if failed:
                s.outcome = "failed"
        failed_checks = [c for c in self.report.checks if not c["passed"]]
        if failed_checks:
            raise ChecksFailed(
                f"{len(failed_checks)} of {len(self.report.checks)} check(s) failed: "
                + ", ".join(c["name"] for c in failed_checks)
                + "; nothing was changed"
            )
        return self.success_message()
