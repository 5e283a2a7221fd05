"""Reverse-migration rollback (DESIGN: Rollback, "Reverse").

A deploy's migrations can be undone by `manage.py migrate <app> <target>` run with
the *new* code, instead of restoring the backup — which is what keeps rows users
wrote since the deploy. Only where that provably gives the old database back:
every planned operation is classified (through Django's MigrationLoader, on the
migrate host, at pre-flight) and the reverse targets are computed in the new graph
(apps the release added go to `zero`; merges and squashes make it unavailable).

`rollback.method`:
- `restore`: always the backup.
- `auto` (default): reverse only deploys that are additive (CreateModel, AddField,
  AddIndex, ...) plus data migrations with a real `reverse_code` (RunPython) —
  anything else (destructive operations, lossy AlterField, RunSQL, a no-op
  reverse, an irreversible operation) is restored.
- `reverse`: also reverses other reversible operations (AlterField, RunSQL with
  reverse SQL); still never destructive, irreversible or no-op-reverse ones.
A failed non-atomic migration always means restore. After a reverse the applied
set must equal the recorded one and the verification pass, else restore.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

METHODS = ("auto", "reverse", "restore")
# rows Django's post_migrate signal adds (content types, permissions) and a reverse
# leaves: not compared
NOT_COMPARED = ("django_content_type", "auth_permission")

ADDITIVE = {
    "CreateModel",
    "AddField",
    "AddIndex",
    "AddIndexConcurrently",  # the reverse drops it (concurrently)
    "AddConstraint",
    "AddConstraintNotValid",
    "ValidateConstraint",  # changes no data; its reverse does nothing, exactly
    "AlterModelOptions",
    "AlterModelManagers",
    "AlterModelTable",
    "AlterModelTableComment",
    "AlterUniqueTogether",
    "AlterIndexTogether",
    "AlterOrderWithRespectTo",
}
DESTRUCTIVE = {
    "DeleteModel",
    "RemoveField",
    "RemoveIndex",
    "RemoveConstraint",
    "AlterField",
    "RenameField",
    "RenameModel",
    "RenameIndex",
}
DATA = {"RunPython", "RunSQL"}


def classify(op: dict[str, Any]) -> str:
    """additive | destructive | data | irreversible | other for one operation of a plan."""
    if not op.get("reversible", True):
        return "irreversible"
    kind = str(op.get("type"))
    if kind in DATA:
        return "data"
    if kind in DESTRUCTIVE:
        return "destructive"
    if kind in ADDITIVE:
        return "additive"
    return "other"


@dataclass
class ReversePlan:
    """Whether (and how) one deploy's migrations can be reversed, decided at pre-flight."""

    possible: bool  # `reverse` may reverse it
    automatic: bool  # `auto` would reverse it
    reason: str  # what makes it so (or not)
    targets: dict[str, str] = field(default_factory=dict)  # app -> migration name or "zero"
    tables: list[str] = field(default_factory=list)  # tables the plan changes (bare names)
    apps_unknown: list[str] = field(default_factory=list)  # apps changed in unknown tables

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ReversePlan | None:
        if not data:
            return None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def assess(plan: list[dict[str, Any]], reverse: dict[str, Any]) -> ReversePlan:
    """Classify every planned operation; the first reason against reversing wins."""
    targets = dict(reverse.get("targets") or {})
    tables: set[str] = set()
    unknown: set[str] = set()
    blocker = ""  # makes any reverse impossible
    manual = ""  # only `reverse` (not `auto`) would reverse it
    for m in plan:
        where = f"{m['app']}.{m['name']}"
        for op in m["operations"]:
            kind, cls = op["type"], classify(op)
            found = op.get("tables")
            if found:
                tables.update(found)
            else:
                unknown.add(m["app"])
            if blocker:
                continue
            if cls == "irreversible":
                blocker = f"{kind} in {where} is irreversible"
            elif cls == "destructive" and kind != "AlterField":
                blocker = f"{kind} in {where} destroys data"
            elif op.get("reverse_noop"):
                blocker = f"{kind} in {where} has a no-op reverse (its data changes would stay)"
            elif not manual and kind == "AlterField":
                manual = f"AlterField in {where} may be lossy"
            elif not manual and kind == "RunSQL":
                manual = f"RunSQL in {where} cannot be reviewed for reversibility"
            elif not manual and cls == "other":
                manual = f"{kind} in {where} is not known to be additive"
    problem = reverse.get("problem")
    if problem and not blocker:
        blocker = f"reverse targets: {problem}"
    if not plan:
        blocker = "no migration was applied"
    if blocker:
        return ReversePlan(False, False, blocker, targets, sorted(tables), sorted(unknown))
    if manual:
        return ReversePlan(True, False, manual, targets, sorted(tables), sorted(unknown))
    reason = "additive, with reversible data migrations"
    return ReversePlan(True, True, reason, targets, sorted(tables), sorted(unknown))


def choose(method: str, rp: ReversePlan | None, failed_non_atomic: str = "") -> tuple[str, str]:
    """("reverse" | "restore", why) for `rollback.method` and the deploy's plan."""
    if method == "restore":
        return "restore", "rollback.method is restore"
    if rp is None:
        return "restore", "the deploy recorded no reverse plan"
    if failed_non_atomic:
        return "restore", f"non-atomic migration {failed_non_atomic} failed half way"
    if not rp.possible:
        return "restore", rp.reason
    if method == "auto" and not rp.automatic:
        return "restore", f"{rp.reason} (rollback.method auto reverses additive deploys only)"
    return "reverse", rp.reason


def touched(rp: ReversePlan, qualified: list[str]) -> set[str]:
    """Of the database's tables (`schema.table`), those the deploy's migrations changed:
    named by an operation, or belonging to an app one of whose RunPython/RunSQL could
    have changed anything of it."""
    out = set()
    for name in qualified:
        bare = name.split(".", 1)[-1]
        if bare in rp.tables or any(bare.startswith(f"{app}_") for app in rp.apps_unknown):
            out.add(name)
    return out


def compared(qualified: list[str]) -> list[str]:
    return [t for t in qualified if t.split(".", 1)[-1] not in NOT_COMPARED]
