"""What `manage.py check --deploy` and `manage.py migrate --check` test; print JSON.

Argument: JSON {"check": null | {"fail_level": "ERROR", "silence": ["security.W004"]},
"migrate_check": true}. Silenced ids are added to SILENCED_SYSTEM_CHECKS for this
run only. Standard library + Django only: it runs inside the app's virtualenv.
The same calls those commands make (checks.run_checks with the deployment checks;
the executor's forward plan), read-only, with a result per message instead of an
exit status.
"""

import json
import sys
from typing import Any

import django


def run_check(options: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings
    from django.core import checks

    settings.SILENCED_SYSTEM_CHECKS = [
        *getattr(settings, "SILENCED_SYSTEM_CHECKS", []),
        *options["silence"],
    ]
    level = getattr(checks, options["fail_level"])
    messages = checks.run_checks(include_deployment_checks=True)
    shown = [m for m in messages if not m.is_silenced()]
    failing = [m for m in shown if m.level >= level]
    # the ids: `manage.py check --deploy` on the host prints the full messages
    summary = ", ".join(str(m.id) for m in failing)
    return {
        "passed": not failing,
        "summary": summary,
        "below_fail_level": [m.id for m in shown if m.level < level],
    }


def run_migrate_check() -> dict[str, Any]:
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    pending = [f"{m.app_label}.{m.name}" for m, _ in plan]
    return {
        "passed": not pending,
        "summary": ("unapplied: " + ", ".join(pending)) if pending else "",
    }


def main() -> int:
    options = json.loads(sys.argv[1])
    django.setup()
    result: dict[str, Any] = {}
    if options["check"] is not None:
        result["check"] = run_check(options["check"])
    if options["migrate_check"]:
        result["migrate"] = run_migrate_check()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
