"""`fab <env> unlock --reason "..."`: clear a lock whose holder is gone, and log it.

The advisory lock normally ends with its holder's session, and that session ends
itself within about a minute of its holder going quiet (seed.db.locksession: an
idle timeout, and a heartbeat while the holder lives), even through a tunnel. What
is left for a person is a holder that still beats but is stuck (a run hanging in a
step), a lock wanted back before that minute, or a stale lock record. Unlock
terminates the holder's session only after confirming its recorded host and pid are
gone — on this machine by looking; for another machine the person confirms with
`--holder-gone` — and never while a remote job of that run still runs. Every unlock
is a journal record (who, when, why, whom).
"""

from __future__ import annotations

import contextlib
import socket
import time

from seed.errors import ConfigError, LockHeld, PreflightFailed
from seed.journal import recovery
from seed.journal.record import Control
from seed.journal.store import Journal, holder_text, lock_holder_pids
from seed.remote.ssh import q
from seed.run.context import RunContext
from seed.run.operation import Operation


class Unlock(Operation):
    kind = "unlock"
    read_only = True  # it must not take the lock it is clearing; it journals by hand

    def __init__(self, ctx: RunContext, *, reason: str = "", holder_gone: bool = False) -> None:
        super().__init__(ctx)
        if not reason.strip():
            raise ConfigError('unlock needs --reason "why" (it is logged in the journal)')
        self.reason = reason.strip()
        self.holder_gone = holder_gone
        self.report.reason = self.reason
        self.unlock_journal: Journal | None = None

    def after_success(self) -> None:
        """The unlock is logged in the journal like any run that changed something."""
        if self.unlock_journal is not None:
            with contextlib.suppress(Exception):
                self.unlock_journal.write(self.id, self.report)

    def body(self) -> str:
        env, session = self.env, self.session
        journal = Journal(env, session.state, self.local_root, self.out.scrub)
        journal.ensure()
        pg = session.connect(admin=True, dbname="postgres", app_name=self.app_name)
        with self.step("holder") as s:
            holder = journal.read_lock()
            pids = lock_holder_pids(pg, env.db.name)
            self.report.holder = holder
            self.report.holder_sessions = pids
            if not pids and holder is None:
                raise PreflightFailed(f"{env.name} is not locked: nothing to unlock")
            s.detail = (holder_text(holder) if holder else "no lock record") + (
                f"; lock session pid(s) {', '.join(map(str, pids))}" if pids else "; no session"
            )
        with self.step("confirm gone") as s:
            if holder:
                control = Control.from_json({"host": holder.get("host"), "pid": holder.get("pid")})
                alive = recovery.control_process(control)
                if alive:
                    raise LockHeld(
                        f"the holder's fab process ({alive}) is alive: stop it first, unlock "
                        "would let two runs change the environment at once"
                    )
                run_id = str(holder.get("deploy_id"))
                jobs = recovery.live_jobs(session, env, run_id)
                if jobs:
                    names = ", ".join(f"{recovery.job_name(j)} on {j.remote.label}" for j in jobs)
                    raise LockHeld(
                        f"deploy {run_id} still has remote job(s) running ({names}); "
                        f"wait for them, or use `fab {env.name} rollback --stop-jobs` after unlock"
                    )
                here = holder.get("host") == socket.gethostname()
                if pids and not here and not self.holder_gone:
                    raise LockHeld(
                        f"the lock is held from {holder.get('host')} (pid {holder.get('pid')}), "
                        "which this machine cannot look into: check that it is gone, then rerun "
                        "with --holder-gone"
                    )
                s.detail = (
                    f"pid {holder.get('pid')} on {holder.get('host')} is gone"
                    if here
                    else f"confirmed gone by {self.report.who} (--holder-gone)"
                )
            else:
                if not self.holder_gone:
                    raise LockHeld(
                        "the lock is held by a session without a lock record: check "
                        f"pg_stat_activity for pid(s) {pids}, then rerun with --holder-gone"
                    )
                s.detail = f"confirmed gone by {self.report.who} (--holder-gone)"
        with self.step("unlock") as s:
            for pid in pids:
                pg.execute("select pg_terminate_backend(%s)", (pid,))
            deadline = time.monotonic() + 10
            while lock_holder_pids(pg, env.db.name) and time.monotonic() < deadline:
                time.sleep(0.1)
            if lock_holder_pids(pg, env.db.name):
                raise PreflightFailed("the lock's session did not end; try again")
            session.state.run(f"rm -f {q(journal.lock_path)}")
            s.detail = f"{len(pids)} session(s) terminated, lock record removed"
        self.unlock_journal = journal
        who = holder_text(holder) if holder else "an unrecorded session"
        return (
            f"unlocked {env.name} (held by {who}); reason: {self.reason}. If that run was a "
            f"deploy, `fab {env.name} rollback` recovers it"
        )
