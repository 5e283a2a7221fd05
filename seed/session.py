"""One run's connections: an SSH connection to every host and the database endpoint."""

from __future__ import annotations

import contextlib
from typing import Any

from seed import db as dblib
from seed.config import Environment, Host
from seed.errors import SeedError
from seed.remote import Remote
from seed.report import Report


class Session:
    """Open connections to every host and the database endpoint for one run."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.remotes: dict[Host, Remote] = {}
        self._stack = contextlib.ExitStack()
        self.endpoint: dblib.Endpoint | None = None

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

    def accepted_keys_note(self, report: Report) -> str:
        """Host keys added on first contact (--accept-new-host-keys): into the report."""
        accepted = [k for r in self.remotes.values() for k in r.accepted_keys]
        if not accepted:
            return ""
        report.data["accepted_host_keys"] = accepted
        return f"; ACCEPTED NEW HOST KEY(S) into {self.env.ssh.known_hosts}: " + ", ".join(accepted)

    def alive(self) -> bool:
        """Every SSH connection answers and the database endpoint accepts a session."""
        try:
            for remote in self.remotes.values():
                if not remote.run("true", timeout=15).ok:
                    return False
            assert self.endpoint is not None
            probe = dblib.connect(
                self.env, self.endpoint, admin=True, app_name="seed-probe", timeout=3
            )
            probe.close()
        except SeedError:
            return False
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

    def connect(self, *, admin: bool, dbname: str | None = None, app_name: str) -> Any:
        assert self.endpoint is not None
        conn = dblib.connect(self.env, self.endpoint, admin=admin, dbname=dbname, app_name=app_name)
        self._stack.callback(conn.close)
        return conn
