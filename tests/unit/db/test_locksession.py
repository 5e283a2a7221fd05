"""The lock's session ends itself once its holder goes quiet (seed.db.locksession), and
lives on while the holder's heartbeat beats, without getting in the way of the holder's
own statements on that session."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import psycopg
import pytest

from sandbox.servers import SandboxInfo
from seed.config.environment import Environment
from seed.db import locksession
from seed.db.postgres import Endpoint, connect
from seed.journal.store import lock_key_sql, try_advisory_lock


@pytest.fixture
def env(sandbox_env: Environment) -> Environment:
    """Liveness settings of a few seconds: idle timeout 0.4 x (2 + 1) = 1.2 s."""
    ssh = dataclasses.replace(sandbox_env.ssh, alive_interval=0.4, alive_count=2)
    return dataclasses.replace(sandbox_env, ssh=ssh)


def lock_session(env: Environment, sandbox: SandboxInfo) -> psycopg.Connection[Any]:
    return connect(
        env,
        Endpoint("127.0.0.1", sandbox.spec.pg_port),
        admin=True,
        dbname="postgres",
        app_name="seed-unit-locksession",
        options=locksession.options(env),
    )


def lock_is_free(env: Environment, pg_admin_dsn: str) -> bool:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as other:
        got = other.execute(f"select pg_try_advisory_lock({lock_key_sql()})", (env.db.name,))
        free = bool(got.fetchone()[0])  # type: ignore[index]
        if free:
            other.execute(f"select pg_advisory_unlock({lock_key_sql()})", (env.db.name,))
        return free


def test_the_idle_timeout_follows_the_liveness_settings(env: Environment) -> None:
    assert locksession.idle_timeout(env) == pytest.approx(1.2)
    assert "-c idle_session_timeout=1200 " in locksession.options(env)
    defaults = dataclasses.replace(env, ssh=dataclasses.replace(env.ssh, alive_interval=15.0))
    defaults = dataclasses.replace(defaults, ssh=dataclasses.replace(defaults.ssh, alive_count=3))
    assert locksession.idle_timeout(defaults) == 60  # the minute the docs promise


def test_a_beating_session_keeps_the_lock_a_silent_one_frees_it(
    env: Environment, sandbox: SandboxInfo, pg_admin_dsn: str
) -> None:
    conn = lock_session(env, sandbox)
    beat = locksession.Heartbeat(conn, env.ssh.alive_interval, "unit")
    try:
        assert try_advisory_lock(conn, env)
        time.sleep(locksession.idle_timeout(env) * 3)  # idle but for the heartbeat
        assert not lock_is_free(env, pg_admin_dsn)
        assert conn.execute("select 1").fetchone() == (1,)
        beat.stop()  # the holder goes quiet (hung, or its link dead)
        deadline = time.monotonic() + 15
        while not lock_is_free(env, pg_admin_dsn):
            assert time.monotonic() < deadline, "the lock outlived its silent holder"
            time.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        beat.stop()
        conn.close()


def test_the_heartbeat_never_gets_in_the_way(env: Environment, sandbox: SandboxInfo) -> None:
    """A beat every millisecond against the holder's own statements and transactions on
    the same session: every statement of the holder gets its own answer, its
    transactions hold what it wrote, and the session stays usable."""
    conn = lock_session(env, sandbox)
    beat = locksession.Heartbeat(conn, 0.001, "unit-busy")
    errors: list[BaseException] = []
    try:

        def holder() -> None:
            try:
                for i in range(300):
                    row = conn.execute("select %s::int, pg_backend_pid()", (i,)).fetchone()
                    assert row is not None and row[0] == i
                    with conn.transaction():
                        conn.execute("create temporary table if not exists t (n int)")
                        conn.execute("insert into t values (%s)", (i,))
                        count = conn.execute("select count(*) from t").fetchone()
                        assert count == (i + 1,)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=holder)
        thread.start()
        thread.join(120)
        assert not thread.is_alive()
        assert errors == []
        assert not conn.closed and not conn.broken
    finally:
        beat.stop()
        conn.close()
