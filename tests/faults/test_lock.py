"""The lock: never stale, never lying (issue: faults, "Lock").

A holder from another machine whose session outlived it (a hung runner, a half-open
connection) is simulated by a real database session holding the advisory lock with a
lock record naming another host: `unlock` must refuse to guess, then, told the holder
is gone, terminate the session and log it in the journal.
"""

from __future__ import annotations

import json
import os
import signal
import time

import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import Deployment
from tests.faults.test_connections import finish, start_fab, wait_for_job
from tests.faults.test_kill import lock_is_free


def test_unlock_needs_a_reason(at_v2: Deployment) -> None:
    res = at_v2.fab("local", "unlock")
    assert res.returncode == 2
    assert "--reason" in res.stderr


def test_unlock_never_frees_a_live_holder(at_v2: Deployment) -> None:
    since = time.time()
    proc = start_fab(at_v2, "local", "upgradedb", "--ref", "slow")
    wait_for_job(at_v2, "migrate", since, proc)
    os.kill(proc.pid, signal.SIGSTOP)  # hung, but alive
    try:
        res = at_v2.fab("local", "unlock", "--reason", "looks stuck")
        assert res.returncode == 3, res.stdout + res.stderr
        assert "is alive" in res.stderr or "still has remote job" in res.stderr
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    code, out = finish(proc)
    assert code == 0, out
    res = at_v2.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert lock_is_free(at_v2)


def test_unlock_a_holder_gone_with_its_machine(at_v2: Deployment) -> None:
    lock_record = at_v2.state_dir / "lock.json"
    holder = at_v2.admin()
    try:
        holder.execute(
            sql.SQL("select pg_advisory_lock(hashtextextended({}, 0))").format(
                sql.Literal("seed:shop")
            )
        )
        lock_record.write_text(
            json.dumps(
                {
                    "deploy_id": "20261127T000000Z-dead",
                    "who": "ci@runner-7",
                    "host": "runner-7",
                    "pid": 4242,
                    "command": "fab local upgradedb",
                    "since": "2026-11-27T00:00:00Z",
                }
            )
        )
        res = at_v2.fab("local", "upgradedb", "--ref", "v3")
        assert res.returncode == 3, res.stdout + res.stderr
        assert "runner-7, pid 4242" in res.stderr and "'fab local upgradedb'" in res.stderr
        res = at_v2.fab("local", "unlock", "--reason", "runner-7 was lost")
        assert res.returncode == 3, res.stdout + res.stderr
        assert "--holder-gone" in res.stderr
        res = at_v2.fab("local", "unlock", "--reason", "runner-7 was lost", "--holder-gone")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "unlocked local" in res.stderr
        with pytest.raises(psycopg.OperationalError):  # its session was terminated
            holder.execute("select 1")
    finally:
        holder.close()
    assert lock_is_free(at_v2)
    history = at_v2.fab("local", "history", "--json")
    runs = json.loads(history.stdout)
    assert runs[0]["kind"] == "unlock"
    assert "runner-7 was lost" in runs[0]["message"]
