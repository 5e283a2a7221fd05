"""What every state-changing command shares: connect, lock, journal, report, freeze.

`Operation.run()` connects to every host, takes the environment's lock, runs the
subclass's `body()` and always leaves an honest record (journal on the state
host, report under .seed/<env>/reports/, and `--report PATH`), whatever happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

import psycopg

from seed import faults
from seed.backup import pitr
from seed.backup import restore as restorelib
from seed.checks import check as checklib
from seed.config.environment import Hook
from seed.db import postgres as dblib
from seed.deploy import hooks as hooklib
from seed.deploy import release as rel
from seed.deploy.availability import Availability
from seed.errors import (
    Interrupted,
    JournalUnwritable,
    LockHeld,
    LockLost,
    PreflightFailed,
    SeedError,
    StepFailed,
)
from seed.journal import recovery
from seed.journal.record import FREEZE, HANDOVER, Control, Reading, RunRecord
from seed.journal.store import (
    Journal,
    holder_text,
    job_dir,
    new_deploy_id,
    release_lock,
    try_advisory_lock,
)
from seed.remote.fanout import HostOutcomes, fan_out
from seed.remote.session import Session
from seed.remote.ssh import Remote, RemoteError
from seed.run.context import RunContext
from seed.run.digests import Digester, team_digester
from seed.run.report import check_local_state, iso, write_json
from seed.undo import database as undo

T = TypeVar("T")


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _stop_on_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM raise Interrupted in the run (main thread only); returns the
    function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _raise_interrupted)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _ignore_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Operation:
    """Base of rollback, restore, backup and cleanup runs."""

    kind = "operation"
    read_only = False  # True: no lock, no journal record (the report stays local)
    # False: the run changes nothing of the environment (a backup only adds a file), so a
    # failed step leaves it as it was: PreflightFailed (4), not StepFailed's 6
    changes_environment = True
    direction = "deploy"  # SEED_DIRECTION for hooks: deploy | rollback
    # steps that run without checking the lock first (they are how it is taken back)
    unlocked_steps = ("lock", "rollback: reconnect")
    # steps after the work is done: a record they cannot write is a warning, not a stop
    housekeeping_steps = ("retention", "prune", "remove undone release")

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        env = self.env = ctx.env
        command = self.command = ctx.command
        self.lock_wait = ctx.lock_wait
        self.locked = False  # the advisory lock is ours: from now on every step is journaled
        self.interrupted: list[recovery.RunState] = []
        self.reconnects = 0  # connections re-established after a loss
        self.local_root = ctx.local_root
        self.report_path = ctx.report_path
        self.out = ctx.out
        self.id = new_deploy_id()
        self.app_name = f"seed-{env.name}-{self.id}"
        self.report = RunRecord(
            environment=env.name,
            command=command,
            deploy_id=self.id,
            kind=self.kind,
            control=Control(socket.gethostname(), os.getpid()),
        )
        self.session = Session(env)
        self.journal: Journal | None = None
        self.lock_conn: psycopg.Connection[Any] | None = None
        self.running: list[Remote] = []
        self.host_outcomes = HostOutcomes()
        self.current: dict[str, str | None] = {}
        self.undoing = False  # going back: a step whose record fails goes ahead (warning)
        self.journal_failing = False
        self.availability = Availability()  # when no app host served (downtime)

    @functools.cached_property
    def digester(self) -> Digester:
        """The environment's digest key (seed/run/digests.py): what reports and records hold
        instead of values read from the app's rows. Read from the state host once a run."""
        return team_digester(self.env, self.session.state)

    def at(self, remote: Remote) -> rel.Layout:
        """The deployment's paths on `remote` (its own deploy_to, else app.deploy_to)."""
        return rel.Layout(self.env.deploy_to_of(remote.host))

    def job_dir(self, name: str) -> str:
        """This run's remote job folder `name` on any host (under state_dir/jobs/<run id>)."""
        return job_dir(self.env.state_dir, self.id, name)

    def admin_factory(self, dbname: str | None = None) -> dblib.ConnFactory:
        """Opens admin sessions (e.g. for parallel table figures)."""
        return lambda: self.session.connect(admin=True, dbname=dbname, app_name=self.app_name)

    def table_figures(
        self,
        conn: psycopg.Connection[Any],
        dbname: str | None = None,
        snapshot: str | None = None,
        algorithm: str | None = None,
        only: set[str] | None = None,
    ) -> dict[str, dblib.TableFigures]:
        """Every table's (or those in `only`) count and checksum in the database `conn` is on
        (`dbname`, default the environment's), db.fingerprint_sessions sessions at once, in
        `snapshot` if given."""
        sessions = self.env.db.fingerprint_sessions
        factory = self.admin_factory(dbname)
        return dblib.parallel_figures(conn, factory, sessions, snapshot, algorithm, only)

    def on_hosts(self, remotes: list[Remote], fn: Callable[[Remote], T], step: str) -> dict[str, T]:
        """`fn` on every host at once (at most app.parallel), each host's outcome in the
        report's `hosts`; every host finishes, then the first failure is raised."""
        results = fan_out(remotes, fn, self.env.app.parallel, self.host_outcomes, step)
        self.report.hosts = self.host_outcomes.data
        return results

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Any]:
        """A step of the run, journaled before it starts (write-ahead: a step whose record
        cannot be written does not start, unless it undoes) and after it ends, with the
        lock confirmed first (a run that lost its lock must not change anything)."""
        try:
            with self.out.step(self.report, name) as s:
                if self.locked and name not in self.unlocked_steps:
                    self.ensure_lock()
                self.write_ahead(name)
                faults.point(f"before {name}")
                yield s
        finally:
            self.record()
        faults.point(f"after {name}")

    def write_ahead(self, name: str) -> None:
        """The record before step `name`. Unwritten: a forward step does not start
        (JournalUnwritable); an undo step, or housekeeping after the work is done, goes
        ahead with a warning (getting back to the old state comes first)."""
        try:
            self.record_or_raise()
        except Exception as exc:
            if self.undoing or name in self.housekeeping_steps:
                self.journal_warning(exc)
                return
            raise JournalUnwritable(
                f"the journal record before step '{name}' could not be written ("
                f"{self.journal_place()}: {_why(exc)}); the step did not start. Make the "
                "state host's state_dir writable (disk space, permissions) and run again"
            ) from None

    def record_or_raise(self) -> None:
        """Write the report as it stands to the journal; only once the lock is ours, so a
        run refused at the lock leaves no `running` record."""
        if self.journal is not None and self.locked:
            self.note_downtime()
            self.journal.write(self.id, self.report)
            self.journal_failing = False

    def record(self) -> None:
        """record_or_raise() where a lost record is only a warning (after a step: the next
        step's write-ahead is the gate)."""
        try:
            self.record_or_raise()
        except Exception as exc:
            self.journal_warning(exc)

    def journal_place(self) -> str:
        assert self.journal is not None
        return f"{self.journal.remote.label}:{self.journal.dir}"

    def journal_warning(self, exc: BaseException) -> None:
        if not self.journal_failing:  # once per outage, not once per step
            self.out.line(
                f"warning: the journal record could not be written ({self.journal_place()}: "
                f"{_why(exc)}); going on",
                style="yellow",
            )
        self.journal_failing = True

    def record_final(self, attempts: int = 3, delay: float = 1.0) -> None:
        """The run's last record, retried (a reconnect between tries). Still refused: this
        machine keeps it (.seed/<env>/journal/) and the next run from here writes it to the
        state host before it looks for interrupted runs (Journal.adopt_finished)."""
        if self.journal is None or not self.locked:
            return
        for attempt in range(attempts):
            try:
                self.record_or_raise()
                return
            except Exception as exc:
                if attempt == attempts - 1:
                    self.out.line(
                        f"warning: the final journal record of {self.id} could not be written "
                        f"({self.journal_place()}: {_why(exc)}); this machine keeps it in "
                        f"{self.journal.local} and the next run from here writes it there",
                        style="yellow",
                    )
                    return
            time.sleep(delay * (attempt + 1))
            with contextlib.suppress(Exception):
                if not self.session.alive():
                    self.session.reconnect(attempts=2)

    def finish(self, outcome: str, code: int, message: str, attempts: int = 3) -> None:
        """The outcome into the report, the journal (`attempts` tries) and the local copies."""
        self.report.outcome = outcome
        self.report.exit_code = code
        self.report.message = self.out.scrub(message)
        self.report.finished_at = iso()
        self.note_downtime()
        self.record_final(attempts)
        local = self.local_root / self.env.name / "reports" / f"{self.id}.json"
        for path in (local, self.report_path):
            if path is None:
                continue
            try:  # the journal on the state host has the record; this is its copy
                write_json(path, self.report.to_json(), self.out.scrub)
            except OSError as exc:
                self.out.line(
                    f"warning: the report could not be written to {path}: {exc.strerror} "
                    f"(the journal on {self.env.state_host.label} has it: `fab {self.env.name} "
                    "history --json`)",
                    style="yellow",
                )

    def prepare(self) -> None:
        """Work done before connecting to any server (nothing by default)."""

    def body(self) -> str:
        """The operation itself; returns the success message."""
        raise NotImplementedError

    def after_success(self) -> None:
        """Hook run after the success record is written."""

    def run(self) -> RunRecord:
        env = self.env
        mode = "read-only" if self.read_only else self.id
        self.out.line(f"seed {self.kind} {env.name} ({env.description}): {mode}")
        restore_handlers = _stop_on_signals()
        try:
            check_local_state(self.local_root)
            self.prepare()
            with self.step("connect") as s:
                self.session.open()
                s.detail = ", ".join(r.label for r in self.session.remotes.values())
                s.detail += self.session.accepted_keys_note(self.report)
            if not self.read_only:
                self.journal = Journal(env, self.session.state, self.local_root, self.out.scrub)
                with self.step("lock") as s:
                    self.journal.ensure()
                    s.detail = self.take_lock()
                self.check_interrupted()
            try:
                message = self.body()
            except StepFailed as exc:
                if self.read_only or not self.changes_environment:
                    raise PreflightFailed(f"{exc} (nothing was changed)") from exc
                raise
            self.finish("succeeded", 0, message)
            self.after_success()
            return self.report
        except SeedError as exc:
            if self.report.outcome == "running":
                self.finish("failed", exc.code, str(exc))
            raise
        except Interrupted as exc:
            _ignore_signals()  # stopping: a second signal must not break the record
            if self.report.outcome == "running":
                self.finish_interrupted(exc)
            raise
        except BaseException as exc:  # a bug: still leave an honest record
            if self.report.outcome == "running":
                with contextlib.suppress(Exception):
                    self.finish("failed", 1, f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            if self.lock_conn is not None and self.journal is not None and self.locked:
                with contextlib.suppress(Exception):
                    release_lock(self.lock_conn, self.journal, self.id)
            self.session.close()
            self.out.summary(self.report)
            if not self.read_only and self.report.outcome != "running":
                self.notify()
            restore_handlers()

    def finish_interrupted(self, exc: Interrupted) -> None:
        """SIGINT/SIGTERM: the record says `interrupted` (one attempt: within a second) and
        nothing more is done; the environment is recovery pending, as after a kill."""
        step = next((s.name for s in reversed(self.report.steps)), "")
        where = f" during step '{step}'" if step else ""
        message = (
            f"{self.kind} {self.id} {exc}{where}; nothing more was done. Run `fab "
            f"{self.env.name} rollback` to return to the state before it"
            + (" (or `upgradedb --resume` to finish it)" if self.kind == "upgradedb" else "")
        )
        self.finish("interrupted", exc.code, message, attempts=1)
        exc.detail = self.report.message

    # -- hooks ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hooked(self, point: str, hosts: list[Remote]) -> Iterator[None]:
        """The `before` hooks of `point`, the step's own work, then its `after` hooks."""
        self.run_hooks("before", point, hosts)
        yield
        self.run_hooks("after", point, hosts)

    def app_command(self, point: str, command: str, hosts: list[Remote]) -> None:
        """An app.* command (maintenance on/off, restart) on `hosts` at once, in `point`'s
        hooks (`maintenance_on`, `restart`, ...); every host finishes, then a failure raises."""
        what = point.replace("_", " ")
        with self.hooked(point, hosts):
            self.on_hosts(hosts, lambda r: rel.run_hook(r, self.at(r), command, what), what)

    def run_hooks(self, when: str, point: str, hosts: list[Remote]) -> None:
        hooks = self.env.hooks.of(when, point)
        if not hooks:
            return
        name = f"{when}_{point}"
        names = hooklib.variables(self.env, self.hook_base(), name)
        for hook in hooks:
            self.out.detail(f"hook {name}: {hook.run}")
            try:
                self.run_hook(hook, name, names, hosts)
            except SeedError as exc:
                if self.direction == "deploy":
                    raise
                # undoing: getting back to the old state comes first; the health check
                # after the app starts says whether the hook's part was missed
                self.out.line(f"warning: {exc}", style="yellow")
                self.report.hook_failures.append(str(exc))

    def run_hook(self, hook: Hook, name: str, names: dict[str, str], hosts: list[Remote]) -> None:
        """One hook where it belongs (a failure raises HookFailed naming hook and host)."""
        if hook.on == "local":
            hooklib.run_local(hook, names)
        else:
            places = {"migrate": self.session.migrator, "db": self.session.state}
            remotes = hooklib.targets(hook, hosts, places)
            if not remotes:
                return  # the step works on no host (e.g. nothing was switched)

            def one(remote: Remote) -> None:
                hooklib.run_remote_or_raise(self.env, remote, hook, names)

            self.on_hosts(remotes, one, f"hook {name}")
        self.report.hooks_run.append(
            {"hook": name, "run": hook.run, "on": hook.on, "direction": self.direction}
        )

    def hook_base(self) -> dict[str, Any]:
        r = self.report
        forward = self.direction == "deploy"
        return {
            "SEED_RUN_ID": self.id,
            "SEED_KIND": self.kind,
            "SEED_DIRECTION": self.direction,
            "SEED_REF": r.ref,
            "SEED_SHA": r.sha_after if forward else r.sha_before,
            "SEED_RELEASE": r.release_after if forward else r.release_before,
            "SEED_PREVIOUS_RELEASE": r.release_before if forward else r.release_after,
        }

    def notify(self) -> None:
        """`hooks.notify` on the control machine once the outcome is known (warn on failure)."""
        if not self.env.hooks.notify:
            return
        report = self.local_root / self.env.name / "reports" / f"{self.id}.json"
        names = hooklib.variables(self.env, self.hook_base(), "notify")
        names.update(
            SEED_OUTCOME=self.report.outcome,
            SEED_EXIT_CODE=str(self.report.exit_code),
            SEED_MESSAGE=self.out.scrub(self.report.message),
            SEED_REPORT=str(report),
        )
        for hook in self.env.hooks.notify:
            try:
                hooklib.run_local(hook, names)
            except SeedError as exc:
                self.out.line(f"warning: {exc}", style="yellow")

    # -- the lock --------------------------------------------------------------------------

    def connect_lock(self) -> Any:
        """The lock's own session, in `postgres`, kept alive as long as this process is."""
        return self.session.connect_lock(self.app_name)

    def take_lock(self) -> str:
        """The advisory lock, and nothing of an interrupted run alive (else LockHeld, exit 3,
        naming the holder); with `lock_wait`, retried until then."""
        deadline = time.monotonic() + self.lock_wait
        said = False
        while True:
            try:
                return self._take_lock_once()
            except LockHeld as exc:
                if time.monotonic() >= deadline:
                    raise
                if not said:
                    self.out.line(f"waiting up to {self.lock_wait:.0f}s: {exc}")
                    said = True
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    def _take_lock_once(self) -> str:
        assert self.journal is not None
        env = self.env
        if self.lock_conn is None or self.lock_conn.closed:
            self.lock_conn = self.connect_lock()
        if not try_advisory_lock(self.lock_conn, env):
            raise LockHeld(
                f"environment {env.name} is locked by {holder_text(self.holder_record())}; "
                "wait for it to finish (or --wait SECONDS)"
            )
        # the record first: a run refused meanwhile names this one, never "?"
        self.journal.write_lock(self.id, self.command)
        records = self.journal.records()
        for run_id in self.journal.adopt_finished(records):
            self.out.line(f"note: the final record of {run_id} (kept here) is now in the journal")
        runs = recovery.interrupted_runs(env, self.session, self.lock_conn, records, self.id)
        alive = [r for r in runs if self.counts_as_holder(r)]
        if alive:
            release_lock(self.lock_conn, self.journal, self.id)
            run = alive[-1]
            raise LockHeld(
                f"environment {env.name} is locked: {run.describe()} but {run.life()} still "
                "runs; wait for it (or --wait SECONDS)"
            )
        self.locked = True
        self.interrupted = runs
        for run in runs:
            if not run.blocking:  # a dead backup or cleanup: nothing to put back
                self.mark_interrupted(run, "nothing to recover")
        return f"advisory lock taken ({self.app_name})"

    def holder_record(self, patience: float = 3.0) -> dict[str, Any] | None:
        """The lock record of the run holding the advisory lock. It writes the record right
        after taking the lock: give it that moment rather than print an unknown holder."""
        assert self.journal is not None
        deadline = time.monotonic() + patience
        while True:
            record = self.journal.read_lock()
            if record is not None or time.monotonic() >= deadline:
                return record
            time.sleep(0.1)

    def counts_as_holder(self, run: recovery.RunState) -> bool:
        """Whether a live part of an interrupted run keeps the environment locked for this
        run. Recovery overrides this: it waits for or stops the jobs itself."""
        return run.alive

    def check_interrupted(self) -> None:
        """A deploy, rollback or restore died half way: only recovery may run (exit 4)."""
        blocking = [r for r in self.interrupted if r.blocking]
        if blocking:
            raise PreflightFailed(recovery.pending_message(self.env, blocking))

    def mark_interrupted(self, run: recovery.RunState, what: str) -> None:
        """Close a dead run's record: it ended `interrupted`, recovered by this run."""
        assert self.journal is not None
        record = dataclasses.replace(run.record)
        if record.outcome == "running":
            record.outcome, record.exit_code = "interrupted", None
            record.message = f"interrupted {run.where()}"
        record.recovered_by = self.id
        record.message = f"{record.message}; {what} by {self.kind} {self.id}"
        self.journal.write(run.id, record)

    def ensure_lock(self) -> None:
        """Confirm the lock's session still lives; if it died (tunnel cut, server restart),
        take the lock back, unless another run has taken it or recovered this one since:
        then LockLost, and this run must not change anything more."""
        assert self.journal is not None
        if self.lock_conn is not None and not self.lock_conn.closed:
            try:
                self.lock_conn.execute("select 1")
                return
            except psycopg.Error:
                pass
        self.retake_lock()

    def reconnect_all(self) -> None:
        """A connection was lost: connect again (every host, the tunnel), take the lock back
        and reopen this run's sessions. Remote jobs ran on meanwhile (they are detached)."""
        self.out.line("connection lost: reconnecting", style="yellow")
        self.reconnects += 1
        self.session.reconnect()
        self.retake_lock()
        for attr, admin in (("admin", True), ("app", False)):
            if hasattr(self, attr):
                setattr(self, attr, self.session.connect(admin=admin, app_name=self.app_name))

    def retake_lock(
        self,
        attempts: int = 10,
        delay: float = 1.0,
        why: str = "the lock's database session is gone",
    ) -> None:
        assert self.journal is not None
        env = self.env
        self.out.line(f"{why}: taking the lock back")
        for attempt in range(attempts):
            try:
                self.lock_conn = self.connect_lock()
                break
            except SeedError as exc:
                if attempt == attempts - 1:
                    raise LockLost(
                        f"lost the lock of {env.name} (its session died) and cannot reconnect "
                        f"to take it back: {exc}"
                    ) from None
                time.sleep(delay)
        assert self.lock_conn is not None
        if not try_advisory_lock(self.lock_conn, env):
            raise LockLost(
                f"lost the lock of {env.name}: now held by "
                f"{holder_text(self.journal.read_lock())}; stopped without changing anything more"
            )
        mine = self.journal.read_record(self.id)
        if mine is not None and mine.outcome != "running":
            raise LockLost(
                f"lost the lock of {env.name}: this run was recovered by "
                f"{mine.recovered_by or '?'} meanwhile; stopped without changing anything"
            )
        self.journal.write_lock(self.id, self.command)

    # -- writes stopped while the database is replaced ----------------------------------------

    def freeze(self) -> None:
        """Stop the app (maintenance on) and end the app role's sessions, so that no write
        can slip in after the writes check and every write is counted."""
        env, session = self.env, self.session
        self.undoing = True  # from here the run changes things: it finishes what it started
        with self.step("maintenance on") as s:
            self.current = {
                r.label: rel.current_release(r, self.at(r)) for r in session.serving_remotes()
            }
            self.running = [r for r in session.serving_remotes() if self.current.get(r.label)]
            if not self.availability.started:
                self.availability.start([r.label for r in self.running])
            if env.app.maintenance_on:
                on = env.app.maintenance_on
                self.availability.out(*(r.label for r in self.running))
                self.app_command("maintenance_on", on, self.running)
            self.admin = session.connect(admin=True, app_name=self.app_name)
            ended = self.end_app_sessions()
            undo.record_reading(self, FREEZE)
            s.detail = f"app stopped on {len(self.running)} host(s), {ended} session(s) ended"

    def end_app_sessions(self) -> int:
        """End every session of the app role but this run's own (after drain_timeout for
        them to finish); how many were ended."""
        env = self.env
        return dblib.drain_sessions(
            self.admin, env.db.user, env.db.name, env.db.drain_timeout, self.app_name
        )

    # -- the writes rule's readings (seed.undo.database) -------------------------------------

    def hand_over(self) -> None:
        """The app may write from here on: a handover reading when this run froze the app
        (its last reading is a freeze). A run that never froze it has nothing to hand over:
        the app's writing interval before it simply goes on."""
        readings = self.report.counter_readings
        if readings and readings[-1].event == FREEZE:
            undo.record_reading(self, HANDOVER)

    def last_freeze(self) -> Reading:
        """This run's last freeze reading (taken now if it has none)."""
        mine = [r for r in self.report.counter_readings if r.event == FREEZE]
        return mine[-1] if mine else undo.record_reading(self, FREEZE)

    def unfreeze(self) -> None:
        """Nothing changed: start the app again where it was running."""
        command = self.env.app.maintenance_off or self.env.app.restart
        self.hand_over()
        if command and self.env.app.maintenance_on:
            for remote in self.running:
                with contextlib.suppress(SeedError, OSError):
                    rel.run_hook(remote, self.at(remote), command, "maintenance off")
                    self.availability.back(remote.label)

    def freeze_checking_writes(
        self,
        records: list[RunRecord],
        backup_run: str,
        discard: bool,
        state: dict[str, str],
    ) -> None:
        """freeze(), then check_writes(); a refusal unfreezes (nothing changed) and re-raises.
        `state["app"]` says where the app stands."""
        self.freeze()
        state["app"] = "stopped (maintenance on)"
        try:
            self.check_writes(records, backup_run, discard)
        except SeedError:
            self.unfreeze()
            state["app"] = "running as before"
            raise

    def check_writes(self, records: list[RunRecord], backup_run: str, discard: bool) -> None:
        """Refuse (exit 4) when the app wrote since the backup of run `backup_run` (the writes
        rule, seed.undo.database), unless `discard`. Call it frozen (after freeze())."""
        with self.step("writes since") as s:
            writes = undo.app_writes(self, records, backup_run)
            if not writes:
                s.detail = f"no writes since {backup_run}"
                return
            listing = writes.listing()
            if discard:
                s.detail = f"discarding writes: {listing}"
                return
            ids = [r.deploy_id for r in records]
            later = records[ids.index(backup_run) + 1 :] if backup_run in ids else []
            imports = [r.deploy_id for r in later if (r.kind, r.outcome) == ("import", "succeeded")]
            by_seed = f" (among them import {', '.join(imports)})" if imports else ""
            why = f" ({'; '.join(writes.why)})" if writes.why else ""
            raise PreflightFailed(
                f"writes happened since {backup_run}: {listing}{by_seed}{why}; a restore would "
                "lose them. Rerun with --discard-writes to roll back anyway"
            )

    def note_downtime(self) -> None:
        """The downtime so far into the report (seed.deploy.availability)."""
        self.report.downtime_seconds = self.availability.seconds()
        self.report.downtime = self.availability.to_json() or None

    def http_health(
        self,
        remote: Remote,
        release: str | None = None,
        in_traffic: bool = True,
        changed_at: float | None = None,
    ) -> None:
        """The health check of one app host, as a check in the report (raises on failure);
        with `release` (and health.release_header) the answers must name it. A host that
        passes serves: seed.deploy.availability counts it back from its first good answer (unless
        it is out of traffic: drained, `in_traffic` False); one that fails is out from its
        first bad answer. `changed_at`: when a graceful reload returned — if the very first
        answer already shows the new state, that moment is when it began (the check starts
        a while later: an SSH command, a Python interpreter)."""
        health = self.env.app.health
        assert health is not None
        started = time.monotonic()
        expected = f"{health.status}" + (f" with {health.text!r}" if health.text else "")
        if release and health.release_header:
            expected += f", {health.release_header}: {release}"
        url = self.env.health_url_of(remote.host)
        result = checklib.CheckResult(
            f"http health {remote.label}", "post", url, expected, None, None, False, 0.0
        )
        probe = rel.probe_health(self.env, remote, self.at(remote), release)
        result.seconds = time.monotonic() - started
        result.actual, result.passed = probe.text, probe.ok
        error = f"health check {url} on {remote.label} failed: {probe.text}"
        result.error = None if probe.ok else error
        self.report.checks.append(result.to_json())
        if not probe.ok:
            since = probe.bad_at
            if changed_at is not None and probe.bad_at == probe.first_at:
                since = changed_at
            self.availability.out(remote.label, since=since)
            raise RemoteError(error)
        if in_traffic:
            at = probe.good_at
            if changed_at is not None and probe.good_at == probe.first_at:
                at = changed_at
            self.availability.back(remote.label, at=at)

    def start_app(self, hosts: list[Remote]) -> str:
        """maintenance off (or restart) and the health check on `hosts`."""
        env = self.env
        self.hand_over()
        if not hosts:
            return "not started (no release to serve)"
        command = env.app.maintenance_off or env.app.restart

        def start(remote: Remote) -> None:
            if command:
                rel.run_hook(remote, self.at(remote), command, "starting the app")
            if env.app.health:
                rel.health_check(env, remote, self.at(remote))
            self.availability.back(remote.label)

        point = "maintenance_off" if env.app.maintenance_off else "restart"
        with self.hooked(point, hosts):
            self.on_hosts(hosts, start, "start app")
        return f"serving on {len(hosts)} host(s)"

    # -- the restore rollback, recovery and restore do (seed.undo.database) ----------------

    def close_sessions(self) -> None:
        """Close this run's own sessions to the live database (before a swap renames it)."""
        for attr in ("admin", "app"):
            conn = getattr(self, attr, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def open_sessions(self) -> None:
        """Open this run's sessions to the live database again (after a swap)."""
        self.admin = self.session.connect(admin=True, app_name=self.app_name)
        if hasattr(self, "app"):
            self.app = self.session.connect(admin=False, app_name=self.app_name)

    def replace_database(
        self,
        backup_path: str,
        sha256: str,
        before: dict[str, Any],
        state: dict[str, str],
        details: dict[str, Any] | None = None,
    ) -> None:
        """Restore `backup_path` as the live database (or, for a restore point, the cluster to
        it: `details` of a pitr backup), then verify it against `before` (tables, migration
        set, database properties). `state` says where things stand."""
        with self.step("database") as s:
            if details and details.get("kind") == "pitr":
                state["database"] = "being restored to the restore point (cluster stopped)"
                parts = undo.restore_to_point(self, details)
                self.report.point_in_time = parts
                state["database"] = (
                    f"cluster restored to {parts['point']} (from backup {parts['backup']})"
                )
                s.detail = pitr.parts_text(parts)
            else:
                self.restore_dump_as_live(backup_path, sha256, before, state, s)
        with self.step("verify") as s:
            # a `backup` run's restore point: tables written between its snapshot and the
            # point were not fingerprinted at the point (backup.verified.physical_backup)
            skip = tuple((details or {}).get("written_meanwhile") or ())
            verification = undo.verify_database(self, before, skip)
            self.report.verification = verification
            if verification["problems"]:
                state["database"] += "; VERIFICATION FAILED"
                raise StepFailed("; ".join(verification["problems"]))
            state["database"] += "; verified identical to the backup's snapshot"
            s.detail = (
                f"{verification['tables']} tables, {verification['rows']} rows, "
                f"{verification['migrations']} migrations equal"
            )

    def restore_dump_as_live(
        self,
        backup_path: str,
        sha256: str,
        before: dict[str, Any],
        state: dict[str, str],
        s: Any,
    ) -> None:
        """The dump restored as a new database and swapped in (undo.restore_dump)."""
        try:
            restored = undo.restore_dump(self, backup_path, sha256, before["database_properties"])
        except restorelib.RestoreFailed as exc:
            state["database"] = (
                "untouched (restore failed before the swap)" if exc.live_untouched else str(exc)
            )
            raise
        replaced = restored.plan.replaced
        state["database"] = f"restored from {backup_path}; old kept as {replaced}"
        self.report.replaced_database = replaced
        s.detail = f"{backup_path} restored, {replaced} kept"
