"""`seed <env> freeze --reason "…"` and `seed <env> unfreeze`: a deploy freeze.

The record lives on the state host beside the lock record (`<state_dir>/freeze.json`), so
every machine and CI runner sees it. While it is there `upgradedb` refuses with the reason
(exit 3, like a held lock); `rollback` stays allowed: a freeze must never stop a team
from going back. `status` shows it; each freeze and unfreeze is a run in the journal, so
`history` says who froze and lifted it, when and why."""

from __future__ import annotations

from seed.errors import ConfigError
from seed.journal.record import RunRecord
from seed.journal.store import Journal, freeze_text, new_deploy_id
from seed.remote.session import Session
from seed.run.context import RunContext
from seed.run.report import iso


def _journal(ctx: RunContext, session: Session) -> Journal:
    session.open()
    journal = Journal(ctx.env, session.state, ctx.local_root, ctx.out.scrub)
    journal.ensure()
    return journal


def _record(ctx: RunContext, journal: Journal, kind: str, message: str) -> None:
    """The freeze or unfreeze as a finished run of the journal (history, audits)."""
    run_id = new_deploy_id()
    record = RunRecord(
        environment=ctx.env.name,
        command=ctx.command,
        deploy_id=run_id,
        kind=kind,
        outcome="succeeded",
        exit_code=0,
        message=message,
    )
    record.finished_at = iso()
    journal.write(run_id, record)


def freeze(ctx: RunContext, reason: str) -> str:
    """Freeze the environment for deploys; returns what to print."""
    if not reason.strip():
        raise ConfigError('freeze needs --reason "why" (shown to everyone it refuses)')
    session = Session(ctx.env)
    try:
        journal = _journal(ctx, session)
        before = journal.read_freeze()
        info = journal.write_freeze(reason.strip(), ctx.command)
        _record(ctx, journal, "freeze", reason.strip())
    finally:
        session.close()
    was = f" (replacing the freeze {freeze_text(before)})" if before else ""
    return f"{ctx.env.name} frozen for deploys {freeze_text(info)}{was}"


def unfreeze(ctx: RunContext) -> str:
    session = Session(ctx.env)
    try:
        journal = _journal(ctx, session)
        before = journal.read_freeze()
        journal.clear_freeze()
        if before is not None:
            _record(ctx, journal, "unfreeze", f"lifted the freeze {freeze_text(before)}")
    finally:
        session.close()
    if before is None:
        return f"{ctx.env.name} was not frozen"
    return f"{ctx.env.name} unfrozen (it was frozen {freeze_text(before)})"
