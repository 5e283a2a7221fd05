"""Deploy tasks: `fab <env> upgradedb`, `fab <env> rollback`."""

from __future__ import annotations

import shlex

from invoke.context import Context
from invoke.exceptions import Exit

from seed.cli.edge import confirm_protected, run_context, selected_environment, task, user_errors
from seed.commands.freeze import freeze as freeze_run
from seed.commands.freeze import unfreeze as unfreeze_run
from seed.commands.manage import run_manage
from seed.commands.rollback import Rollback
from seed.commands.unlock import Unlock
from seed.commands.upgradedb import DeployOptions, Upgrade
from seed.errors import ConfigError
from seed.undo.reverse import METHODS


@task(
    help={
        "ref": "git branch, tag or sha to deploy (default: app.ref of the environment)",
        "resume": "finish a deploy that died after its post checks passed (switch, restart...)",
        "mode": "code-only, online or maintenance: more safety than the plan chooses (never "
        "less; a refusal says why)",
    }
)
@user_errors
def upgradedb(
    c: Context,
    ref: str = "",
    yes: bool = False,
    report: str = "",
    wait: int = 0,
    resume: bool = False,
    mode: str = "",
) -> None:
    """Verified backup, release, migrate, checks, switch — or stop before changing anything.

    Without a pending migration: a code-only deploy (no maintenance, hosts in batches)."""
    env = selected_environment(c)
    confirm_protected(env, f"upgrade {env.name}", yes)
    ctx = run_context(env, report, wait)
    if resume and ref:
        raise ConfigError("--resume finishes the interrupted deploy's own ref: drop --ref")
    Upgrade(ctx, DeployOptions(ref=ref or None, resume=resume, mode=mode or None)).run()


@task(
    help={
        "to": "undo this deploy id (and so go further back than the last deploy)",
        "discard_writes": "roll back even though the database was written since the deploy",
        "stop_jobs": "recovery: stop an interrupted run's migrate/restore instead of waiting",
        "method": "auto, reverse or restore: overrides rollback.method for this rollback",
    }
)
@user_errors
def rollback(
    c: Context,
    to: str = "",
    discard_writes: bool = False,
    yes: bool = False,
    report: str = "",
    wait: int = 0,
    stop_jobs: bool = False,
    method: str = "",
) -> None:
    """Undo the last deploy, or recover one that died half way: database, code, verify."""
    env = selected_environment(c)
    confirm_protected(env, f"roll back {env.name}", yes)
    run = Rollback(
        run_context(env, report, wait),
        to=to or None,
        discard_writes=discard_writes,
        stop_jobs=stop_jobs,
        method=_method(method),
    )
    run.run()


@task(
    help={
        "reason": "why (required; logged in the journal with who and when)",
        "holder_gone": "the holder ran on another machine: you checked its process is gone",
    }
)
@user_errors
def unlock(c: Context, reason: str = "", holder_gone: bool = False) -> None:
    """Clear the lock of a holder that is gone (confirmed, logged); never a live one."""
    env = selected_environment(c)
    run = Unlock(run_context(env), reason=reason, holder_gone=holder_gone)
    run.run()


def _method(value: str) -> str | None:
    if value and value not in METHODS:
        raise ConfigError(f"--method {value}: expected one of {', '.join(METHODS)}")
    return value or None


@task(
    help={
        "args": "the command and its arguments as one string (what `seed` builds from the "
        "words after `manage`; with `fab`, write --args 'showmigrations shop')",
    }
)
@user_errors
def manage(c: Context, args: str = "") -> None:
    """Run a one-off manage.py command on the migrate host, in the current release.

    `seed staging manage showmigrations shop`: output streamed, its exit code passed
    through; refused while a deploy holds the lock (exit 3)."""
    env = selected_environment(c)
    code = run_manage(run_context(env), shlex.split(args))
    if code:
        raise Exit(code=code)


@task(help={"reason": "why (required; shown to everyone the freeze refuses)"})
@user_errors
def freeze(c: Context, reason: str = "") -> None:
    """Freeze the environment for deploys: upgradedb refuses (exit 3), rollback stays allowed."""
    print(freeze_run(run_context(selected_environment(c)), reason))


@task()
@user_errors
def unfreeze(c: Context) -> None:
    """Lift the environment's deploy freeze."""
    print(unfreeze_run(run_context(selected_environment(c))))
