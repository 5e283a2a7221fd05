"""The journal (one JSON record per deploy) and the environment lock.

Both live on the state host, under `state_dir`, and every record is mirrored to
`.seed/<env>/journal/` on the control machine, so `rollback` works from a fresh
CI runner. The lock is a PostgreSQL advisory lock in the `postgres` database
(never the target database, which a restore renames) plus a lock record naming
the holder, for the message a second deploy prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import secrets as pysecrets
import socket
from pathlib import Path
from typing import Any

import psycopg

from seed.config.environment import Environment
from seed.journal.record import RunRecord
from seed.remote.ssh import Remote, q
from seed.run.report import Scrubber, iso, utcnow, who, write_json

_HEADER = re.compile(r"^==> \./", re.MULTILINE)


class Journal:
    def __init__(self, env: Environment, remote: Remote, local_root: Path, scrub: Scrubber) -> None:
        self.env = env
        self.remote = remote
        self.dir = posixpath.join(env.state_dir, "journal")
        self.local = local_root / env.name / "journal"
        self.scrub = scrub

    def ensure(self) -> None:
        self.remote.mkdirs(self.env.state_dir, self.dir, mode=0o700)

    def path(self, deploy_id: str) -> str:
        return posixpath.join(self.dir, f"{deploy_id}.json")

    def write(self, deploy_id: str, record: RunRecord) -> None:
        """The record on the state host (raises when it cannot be written) and its copy here.
        The copy goes first: a final record the state host refused is then still on this
        machine, and the next run from here puts it there (`adopt_finished`)."""
        clean = self.scrub.data(record.to_json())
        with contextlib.suppress(OSError):  # the local copy only (e.g. a full disk here)
            write_json(self.local / f"{deploy_id}.json", clean, self.scrub)
        data = json.dumps(clean, indent=2).encode()
        self.remote.put_bytes(data, self.path(deploy_id))

    def adopt_finished(self, records: list[RunRecord]) -> list[str]:
        """Runs the state host still has as `running` whose final record this machine kept
        (the state host refused it at the end): write it there now and use it. Returns the
        ids adopted; one that cannot be written stays as it is (the next run tries again)."""
        adopted = []
        for i, record in enumerate(records):
            if record.outcome != "running":
                continue
            run_id = record.deploy_id
            try:
                data = json.loads((self.local / f"{run_id}.json").read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            mine = RunRecord.from_json(data)
            if mine.deploy_id != run_id or mine.outcome == "running":
                continue
            try:
                self.remote.put_bytes(json.dumps(data, indent=2).encode(), self.path(run_id))
            except Exception:  # noqa: S112 - still refused (a full disk, a lost link): later
                continue
            records[i] = mine
            adopted.append(run_id)
        return adopted

    def records(self) -> list[RunRecord]:
        """All records on the state host, oldest first (ids sort by time).

        One command prints them all: an SFTP read per record costs a round trip each,
        and a journal of a thousand runs behind a 20 ms bastion would take 20 s per
        call (several per deploy). Falls back to reading them one by one."""
        # tail -v prints "==> ./NAME <==" before each file; no line of json.dumps'
        # output starts with "==> " (a newline inside a string is escaped)
        res = self.remote.run(
            f"cd {q(self.dir)} 2>/dev/null || exit 0; "
            "find . -maxdepth 1 -name '*.json' -type f -exec tail -v -n +1 -- {} +",
            timeout=600,
        )
        if not res.ok:
            return self._records_one_by_one()
        found = []
        for chunk in _HEADER.split(res.stdout)[1:]:
            name, _, body = chunk.partition(" <==\n")
            record = _parse(body)
            if record is not None:  # else one being written right now, or damaged: as before
                found.append((name, record))
        return [record for _, record in sorted(found, key=lambda item: item[0])]

    def _records_one_by_one(self) -> list[RunRecord]:
        out = []
        for name in sorted(self.remote.listdir(self.dir)):
            if name.endswith(".json"):
                try:
                    record = _parse(self.remote.get_bytes(posixpath.join(self.dir, name)))
                except OSError:
                    continue
                if record is not None:
                    out.append(record)
        return out

    def read_record(self, deploy_id: str) -> RunRecord | None:
        """One record as the state host has it (None when missing or unreadable)."""
        try:
            return _parse(self.remote.get_bytes(posixpath.join(self.dir, f"{deploy_id}.json")))
        except FileNotFoundError:
            return None

    # -- lock record ----------------------------------------------------------------------

    @property
    def lock_path(self) -> str:
        return posixpath.join(self.env.state_dir, "lock.json")

    def write_lock(self, deploy_id: str, command: str) -> None:
        info = {
            "deploy_id": deploy_id,
            "who": who(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": command,
            "since": iso(),
        }
        self.remote.put_bytes(json.dumps(info).encode(), self.lock_path)

    def read_lock(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.remote.get_bytes(self.lock_path))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data

    def clear_lock(self, deploy_id: str) -> None:
        current = self.read_lock()
        if current is None or current.get("deploy_id") == deploy_id:
            self.remote.run(f"rm -f {q(self.lock_path)}")

    # -- deploy freeze (`seed <env> freeze`): on the state host, so every machine sees it ----

    @property
    def freeze_path(self) -> str:
        return posixpath.join(self.env.state_dir, "freeze.json")

    def write_freeze(self, reason: str, command: str) -> dict[str, Any]:
        info = {"reason": reason, "who": who(), "since": iso(), "command": command}
        self.remote.put_bytes(json.dumps(info).encode(), self.freeze_path)
        return info

    def read_freeze(self) -> dict[str, Any] | None:
        """The freeze in force, or None (an unreadable record still freezes: fail closed)."""
        try:
            raw = self.remote.get_bytes(self.freeze_path)
        except FileNotFoundError:
            return None
        try:
            data: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            return {"reason": f"unreadable freeze record {self.freeze_path}"}
        return data

    def clear_freeze(self) -> None:
        self.remote.run(f"rm -f {q(self.freeze_path)}")


def freeze_text(freeze: dict[str, Any]) -> str:
    """`since TIME by WHO: REASON`."""
    return (
        f"since {freeze.get('since', '?')} by {freeze.get('who', '?')}: {freeze.get('reason', '?')}"
    )


def lock_key_sql() -> str:
    # keyed by the target database (not the environment file's name): two environment
    # files pointing at one database share one lock
    return "hashtextextended('seed:' || %s, 0)"


def try_advisory_lock(conn: psycopg.Connection[Any], env: Environment) -> bool:
    """The advisory lock on this session, if free (never waits)."""
    row = conn.execute(f"select pg_try_advisory_lock({lock_key_sql()})", (env.db.name,)).fetchone()
    return bool(row and row[0])


def holder_text(holder: dict[str, Any] | None) -> str:
    """`deploy ID (who, host, pid, 'command') since TIME` from a lock record."""
    h = holder or {}
    return (
        f"deploy {h.get('deploy_id', '?')} ({h.get('who', 'unknown')} on "
        f"{h.get('host', '?')}, pid {h.get('pid', '?')}, {h.get('command', '?')!r}) "
        f"since {h.get('since', '?')}"
    )


def release_lock(conn: psycopg.Connection[Any], journal: Journal, deploy_id: str) -> None:
    env = journal.env
    journal.clear_lock(deploy_id)
    if not conn.closed:
        conn.execute(f"select pg_advisory_unlock({lock_key_sql()})", (env.db.name,))


def _parse(text: str | bytes) -> RunRecord | None:
    """A record from its JSON text; None when it is not one (damaged, half written)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return RunRecord.from_json(data) if isinstance(data, dict) else None


def lock_holder_pids(conn: Any, dbname: str) -> list[int]:
    """Backends holding the environment's advisory lock (read from pg_locks, not taken)."""
    rows = conn.execute(
        "select l.pid from pg_locks l join pg_database d on d.oid = l.database"
        " where l.locktype = 'advisory' and l.objsubid = 1 and l.granted"
        " and d.datname = 'postgres'"
        f" and ((l.classid::bigint << 32) | l.objid::bigint) = {lock_key_sql()}",
        (dbname,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def job_dir(state_dir: str, run_id: str, name: str = "") -> str:
    """A run's remote job folder on any host: `<state_dir>/jobs/<run id>[/<name>]` (pid,
    log and exit status of one detached job; recovery lists a run's jobs here)."""
    root = posixpath.join(state_dir, "jobs", run_id)
    return posixpath.join(root, name) if name else root


def new_deploy_id() -> str:
    """`<UTC time>-<4 hex>`: sorts by time, unique enough for one environment."""
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{pysecrets.token_hex(2)}"
