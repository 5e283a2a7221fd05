"""Deploy tasks: `fab <env> upgradedb`, `fab <env> rollback`."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from invoke import Context, task

from seed.errors import ConfigError
from seed.pipeline import DeployOptions, Upgrade
from seed.rollback import Rollback
from tasks.edge import confirm_protected, local_root, output_for, selected_environment, user_errors


def _command() -> str:
    return "fab " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _report_path(report: str) -> Path | None:
    """`--report PATH`, checked writable before anything runs (exit 2 otherwise)."""
    if not report:
        return None
    path = Path(report).expanduser().resolve()
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK) or path.is_dir():
        raise ConfigError(
            f"--report {report}: cannot write there (no such directory, or not writable)"
        )
    return path


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
    out = output_for(env)
    options = DeployOptions(
        ref=ref or None,
        command=_command(),
        local_root=local_root(),
        report_path=_report_path(report),
    )
    upgrade = Upgrade(env, options, out)
    upgrade.run()


@task(
    help={
        "to": "undo this deploy id (and so go further back than the last deploy)",
        "discard_writes": "roll back even though the database was written since the deploy",
        "yes": "confirm on a protected environment without asking (for CI)",
        "report": "also write the JSON report to this path",
    }
)
@user_errors
def rollback(
    c: Context, to: str = "", discard_writes: bool = False, yes: bool = False, report: str = ""
) -> None:
    """Undo the last successful deploy: restore its backup, previous release, verify."""
    env = selected_environment(c)
    confirm_protected(env, f"roll back {env.name}", yes)
    out = output_for(env)
    run = Rollback(
        env,
        _command(),
        local_root(),
        out,
        report_path=_report_path(report),
        to=to or None,
        discard_writes=discard_writes,
    )
    run.run()
