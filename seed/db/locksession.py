"""The lock's session: alive exactly as long as its holder, even through a tunnel.

The environment's advisory lock lives as long as one PostgreSQL session. With
`db.access: direct` a holder that vanishes (machine gone, network cut) is noticed by
TCP keepalives on the server's side of that session. With `db.access: tunnel` it is
not: the server's TCP peer is sshd on the state host, which lives on; sshd notices the
vanished control machine only by its own TCP keepalive (about two hours), and until
then the lock stays held.

So the session ends itself when its holder goes quiet: `idle_session_timeout` set to
ssh.alive_interval x (ssh.alive_count + 1) (60 s by default), and a heartbeat thread on
the control machine runs `select 1` on it every ssh.alive_interval while the holder
lives. A holder that dies, hangs or loses its link stops the heartbeat, and PostgreSQL
closes the session (and frees the lock) within that timeout, whatever is in between.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg import pq

from seed.config.environment import Environment


def idle_timeout(env: Environment) -> float:
    """Seconds of silence after which PostgreSQL ends the lock's session: one probe
    interval more than a dead SSH link takes to be noticed."""
    return env.ssh.alive_interval * (env.ssh.alive_count + 1)


def options(env: Environment) -> str:
    """Server settings of the lock's session: never cut for a long statement or an open
    transaction, cut after `idle_timeout` of silence; TCP keepalives for direct access."""
    ms = max(1, round(idle_timeout(env) * 1000))
    return (
        f"-c idle_session_timeout={ms} -c idle_in_transaction_session_timeout=0 "
        "-c statement_timeout=0 -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
        "-c tcp_keepalives_count=3"
    )


class Heartbeat:
    """`select 1` on `conn` every `interval` seconds until stopped or the session ends.

    psycopg serialises statements on a connection (one lock per connection), so a beat
    never interleaves with a statement of the run's own thread; it is skipped while
    that thread has a transaction open on the session (the beat would join it) and
    needed then anyway only for idleness, which a transaction is not. A beat that fails
    because the session ended stops the heartbeat; the run notices the lost lock itself
    at its next step (`Operation.ensure_lock`)."""

    def __init__(self, conn: psycopg.Connection[Any], interval: float, name: str) -> None:
        self.conn = conn
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"seed-heartbeat-{name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            conn = self.conn
            if conn.closed or conn.broken:
                return
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                continue  # busy, or in the run's transaction: not idle, nothing to do
            try:
                conn.execute("select 1")
            except Exception:  # never a traceback from a helper thread
                if conn.closed or conn.broken:
                    return  # the session ended: the run finds out at its next step
