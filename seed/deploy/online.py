"""Which pending migrations may run while the old release serves (the online mode).

A deploy runs online when every pending operation is *expand-only* — the release
running now keeps working on the schema it leaves — and *exactly reversible*, so that
the deploy is undone by a reverse, never by a restore (the backup predates the migrate
while the app kept writing). Decided from the facts Django's own loader gives on the
migrate host (seed/remote/scripts/django_state.py), operation by operation; the first
problem of each operation becomes one line of `reasons`, naming the migration, where
it is written, and what to write instead.

What qualifies:
- `CreateModel` (a table nobody uses yet), and anything on a table the same plan
  creates (empty and unused: its indexes and constraints cost nothing);
- `AddField` of a nullable column, or one with a constant `db_default`, without an
  index and without a foreign-key constraint; a many-to-many field (a new join table);
- `AddIndexConcurrently`; `AddConstraintNotValid`, then `ValidateConstraint` (it scans
  under SHARE UPDATE EXCLUSIVE, which does not block writes);
- state-only operations (`AlterModelOptions`, `AlterModelManagers`, comments,
  `SeparateDatabaseAndState` without database operations);
- `RunPython`/`RunSQL` with a real reverse, declared `online-safe` with a reason in the
  waivers (`lint.waivers`, `deploy/lint.yml`): Seed cannot read what they do.

Traps named on the way: a NOT NULL column without `db_default` (the running release's
inserts would fail: Django drops the default it filled the column with), a `db_default`
expression (a volatile one rewrites the table under ACCESS EXCLUSIVE; volatility cannot
be told from here, so every expression is refused), `AddField(ForeignKey)` (its index is
built without CONCURRENTLY and the key validated under lock), a non-atomic migration
with anything but concurrent index builds (a failure half way is not safe to retry).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from seed.config.environment import Waiver

ONLINE_SAFE = "online-safe"  # the waiver rule that declares a data migration fit to run online

STATE_ONLY = ("AlterModelOptions", "AlterModelManagers", "AlterModelTableComment")
ALWAYS = ("AddIndexConcurrently", "AddConstraintNotValid", "ValidateConstraint", *STATE_ONLY)
DATA = ("RunPython", "RunSQL")
# in a non-atomic migration: safe to retry once an INVALID index it left is dropped
RETRYABLE = ("AddIndexConcurrently",)


@dataclass
class Qualification:
    """Whether a plan may run online, and what it adds (for its undo)."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    declared: dict[str, str] = field(default_factory=dict)  # migration -> its reason
    new_tables: list[str] = field(default_factory=list)
    new_columns: list[tuple[str, str]] = field(default_factory=list)  # (table, column)
    concurrent_indexes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reasons": list(self.reasons),
            "declared": dict(self.declared),
            "new_tables": list(self.new_tables),
            "new_columns": [list(c) for c in self.new_columns],
            "concurrent_indexes": list(self.concurrent_indexes),
        }


def declarations(waivers: Iterable[Waiver]) -> dict[str, str]:
    """migration -> reason of every `online-safe` waiver (never a `*` one: safety is named)."""
    return {w.migration: w.reason for w in waivers if w.rule == ONLINE_SAFE}


def _where(m: dict[str, Any], index: int) -> str:
    name = f"{m['app']}.{m['name']}"
    lines = m.get("op_lines") or []
    if m.get("file") and index < len(lines) and lines[index]:
        return f"{name} ({m['file']}:{lines[index]})"
    return name


