"""Runs that died without finishing, and whether anything of theirs still lives.

A run's journal record says `outcome: running` until it ends; one that stays so
after its lock was released (SIGKILL of `fab`, a lost control machine, a cut
tunnel) was interrupted. Such a run may still have something alive: a remote
job (pidfile + exit-status file under `state_dir/jobs/<id>/` on any host), a
database session named `seed-<env>-<id>`, or its control process (when it ran on
this machine). While any of that lives the environment counts as locked, even
though the advisory lock is free (DESIGN: Execution model). Once nothing lives,
a deploy, rollback or restore that died leaves the environment to be recovered
(`fab <env> rollback`, or `upgradedb --resume`) before anything else may run.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from seed.backup.restore import db_tag, scratch_name
from seed.config.environment import Environment
from seed.journal.record import Control, RunRecord
from seed.journal.store import job_dir
from seed.remote.session import Session
from seed.remote.ssh import Remote, RemoteJob

# kinds whose interruption can leave the database or the code half-changed
BLOCKING = ("upgradedb", "rollback", "restore")
# jobs that change the database: waited for (stopping one half way is what must not
# happen); the others (pg_dump, venv builds) change nothing and are stopped at once
CHANGING_JOBS = ("migrate", "restore")


def app_name(env_name: str, run_id: str) -> str:
    """The application_name every session of that run carried (as PostgreSQL keeps it)."""
    return f"seed-{env_name}-{run_id}"[:63]


@dataclass
class RunState:
    """An interrupted run (record outcome `running`, lock released) and what still lives."""

    record: RunRecord
    jobs: list[RemoteJob] = field(default_factory=list)
    sessions: list[tuple[int, str]] = field(default_factory=list)  # pid, query
    process: str = ""  # "pid N on HOST" when its control process is alive here

    @property
    def id(self) -> str:
        return self.record.deploy_id

    @property
    def kind(self) -> str:
        return self.record.kind or "?"

    @property
    def alive(self) -> bool:
        return bool(self.jobs or self.sessions or self.process)

    @property
    def blocking(self) -> bool:
        return self.kind in BLOCKING

    def where(self) -> str:
        """The step it was in (or had last finished) when it died."""
        steps = self.record.steps
        if not steps:
            return "before its first step"
        last = steps[-1]
        if last.outcome == "running":
            return f"during step '{last.name}'"
        return f"after step '{last.name}' ({last.outcome})"

    def describe(self) -> str:
        r = self.record
        how = {
            "rollback failed": "failed and its rollback failed (exit 6)",
            "interrupted": f"was interrupted (SIGINT/SIGTERM) {self.where()}",
        }.get(r.outcome, f"died {self.where()}")
        return (
            f"{self.kind} {self.id} ({r.who or '?'}, {r.command or '?'!r}, started "
            f"{r.started_at or '?'}) {how}"
        )

    def life(self) -> str:
        """What of it still runs, for the lock-held message."""
        parts = [f"remote job {job_name(j)} on {j.remote.label} (pid {j.pid})" for j in self.jobs]
        parts += [f"database session pid {pid} ({query[:60]!r})" for pid, query in self.sessions]
        if self.process:
            parts.append(f"its fab process ({self.process})")
        return ", ".join(parts)


def job_name(job: RemoteJob) -> str:
    return posixpath.basename(job.dir)


def job_kind(job: RemoteJob) -> str:
    return job_name(job).split("-")[0]


def live_jobs(session: Session, env: Environment, run_id: str) -> list[RemoteJob]:
    """Jobs of `run_id` still running on any host of the environment."""
    found = []
    for remote in session.remotes.values():
        root = job_dir(env.state_dir, run_id)
        with contextlib.suppress(FileNotFoundError):
            for name in remote.listdir(root):
                job = RemoteJob(remote, posixpath.join(root, name))
                if job.running():
                    found.append(job)
    return found


def seed_sessions(conn: psycopg.Connection[Any], name: str) -> list[tuple[int, str]]:
    rows = conn.execute(
        "select pid, coalesce(query, '') from pg_stat_activity "
        "where application_name = %s and pid <> pg_backend_pid() order by pid",
        (name,),
    ).fetchall()
    return [(int(pid), str(query)) for pid, query in rows]


def control_process(control: Control | None) -> str:
    """'pid N on HOST' when a run's control process is alive on this machine (a pid the
    kernel reused for something that is not Python does not count); '' otherwise."""
    if control is None or control.pid is None:
        return ""
    host, pid = control.host, control.pid
    if host != socket.gethostname() or pid == os.getpid():
        return ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[:1]
    except OSError:
        return ""
    if state in (["Z"], ["X"]) or (b"python" not in cmdline and b"fab" not in cmdline):
        return ""
    return f"pid {pid} on {host}"


def unfinished(record: RunRecord) -> bool:
    """Still `running` (it died), or a deploy whose own rollback failed (exit 6): either way
    the environment is not known to be in the old or the new state until recovered."""
    if record.recovered_by:
        return False
    if record.outcome in ("running", "interrupted"):
        return True
    return record.kind == "upgradedb" and record.outcome == "rollback failed"


def interrupted_runs(
    env: Environment,
    session: Session,
    conn: psycopg.Connection[Any],
    records: list[RunRecord],
    own_id: str,
) -> list[RunState]:
    """Every run other than `own_id` whose record still says `running`, oldest first,
    with what of it is alive. Call it holding the advisory lock."""
    states = []
    for record in records:
        run_id = record.deploy_id
        if not unfinished(record) or run_id == own_id:
            continue
        states.append(
            RunState(
                record,
                jobs=live_jobs(session, env, run_id),
                sessions=seed_sessions(conn, app_name(env.name, run_id)),
                process=control_process(record.control),
            )
        )
    return states


def pending_message(env: Environment, runs: list[RunState]) -> str:
    last = runs[-1]
    resume = " or `upgradedb --resume` to finish it" if last.kind == "upgradedb" else ""
    return (
        f"recovery pending: {last.describe()}; run `fab {env.name} rollback` to return to "
        f"the state before it{resume}"
    )


def settle_jobs(
    runs: list[RunState],
    stop_changing: bool,
    say: Callable[[str], None],
    poll: float = 1.0,
) -> list[str]:
    """Wait for the database-changing jobs of dead runs (or stop them when `stop_changing`)
    and stop every other job; returns what happened to each."""
    done = []
    for run in runs:
        for job in run.jobs:
            name = f"{job_name(job)} on {job.remote.label}"
            if job_kind(job) in CHANGING_JOBS and not stop_changing:
                say(f"waiting for {name} (pid {job.pid}) of {run.id} to end")
                last = time.monotonic()
                while job.running():
                    if time.monotonic() - last > 10:
                        say(f"still waiting for {name}")
                        last = time.monotonic()
                    time.sleep(poll)
                done.append(f"{name} ended (exit {job.exit_code()})")
            else:
                job.stop()
                done.append(f"{name} stopped")
    return done


def end_sessions(conn: psycopg.Connection[Any], env: Environment, runs: list[RunState]) -> int:
    """Terminate what is left of the dead runs' database sessions (all of them Seed's own)."""
    ended = 0
    for run in runs:
        for pid, _ in seed_sessions(conn, app_name(env.name, run.id)):
            conn.execute("select pg_terminate_backend(%s)", (pid,))
            ended += 1
    return ended


def reopen_database(conn: psycopg.Connection[Any], dbname: str) -> bool:
    """A swap interrupted between `allow_connections false` and its rename leaves the live
    database closed to connections: open it again. True when it had to."""
    row = conn.execute("select datallowconn from pg_database where datname = %s", (dbname,))
    found = row.fetchone()
    if found is None or found[0]:
        return False
    conn.execute(sql.SQL("alter database {} allow_connections true").format(sql.Identifier(dbname)))
    return True


def leftovers(conn: psycopg.Connection[Any], env: Environment, run_id: str) -> list[str]:
    """Scratch databases a dead run left (its restore target, its snapshot copy)."""
    tag = db_tag(run_id)
    names = [scratch_name(env.db.name, f"{what}_{tag}") for what in ("restore", "snap", "copy")]
    rows = conn.execute(
        "select datname from pg_database where datname = any(%s) order by 1", (names,)
    ).fetchall()
    return [str(r[0]) for r in rows]


def remotes_by_label(session: Session) -> dict[str, Remote]:
    return {r.label: r for r in session.remotes.values()}
