"""Print the release's migration state as JSON (run with the release's venv and settings).

Uses Django's own MigrationLoader/MigrationExecutor: which migrations exist, which are
applied in the database, the forward plan to the release's leaf nodes, and what each
planned migration does (operation types, reversibility, the tables it touches), and
how to reverse the plan in this (the new) graph: per app, the migration to go back to
(`zero` for apps the release adds), or why that is not possible.
Standard library + Django only: it runs inside the app's virtualenv.
"""

import json
import sys
from typing import Any

import django


def main() -> int:
    django.setup()
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    loader = executor.loader
    conflicts = loader.detect_conflicts()
    known = set(loader.disk_migrations)
    applied = sorted(loader.applied_migrations)
    unknown_applied = [list(k) for k in applied if k not in known]
    targets = loader.graph.leaf_nodes()
    plan = []
    owners = Owners()
    if not conflicts:
        for migration, backwards in executor.migration_plan(targets):
            ops = []
            for op in migration.operations:
                ops.append(
                    {
                        "type": type(op).__name__,
                        "describe": op.describe(),
                        "reversible": bool(getattr(op, "reversible", True)),
                        "reverse_noop": reverse_is_noop(op),
                        "tables": tables_of(loader, migration, op),
                        **online_facts(op),
                    }
                )
            entry = {
                "app": migration.app_label,
                "name": migration.name,
                "backwards": backwards,
                "atomic": bool(getattr(migration, "atomic", True)),
                "replaces": [list(r) for r in (migration.replaces or [])],
                "operations": ops,
                "distribution": owners.of(migration),
            }
            if "--sql" in sys.argv:
                entry.update(source_of(migration))
                entry["sql"] = sql_of(loader, migration)
            plan.append(entry)
    json.dump(
        {
            "applied": [list(k) for k in applied],
            "unknown_applied": unknown_applied,
            "leaf_nodes": sorted(list(k) for k in targets),
            "conflicts": {app: sorted(names) for app, names in conflicts.items()},
            "plan": plan,
            "reverse": reverse_targets(loader, plan),
            "database": connection.settings_dict.get("NAME"),
        },
        sys.stdout,
    )
    return 0


def sql_of(loader: Any, migration: Any) -> str | None:
    """What `manage.py sqlmigrate` prints for the migration (without BEGIN/COMMIT), or
    None when Django cannot write it (with the reason as a comment)."""
    try:
        return "\n".join(loader.collect_sql([(migration, False)]))
    except Exception as exc:  # e.g. an operation that needs the database's data
        return f"-- seed: sqlmigrate failed: {type(exc).__name__}: {exc}"


def source_of(migration: Any) -> dict[str, Any]:
    """The migration's file (relative to the release) and the line of each operation."""
    import inspect
    import os
    import re

    try:
        path = inspect.getsourcefile(type(migration)) or ""
        with open(path, encoding="utf-8") as source:
            lines = source.read().splitlines()
    except (OSError, TypeError):
        return {"file": None, "op_lines": [None] * len(migration.operations)}
    found: list[int | None] = []
    start = 0
    for op in migration.operations:
        pattern = re.compile(r"\b" + re.escape(type(op).__name__) + r"\s*\(")
        line = next((i for i in range(start, len(lines)) if pattern.search(lines[i])), None)
        found.append(None if line is None else line + 1)
        if line is not None:
            start = line + 1
    return {"file": os.path.relpath(path), "op_lines": found}


def online_facts(op: Any) -> dict[str, Any]:
    """What decides whether the operation may run while the old release serves
    (seed.deploy.online): an added field's column, nullability, default, index and key
    constraint; the index or constraint an operation adds; a SeparateDatabaseAndState's
    database operations. Defensive: an attribute an older Django lacks reads as absent."""
    kind = type(op).__name__
    out: dict[str, Any] = {}
    try:
        if kind == "AddField":
            field = op.field.clone()
            field.set_attributes_from_name(op.name)  # its column (a key: <name>_id)
            out["field"] = field_facts(field)
        elif kind in ("AddIndex", "AddIndexConcurrently", "RemoveIndexConcurrently"):
            index = getattr(op, "index", None)
            out["index"] = getattr(index, "name", None) or getattr(op, "name", None)
        elif kind in ("AddConstraint", "AddConstraintNotValid"):
            out["constraint"] = getattr(getattr(op, "constraint", None), "name", None)
        elif kind == "ValidateConstraint":
            out["constraint"] = getattr(op, "name", None)
        elif kind == "SeparateDatabaseAndState":
            out["database_operations"] = len(getattr(op, "database_operations", []) or [])
    except Exception as exc:  # facts unknown: the operation does not qualify
        out["facts_error"] = f"{type(exc).__name__}: {exc}"
    return out


