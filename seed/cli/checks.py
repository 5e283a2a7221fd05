"""Check tasks: `fab <env> validate`."""

from __future__ import annotations

from invoke.context import Context

from seed.cli.edge import run_context, run_printing, selected_environment, task, user_errors
from seed.commands.validate import Validate


@task(
    help={
        "json": "print the JSON report on stdout (progress stays on stderr)",
    }
)
@user_errors
def validate(c: Context, json_: bool = False, report: str = "") -> None:
    """Run every check now, read-only; "before" is the last deploy's after-state. Exit 7: failed."""
    env = selected_environment(c)
    run_printing(Validate(run_context(env, report)), json_)
