"""Print the release's migration state as JSON (run with the release's venv and settings).

Uses Django's own MigrationLoader/MigrationExecutor: which migrations exist, which are
applied in the database, the forward plan to the release's leaf nodes, and what each
planned migration does (operation types, reversibility) for the report.
Standard library + Django only: it runs inside the app's virtualenv.
"""

import json
import sys

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
    if not conflicts:
        for migration, backwards in executor.migration_plan(targets):
            ops = []
            for op in migration.operations:
                ops.append(
                    {
                        "type": type(op).__name__,
                        "describe": op.describe(),
                        "reversible": bool(getattr(op, "reversible", True)),
                    }
                )
            plan.append(
                {
                    "app": migration.app_label,
                    "name": migration.name,
                    "backwards": backwards,
                    "atomic": bool(getattr(migration, "atomic", True)),
                    "operations": ops,
                }
            )
    json.dump(
        {
            "applied": [list(k) for k in applied],
            "unknown_applied": unknown_applied,
            "leaf_nodes": sorted(list(k) for k in targets),
            "conflicts": {app: sorted(names) for app, names in conflicts.items()},
            "plan": plan,
            "database": connection.settings_dict.get("NAME"),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
