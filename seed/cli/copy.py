"""Copy tasks: `fab <source> copy-to <target>`, `fab <env> copy-rules [--check]`."""

from __future__ import annotations

from invoke.context import Context

from seed.cli.edge import (
    confirm,
    load_named,
    run_context,
    run_printing,
    selected_environment,
    task,
    user_errors,
)
from seed.commands.backups import Backup
from seed.commands.copy_rules import CopyRules
from seed.commands.copy_to import CopyTo, check_pair
from seed.errors import ConfigError
from seed.run.report import Output, Scrubber


@task(
    positional=["target"],
    help={
        "target": "the environment whose database is replaced by the masked copy",
        "yes": "overwrite the target without asking (for CI)",
        "backup": "copy this backup of the source (id or unique prefix; default: latest)",
        "fresh": "take a new backup of the source first and copy that one",
    },
)
@user_errors
def copy_to(
    c: Context,
    target: str | None = None,
    yes: bool = False,
    backup: str = "latest",
    fresh: bool = False,
    report: str = "",
) -> None:
    """Replace TARGET's database by a masked copy of this environment's database.

    E.g. `seed production copy-to staging`: masked on the source side, verified, swapped in
    atomically."""
    source = selected_environment(c)
    if not target:
        raise ConfigError(
            "copy-to: name the target environment, e.g. `fab production copy-to staging`"
        )
    dest = load_named(target)
    check_pair(source, dest)
    out = Output(dest.name, Scrubber(dest.secrets() + source.secrets()))
    ctx = run_context(dest, report, out=out)
    run = CopyTo(
        ctx, source=source, backup_id=backup
    )  # reads and checks the masking rules before anything is asked or touched
    confirm(
        dest,
        f"replace the {dest.name} database by a masked copy of {source.name}",
        yes,
        f"this overwrites the {dest.name} database",
    )
    if fresh:
        first = Backup(ctx.on(source, Output(source.name, out.scrub)))
        taken = first.run().backup
        assert taken is not None  # a backup run that succeeded recorded its backup
        run.backup_id = taken.id
    run.run()


@task(
    help={
        "check": "exit 7 when a table or personal column is unclassified (for CI)",
        "json": "print the result as JSON",
    }
)
@user_errors
def copy_rules(c: Context, check: bool = False, json_: bool = False) -> None:
    """Compare the masking rules (copy.rules) with the live schema (read-only).

    Unclassified tables and columns, rules that do not fit, rules for columns that are gone."""
    env = selected_environment(c)
    out = Output(env.name, Scrubber(env.secrets()))
    run_printing(CopyRules(run_context(env, out=out), check=check), json_)
