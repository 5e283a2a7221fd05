"""The plan of one deploy, computed once and read-only (Django's
`executor.migration_plan()`; alembic's `command.upgrade` over `script/`).

`plan_deploy` asks Django's own loader, with the target release's code, what would
be applied to the database (seed.deploy.migrate.migration_state), classifies every
operation and decides how a rollback would undo the deploy (seed.undo.reverse). `plan`,
`upgradedb`, `lint` and `rehearse` all consume this one object; none of them
computes its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from seed.checks.spec import Check
from seed.config.environment import Environment, Waiver
from seed.deploy.migrate import MigrationState, migration_state
from seed.deploy.online import Qualification, qualify
from seed.deploy.release import Layout
from seed.errors import PreflightFailed
from seed.journal.record import Migrations
from seed.remote.ssh import Remote
from seed.undo.reverse import ReversePlan, assess, choose, classify

# deploy modes, least safe first
CODE_ONLY = "code-only"  # no migration: no maintenance, hosts switched in batches, db untouched
ONLINE = "online"  # expand-only migrations, applied while the old release serves; undo = reverse
MAINTENANCE = "maintenance"  # writes stopped, verified backup, migrate, checks, switch
MODES = (CODE_ONLY, ONLINE, MAINTENANCE)
NEEDS = {
    CODE_ONLY: "",
    ONLINE: "a verified backup and migrations the running release works with",
    MAINTENANCE: "writes stopped and a verified backup",
}


def choose_mode(
    pending: list[str], configured: str, asked: str | None, not_online: list[str] | None = None
) -> tuple[str, str]:
    """The deploy's mode and why: code-only when nothing is pending, online when every
    pending migration may run while the old release serves (`not_online` empty: nothing
    against it), maintenance otherwise. `deploy.mode` (`configured`) and `--mode` (`asked`)
    may only ask for more safety (PreflightFailed, exit 4, naming the reason when one asks
    for less)."""
    against = list(not_online or []) if not_online is not None else ["not assessed"]
    if not pending:
        chosen, why = CODE_ONLY, "no migration pending"
    elif not against:
        chosen, why = ONLINE, f"{len(pending)} migration(s) pending, all expand-only"
    else:
        more = f" (+{len(against) - 1} more)" if len(against) > 1 else ""
        chosen = MAINTENANCE
        why = f"{len(pending)} migration(s) pending; not online: {against[0]}{more}"
    for source, wanted in (("deploy.mode", configured), ("--mode", asked)):
        if wanted in (None, "", "auto"):
            continue
        if wanted not in MODES:
            raise PreflightFailed(f"{source} {wanted}: not a mode ({', '.join(MODES)} or auto)")
        if MODES.index(wanted) < MODES.index(chosen):
            raise PreflightFailed(
                f"{source} {wanted} refused: {why}, which needs {chosen} mode "
                f"({NEEDS[chosen]}); a mode may only be raised, never lowered"
            )
        if MODES.index(wanted) > MODES.index(chosen):
            chosen, why = wanted, f"{source} {wanted} ({why})"
    return chosen, why


def online_obstacles(
    qualification: Qualification,
    reverse: ReversePlan,
    rollback_method: str,
    checks: Iterable[Check],
) -> list[str]:
    """Everything that keeps a deploy with pending migrations from running online: its
    operations (seed.deploy.online), an undo that could not be a reverse, a required check
    whose verdict would not hold while the app writes."""
    out = list(qualification.reasons)
    if rollback_method == "restore":
        out.append(
            "rollback.method is restore, and an online deploy is undone by reversing its "
            "migrations (a restore would lose what the app wrote meanwhile)"
        )
    elif not reverse.possible:
        out.append(f"its migrations cannot be reversed exactly ({reverse.reason})")
    for check in checks:
        if check.required and not check.holds_online:
            out.append(
                f"check '{check.name}' is required and compares with the before-state, which "
                "the app's writes change while an online deploy runs"
            )
    return out


@dataclass
class DeployPlan:
    """What a deploy would apply, how it runs (its mode) and how a rollback would undo it."""

    state: MigrationState
    reverse: ReversePlan
    rollback_method: str  # reverse | restore
    rollback_why: str
    mode: str = MAINTENANCE
    mode_why: str = ""
    online: Qualification | None = None  # why the deploy may (or may not) run online
    skipped_online: list[str] = field(default_factory=list)  # checks an online deploy skips
    not_online: list[str] = field(default_factory=list)  # what keeps it from running online

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
            "mode": {"mode": self.mode, "why": self.mode_why},
            "online": {
                **(self.online.to_json() if self.online else {}),
                "skipped_checks": self.skipped_online,
                "not_online": self.not_online,
            },
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
    mode: str | None = None,
    waivers: Iterable[Waiver] = (),
    checks: Iterable[Check] = (),
) -> DeployPlan:
    """The deploy's plan, with the code in `release_path` on the migrate host (`with_sql`:
    each migration's SQL too, for the lint; `mode`: --mode; `waivers`: the lint waivers,
    whose `online-safe` ones declare data migrations fit to run online; `checks`: the
    deploy's, whose `required` ones keep it out of online mode when they cannot run there).
    Changes nothing."""
    checks = tuple(checks)
    state = migration_state(remote, layout, release_path, env, app_name, with_sql)
    reverse = assess(state.plan, state.reverse)
    online = qualify(state.plan, list(waivers))
    against = online_obstacles(online, reverse, env.rollback_method, checks)
    chosen, mode_why = choose_mode(state.pending, env.deploy_mode, mode, against)
    method, why = choose(env.rollback_method, reverse)
    if chosen == ONLINE:
        method, why = "reverse", f"an online deploy is undone by reverse ({reverse.reason})"
    skipped = [c.name for c in checks if not c.holds_online]
    return DeployPlan(state, reverse, method, why, chosen, mode_why, online, skipped, against)
