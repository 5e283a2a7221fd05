"""One run's connections: an SSH connection to every host and the database endpoint."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from seed.config.environment import Environment, Host
from seed.db import locksession
from seed.db import postgres as dblib
from seed.errors import PreflightFailed, SeedError
from seed.journal.record import RunRecord
from seed.remote.ssh import Remote

TRANSIENT_ATTEMPTS = 15
_TRANSIENT = (
    "starting up",
    "shutting down",
    "in recovery mode",
    "Connection refused",
    "server closed the connection",
    "terminating connection",
    "before or while processing the request",  # libpq's last line of the one above
    "the database system is in recovery",
)


def lost(message: str) -> bool:
    """A connection failure (as opposed to a refused login or a missing database)."""
    return transient(message) or any(
        marker in message for marker in ("timeout expired", "could not connect", "No route")
    )


def transient(message: str) -> bool:
    """A connection failure that a restarting server gives (worth waiting for)."""
    return any(marker in message for marker in _TRANSIENT)


class Session:
    """Open connections to every host and the database endpoint for one run."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.remotes: dict[Host, Remote] = {}
        self._stack = contextlib.ExitStack()
        self.endpoint: dblib.Endpoint | None = None
        self.db_answered = False  # a session opened once: later refusals are transient

    def open(self) -> None:
        for host in self.env.roles.all_hosts():
            remote = Remote(self.env, host).open()
            self._stack.callback(remote.close)
            self.remotes[host] = remote
        self._open_endpoint()

    def _open_endpoint(self) -> None:
        if self.env.db.access == "tunnel":
            port = self._stack.enter_context(self.state.tunnel(self.env.db.host, self.env.db.port))
            self.endpoint = dblib.Endpoint("127.0.0.1", port)
        else:
            self.endpoint = dblib.Endpoint(self.env.db.host, self.env.db.port)

    def close(self) -> None:
        self._stack.close()

    def accepted_keys_note(self, report: RunRecord) -> str:
        """Host keys added on first contact (--accept-new-host-keys): into the report."""
        accepted = [k for r in self.remotes.values() for k in r.accepted_keys]
        if not accepted:
            return ""
        report.accepted_host_keys = accepted
        return f"; ACCEPTED NEW HOST KEY(S) into {self.env.ssh.known_hosts}: " + ", ".join(accepted)

    def alive(self) -> bool:
        """Every SSH connection answers and the database endpoint accepts a session. A
        refused login (a password changed meanwhile) is not a lost connection: reconnecting
        would not help, and the next step says what is wrong."""
        try:
            for remote in self.remotes.values():
                if not remote.run("true", timeout=15).ok:
                    return False
        except SeedError:
            return False
        assert self.endpoint is not None
        try:
            probe = dblib.connect(
                self.env, self.endpoint, admin=True, app_name="seed-probe", timeout=3
            )
            probe.close()
        except SeedError as exc:
            return not lost(str(exc))
        return True

    def reconnect(self, attempts: int = 6, delay: float = 1.0) -> None:
        """After a lost connection: close everything (every DB session of this run too) and
        connect again, retrying. Remote objects are reused, so jobs keep polling."""
        # the dead tunnel's thread re-raises its error on close: it is the loss we know of
        with contextlib.suppress(Exception):
            self._stack.close()
        self._stack = contextlib.ExitStack()
        for remote in self.remotes.values():
            remote.reconnect(attempts, delay)
            self._stack.callback(remote.close)
        self._open_endpoint()

    @property
    def state(self) -> Remote:
        return self.remotes[self.env.roles.db]

    @property
    def repository(self) -> Remote:
        """The pgBackRest repository host (backup.strategy pitr)."""
        host = self.env.roles.backup
        if host is None:
            raise PreflightFailed(
                f"no repository host in {self.env.path.name}: backup.pgbackrest.repo_host"
            )
        return self.remotes[host]

    @property
    def migrator(self) -> Remote:
        return self.remotes[self.env.roles.migrate]

    def app_remotes(self) -> list[Remote]:
        """App hosts plus the migrate host (which needs the release too), each once."""
        hosts = list(self.env.roles.app)
        if self.env.roles.migrate not in hosts:
            hosts.append(self.env.roles.migrate)
        return [self.remotes[h] for h in hosts]

    def serving_remotes(self) -> list[Remote]:
        return [self.remotes[h] for h in self.env.roles.app]

    def connect_lock(self, app_name: str) -> Any:
        """The lock's own session, in `postgres` where every run takes the lock (advisory
        locks are per database), ending itself soon after this process goes quiet
        (seed.db.locksession: an idle timeout, and a heartbeat while this run lives)."""
        conn = self.connect(
            admin=True, dbname="postgres", app_name=app_name, options=locksession.options(self.env)
        )
        beat = locksession.Heartbeat(conn, self.env.ssh.alive_interval, app_name)
        self._stack.callback(beat.stop)  # before the session closes (last in, first out)
        return conn

    def connect(
        self, *, admin: bool, dbname: str | None = None, app_name: str, options: str = ""
    ) -> Any:
        assert self.endpoint is not None
        for attempt in range(TRANSIENT_ATTEMPTS):
            try:
                conn = dblib.connect(
                    self.env,
                    self.endpoint,
                    admin=admin,
                    dbname=dbname,
                    app_name=app_name,
                    options=options,
                )
                break
            except SeedError as exc:
                # a server that answered before and is restarting (crash recovery, a fast
                # restart) answers again soon; a first failure is the user's to fix, at once
                retry = self.db_answered and transient(str(exc))
                if attempt == TRANSIENT_ATTEMPTS - 1 or not retry:
                    raise
                time.sleep(1.0)
        self.db_answered = True
        self._stack.callback(conn.close)
        return conn
