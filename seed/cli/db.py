"""Database tasks: `backup`, `backups`, `restore`, `cleanup`."""

from __future__ import annotations

import json

from invoke.context import Context

from seed.backup.verified import list_backups
from seed.cli.edge import (
    confirm,
    confirm_protected,
    local_root,
    run_context,
    selected_environment,
    task,
    user_errors,
)
from seed.commands.backups import Backup, Cleanup, Restore


@task(
    help={
        "label": "a name to recognise this backup by",
        "verify_restore": "also restore it into a scratch database and compare every table",
        "download": "also copy it to the control machine (.seed/<env>/backups/), sha256-checked",
    }
)
@user_errors
def backup(
    c: Context,
    label: str = "",
    verify_restore: bool = False,
    download: bool = False,
    report: str = "",
) -> None:
    """Take a verified backup now (one consistent snapshot; the app keeps running)."""
    env = selected_environment(c)
    run = Backup(
        run_context(env, report),
        label=label,
        verify_restore=verify_restore,
        download=download,
    )
    run.run()


@task(help={"json": "print the manifests as JSON"})
@user_errors
def backups(c: Context, json_: bool = False) -> None:
    """List the environment's backups: time, label, size, verified, sha, migrations, needed by."""
    env = selected_environment(c)
    found = list_backups(env, local_root())
    if json_:
        print(json.dumps(found, indent=2, default=str))
        return
    if not found:
        print(f"no backups in {env.backup.dir}")
        return
    print(
        f"{'id':<23} {'created':<20} {'kind':<7} {'size':>9}  {'sha256':<12} "
        f"{'migr':>4}  {'label / needed by'}"
    )
    for m in found:
        size = f"{int(m['size']) / 1e6:.1f} MB"
        note = m.get("label") or ""
        if m.get("needed_by"):
            note = f"{note} [needed: {m['needed_by']}]".strip()
        if not m.get("present"):
            missing = "NOT RESTORABLE" if m.get("kind") == "point" else "FILE MISSING"
            note = f"{note} [{missing}]".strip()
        print(
            f"{m['id']:<23} {m.get('created_at', '')!s:<20} {m.get('kind', '?'):<7} "
            f"{size:>9}  {str(m['sha256'])[:12]:<12} {len(m['applied_migrations']):>4}  {note}"
        )
    print(
        "dumps were verified by a full read when taken (`restore` re-verifies); restore "
        "points are restored by `rollback` from the newest pgBackRest backup before them"
        if env.backup.strategy == "pitr"
        else "all listed backups were verified by a full read when taken; `restore` re-verifies"
    )


@task(
    help={
        "backup": "the backup id (or a unique prefix), or 'latest' (default)",
        "discard_writes": "restore even though the database was written since Seed left it",
    }
)
@user_errors
def restore(
    c: Context,
    backup: str = "latest",
    discard_writes: bool = False,
    yes: bool = False,
    report: str = "",
) -> None:
    """Replace the database by a backup (re-verified), atomically; the code is not changed."""
    env = selected_environment(c)
    confirm_protected(env, f"overwrite the {env.name} database", yes)
    run = Restore(
        run_context(env, report),
        backup_id=backup,
        discard_writes=discard_writes,
        confirm=lambda action, why: confirm(env, action, yes, why),
    )
    run.run()


@task()
@user_errors
def cleanup(c: Context, report: str = "") -> None:
    """Drop databases replaced by restores and delete backups beyond backup.keep."""
    env = selected_environment(c)
    run = Cleanup(run_context(env, report))
    run.run()
