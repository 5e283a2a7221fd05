"""Deploy tasks: `fab <env> upgradedb`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import Context, task

from seed.pipeline import DeployOptions, Upgrade
from seed.report import Output, Scrubber
from tasks.edge import confirm_protected, local_root, selected_environment, user_errors


@task(
    help={
        "ref": "git branch, tag or sha to deploy (default: app.ref of the environment)",
        "yes": "confirm on a protected environment without asking (for CI)",
        "report": "also write the JSON report to this path",
    }
)
@user_errors
def upgradedb(c: Context, ref: str = "", yes: bool = False, report: str = "") -> None:
    """Verified backup, release, migrate, checks, switch — or stop before changing anything."""
    env = selected_environment(c)
    confirm_protected(env, f"upgrade {env.name}", yes)
    command = "fab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = Output(env.name, Scrubber(env.secrets()))
    options = DeployOptions(
        ref=ref or None,
        command=command,
        local_root=local_root(),
        report_path=Path(report) if report else None,
    )
    upgrade = Upgrade(env, options, out)
    try:
        upgrade.run()
    finally:
        out.summary(upgrade.report)