def qualify(plan: list[dict[str, Any]], waivers: Iterable[Waiver]) -> Qualification:
    """The verdict for `plan` (MigrationState.plan), with the waivers' online-safe
    declarations. Pure: reads only its arguments."""
    declared_all = declarations(waivers)
    result = Qualification(ok=False)
    if not plan:
        result.reasons.append("no migration pending (a code-only deploy)")
        return result
    created: set[str] = set()
    for m in plan:
        name = f"{m['app']}.{m['name']}"
        atomic = bool(m.get("atomic", True))
        for i, op in enumerate(m.get("operations") or []):
            kind = str(op.get("type"))
            tables = [str(t) for t in op.get("tables") or []]
            why = _obstacle(op, kind, tables, created, declared_all.get(name))
            if not why and not atomic and kind not in RETRYABLE:
                why = (
                    "in a non-atomic migration, which is not safe to retry after a failure "
                    "half way; keep only AddIndexConcurrently in non-atomic migrations"
                )
            if why:
                result.reasons.append(f"{_where(m, i)}: {kind} {op.get('describe', '')}: {why}")
                continue
            if kind == "CreateModel":
                created.update(tables)
                result.new_tables += [t for t in tables if t not in result.new_tables]
            elif kind == "AddField":
                facts = op.get("field") or {}
                if facts.get("many_to_many"):
                    continue  # its join table: Django names it; the reverse drops it
                if tables and tables[0] not in created and facts.get("column"):
                    result.new_columns.append((tables[0], str(facts["column"])))
            elif kind == "AddIndexConcurrently" and op.get("index"):
                result.concurrent_indexes.append(str(op["index"]))
            if kind in DATA:
                result.declared[name] = declared_all[name]
    result.ok = not result.reasons
    return result


def _obstacle(
    op: dict[str, Any], kind: str, tables: list[str], created: set[str], declared: str | None
) -> str:
    """Why this one operation may not run while the old release serves ('' if it may)."""
    if op.get("facts_error"):
        return f"Seed could not read what it does ({op['facts_error']})"
    on_new_table = bool(tables) and all(t in created for t in tables)
    if kind == "CreateModel" or kind in ALWAYS:
        return ""
    if kind in DATA:
        if not declared:
            return (
                "Seed cannot tell what a data migration does while the old release serves; "
                f"declare it in deploy/lint.yml (rule: {ONLINE_SAFE}, with a reason) if it is "
                "safe, or it deploys in maintenance mode"
            )
        if not op.get("reversible", True) or op.get("reverse_noop"):
            return (
                "declared online-safe but has no real reverse (an online deploy is undone by one)"
            )
        return ""
    if kind == "SeparateDatabaseAndState":
        if not op.get("database_operations"):
            return ""
        return "its database operations are not reviewed by Seed; it deploys in maintenance mode"
    if on_new_table:
        return ""  # a table this deploy creates: empty, unused by the running release
    if kind == "AddField":
        return _field_obstacle(op.get("field"))
    if kind == "AddIndex":
        return (
            "builds the index without CONCURRENTLY (writes to the table blocked while it "
            "builds); use AddIndexConcurrently in a migration with atomic = False"
        )
    if kind == "AddConstraint":
        return (
            "validates every row under ACCESS EXCLUSIVE (reads and writes blocked); use "
            "AddConstraintNotValid, then ValidateConstraint in a later migration (a unique "
            "constraint: build its unique index concurrently first)"
        )
    return (
        "is not expand-only: the running release depends on what it changes or removes "
        "(deploy it in maintenance mode, or split it into expand and contract releases)"
    )


def _field_obstacle(facts: dict[str, Any] | None) -> str:
    if not facts:
        return "Seed could not read the field's definition"
    if facts.get("many_to_many"):
        return ""
    if facts.get("db_default") == "expression":
        return (
            "its db_default is an expression (a volatile one rewrites the table under an "
            "ACCESS EXCLUSIVE lock); use a constant db_default, or a nullable column filled "
            "later"
        )
    if not facts.get("null") and facts.get("db_default") != "constant":
        return (
            "NOT NULL without db_default: the running release's inserts would fail; make it "
            "null=True or give it a constant db_default"
        )
    if facts.get("fk_constraint"):
        return (
            "a foreign key is validated under lock and its index built without CONCURRENTLY; "
            "add it with db_constraint=False and db_index=False, then AddIndexConcurrently "
            "and AddConstraintNotValid + ValidateConstraint"
        )
    if facts.get("index"):
        return (
            "its index (db_index, unique) is built without CONCURRENTLY (writes blocked while "
            "it builds); add the field with db_index=False, then AddIndexConcurrently"
        )
    return ""