def field_facts(field: Any) -> dict[str, Any]:
    from django.db.models import NOT_PROVIDED, Value

    db_default = getattr(field, "db_default", NOT_PROVIDED)
    if db_default is NOT_PROVIDED:
        kind = "none"
    elif isinstance(db_default, Value) or not hasattr(db_default, "resolve_expression"):
        kind = "constant"
    else:
        kind = "expression"
    relation = bool(getattr(field, "is_relation", False))
    many_to_many = bool(getattr(field, "many_to_many", False))
    return {
        "column": getattr(field, "column", None) or getattr(field, "name", None),
        "null": bool(getattr(field, "null", False)),
        "db_default": kind,
        "db_default_sql": None if kind == "none" else repr(db_default),
        "index": bool(
            getattr(field, "db_index", False)
            or getattr(field, "unique", False)
            or getattr(field, "primary_key", False)
        )
        and not many_to_many,
        "unique": bool(getattr(field, "unique", False)),
        "fk_constraint": relation
        and not many_to_many
        and bool(getattr(field, "db_constraint", False)),
        "many_to_many": many_to_many,
        "has_python_default": getattr(field, "default", NOT_PROVIDED) is not NOT_PROVIDED,
    }


def reverse_is_noop(op: Any) -> bool:
    """RunPython/RunSQL whose reverse does nothing: the data it changed stays changed."""
    from django.db import migrations

    if isinstance(op, migrations.RunPython):
        return op.reverse_code is migrations.RunPython.noop
    if isinstance(op, migrations.RunSQL):
        return bool(op.reverse_sql == migrations.RunSQL.noop)
    return False


class Owners:
    """The installed distribution (name and version) whose files hold a migration: a
    third-party app's, which the project cannot edit. Found through importlib.metadata,
    not by path (the virtualenv sits inside the release); an app of the project itself,
    even installed in editable mode, is owned by none (its files are not the dist's)."""

    def __init__(self) -> None:
        from importlib import metadata

        self.by_top = metadata.packages_distributions()
        self.files: dict[str, set[str]] = {}
        self.metadata = metadata

    def of(self, migration: Any) -> str | None:
        import inspect
        import os

        try:
            path = os.path.realpath(inspect.getsourcefile(type(migration)) or "")
        except TypeError:
            return None
        top = type(migration).__module__.split(".")[0]
        for name in self.by_top.get(top, []):
            if name not in self.files:
                try:
                    dist = self.metadata.distribution(name)
                    found = {os.path.realpath(str(dist.locate_file(f))) for f in dist.files or []}
                except Exception:  # a broken installation: it owns nothing we can tell
                    found = set()
                self.files[name] = found
            if path in self.files[name]:
                return f"{name} {self.metadata.version(name)}"
        return None


def tables_of(loader: Any, migration: Any, op: Any) -> list[str] | None:
    """The tables an operation changes, or None when it cannot be known (RunPython, RunSQL).
    SeparateDatabaseAndState: the tables of its operations (state and database)."""
    if type(op).__name__ == "SeparateDatabaseAndState":
        carried: set[str] = set()
        for inner in [*op.state_operations, *op.database_operations]:
            carried.update(tables_of(loader, migration, inner) or [])
        return sorted(carried) or None
    model = getattr(op, "model_name", None) or getattr(op, "name", None)
    if type(op).__name__ in ("RunPython", "RunSQL") or not model:
        return None
    key = (migration.app_label, str(model).lower())
    tables = set()
    for at_end in (False, True):
        try:
            state = loader.project_state((migration.app_label, migration.name), at_end=at_end)
        except Exception:  # a state that cannot be built: the tables are unknown
            return None
        found = state.models.get(key)
        if found is not None:
            tables.add(found.options.get("db_table") or f"{key[0]}_{key[1]}")
    return sorted(tables) or None


def reverse_targets(loader: Any, plan: list[dict[str, Any]]) -> dict[str, Any]:
    """Per app of the plan, the newest migration applied before it (in this graph), or
    `zero`; with the reason when a reverse cannot be planned (merge, squash)."""
    applied = set(loader.applied_migrations)
    targets: dict[str, str] = {}
    problems: list[str] = []
    for app in sorted({m["app"] for m in plan}):
        nodes = [k for k in applied if k[0] == app and k in loader.graph.node_map]
        leaves = [
            k
            for k in nodes
            if not any(
                c.key in applied and c.key[0] == app for c in loader.graph.node_map[k].children
            )
        ]
        if not nodes:
            targets[app] = "zero"
        elif len(leaves) == 1:
            targets[app] = leaves[0][1]
        else:
            problems.append(f"{app}: applied migrations end in {len(leaves)} leaves")
    if any(m["replaces"] for m in plan):
        problems.append("the plan applies a squashed migration")
    return {"targets": targets, "problem": "; ".join(problems) or None}


if __name__ == "__main__":
    sys.exit(main())
