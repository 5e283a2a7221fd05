"""Import tasks: `fab <env> import-legacy`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from invoke.context import Context

from seed.cli.edge import (
    confirm,
    confirm_protected,
    project_root,
    run_context,
    selected_environment,
    task,
    user_errors,
)
from seed.errors import ConfigError


@task(
    help={
        "source": "the legacy export: a .csv/.xlsx/.sqlite file, or a PostgreSQL DSN",
        "mapping": "the mapping YAML (e.g. import/customers.yml)",
        "dry_run": "every step but the load: cleaned, validated, rejects and merges written",
        "compare_with": "compare with this environment's last import into the same table "
        "(or the path of its import.json) before loading; default: imports.compare_with",
    }
)
@user_errors
def import_legacy(
    c: Context,
    source: str = "",
    mapping: str = "",
    dry_run: bool = False,
    compare_with: str = "",
    yes: bool = False,
    report: str = "",
) -> None:
    """Import legacy records, checked at each step, in one verified transaction.

    Extract, clean, deduplicate, validate with the model's rules, compare with staging's
    run (imports.compare_with), then (unless --dry-run) back up, load and verify."""
    env = selected_environment(c)
    if not source or not mapping:
        raise ConfigError("import-legacy: --source and --mapping are both required")
    path = Path(mapping)
    if not path.is_absolute() and not path.exists():
        path = project_root() / mapping
    ask: Callable[[str], None] | None = None
    if not dry_run and env.protected and not yes:
        if not sys.stdin.isatty():
            confirm_protected(env, f"import into {env.name}", yes)  # refuses: no terminal

        # asked after the comparison with staging's run, before the backup and the load
        def ask(action: str) -> None:
            confirm(env, action, False, f"{env.name} is protected")

    # pandas and the other `[import]` libraries load only when an import runs
    try:
        from seed.commands.import_legacy import ImportLegacy
    except ImportError as exc:
        raise ConfigError(
            f"import-legacy needs the import libraries ({exc.name} is missing): "
            "pip install 'seed-deploy[import]'"
        ) from None

    run = ImportLegacy(
        run_context(env, report),
        source=source,
        mapping=path,
        dry_run=dry_run,
        compare_with=compare_with or None,
        confirm=ask,
    )
    run.run()
