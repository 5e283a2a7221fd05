"""`fab <env> rehearse`: the pending migrations timed on a restored copy (seed.rehearse.rehearsal),
extrapolated to production's size and held to the budgets; nothing of the environment's
own database or code is touched."""

from __future__ import annotations

from seed.backup import restore as restorelib
from seed.deploy.target import Target, fetch_target
from seed.errors import ChecksFailed
from seed.rehearse.rehearsal import failed_checks, rehearse
from seed.run.context import RunContext
from seed.run.operation import Operation


class Rehearse(Operation):
    """A rehearsal; the environment's own database and code are never touched."""

    kind = "rehearse"
    read_only = True

    def __init__(
        self,
        ctx: RunContext,
        *,
        ref: str | None = None,
        scale_from: str | None = None,
        backup_id: str = "latest",
    ) -> None:
        super().__init__(ctx)
        env = ctx.env
        self.ref = ref
        self.scale_from = scale_from if scale_from is not None else env.rehearse.scale_from
        self.backup_id = backup_id
        self.scratch = restorelib.scratch_name(
            env.db.name, f"rehearse_{restorelib.db_tag(self.id)}"
        )
        self.target: Target | None = None

    def prepare(self) -> None:
        self.target = fetch_target(self.env, self.ref, self.local_root)
        self.report.ref = self.target.ref
        self.report.sha = self.target.sha

    def body(self) -> str:
        result = rehearse(self, self.session, self.target, self.scale_from, self.backup_id)
        over = result["over_budget"]
        if over:
            raise ChecksFailed(
                f"rehearsal of {result['ref']} is over budget: {'; '.join(over)}; nothing was "
                "changed"
            )
        self.report.checks.extend(result.get("checks", []))
        failed = failed_checks(result)
        if failed:
            raise ChecksFailed(
                f"post checks failed on the rehearsal: {', '.join(failed)}; nothing was changed"
            )
        return str(result["summary"])
