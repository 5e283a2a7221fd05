"""The plan of one deploy, computed once and read-only (Django's
`executor.migration_plan()`; alembic's `command.upgrade` over `script/`).

`plan_deploy` asks Django's own loader, with the target release's code, what would
be applied to the database (seed.migrate.migration_state), classifies every
operation and decides how a rollback would undo the deploy (seed.reverse). `plan`,
`upgradedb`, `lint` and `rehearse` all consume this one object; none of them
computes its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seed.config import Environment
from seed.errors import PreflightFailed
from seed.migrate import MigrationState, migration_state
from seed.release import Layout
from seed.remote import Remote
from seed.reverse import ReversePlan, assess, choose, classify
from seed.runrecord import Migrations


@dataclass
class DeployPlan:
    """What a deploy would apply and how a rollback would undo it."""

    state: MigrationState
    reverse: ReversePlan
    rollback_method: str  # reverse | restore
    rollback_why: str

    @property
    def pending(self) -> list[str]:
        """`app.name` of each migration to apply, in order."""
        return self.state.pending

    @property
    def migrations(self) -> list[dict[str, Any]]:
        """Per migration to apply: app, name, atomic, operations (and sql with lint on)."""
        return self.state.plan

    @property
    def unknown_applied(self) -> list[str]:
        return [f"{a}.{n}" for a, n in self.state.unknown_applied]

    def refuse_unknown(self) -> None:
        """Applied migrations the target does not know: deploying older code needs a
        rollback first (PreflightFailed, exit 4)."""
        if self.unknown_applied:
            raise PreflightFailed(
                f"the database has migrations this release does not know "
                f"({', '.join(self.unknown_applied)}); deploying older code needs a rollback "
                "first"
            )

    def to_record(self) -> Migrations:
        """The report's `migrations` before anything is applied."""
        return Migrations(
            applied_before=[f"{a}.{n}" for a, n in self.state.applied],
            planned=list(self.pending),
            plan=list(self.migrations),
        )

    def to_json(self) -> dict[str, Any]:
        """`plan`'s `migrations`: per app, per migration with each operation classified
        (additive / destructive / data / irreversible / other), and the rollback."""
        steps: list[dict[str, Any]] = []
        classes: set[str] = set()
        per_app: dict[str, list[str]] = {}
        for m in self.migrations:
            ops = [{**op, "class": classify(op)} for op in m["operations"]]
            classes |= {op["class"] for op in ops}
            steps.append({"migration": f"{m['app']}.{m['name']}", "operations": ops})
            per_app.setdefault(m["app"], []).append(m["name"])
        return {
            "to_apply": self.pending,
            "per_app": per_app,
            "steps": steps,
            "classes": sorted(classes),
            "rollback": {
                "method": self.rollback_method,
                "why": self.rollback_why,
                "reverse_targets": self.reverse.targets,
            },
            "unknown_applied": self.unknown_applied,
        }


def plan_deploy(
    remote: Remote,
    layout: Layout,
    release_path: str,
    env: Environment,
    app_name: str,
    with_sql: bool = False,
) -> DeployPlan:
    """The deploy's plan, with the code in `release_path` on the migrate host (`with_sql`:
    each migration's SQL too, for the lint). Changes nothing."""
    state = migration_state(remote, layout, release_path, env, app_name, with_sql)
    reverse = assess(state.plan, state.reverse)
    method, why = choose(env.rollback_method, reverse)
    return DeployPlan(state, reverse, method, why)
