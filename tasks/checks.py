"""Check tasks: `fab <env> validate`."""

from __future__ import annotations

import json

from invoke.context import Context
from invoke.tasks import task

from seed.commands.validate import Validate
from tasks.deploy import _command, _report_path
from tasks.edge import local_root, output_for, selected_environment, user_errors


@task(
    help={
        "json": "print the JSON report on stdout (progress stays on stderr)",
        "report": "also write the JSON report to this path",
    }
)
@user_errors
def validate(c: Context, json_: bool = False, report: str = "") -> None:
    """Run every check now, read-only; "before" is the last deploy's after-state. Exit 7: failed."""
    env = selected_environment(c)
    run = Validate(env, _command(), local_root(), output_for(env), _report_path(report))
    try:
        run.run()
    finally:
        if json_ and run.report.outcome != "running":
            print(json.dumps(run.out.scrub.data(run.report.to_json()), indent=2, default=str))
