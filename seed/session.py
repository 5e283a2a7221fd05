"""One run's connections: an SSH connection to every host and the database endpoint."""

from __future__ import annotations

import contextlib
from typing import Any

from seed import db as dblib
from seed.config import Environment, Host
from seed.remote import Remote


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
        if self.env.db.access == "tunnel":
            port = self._stack.enter_context(self.state.tunnel(self.env.db.host, self.env.db.port))
            self.endpoint = dblib.Endpoint("127.0.0.1", port)
        else:
            self.endpoint = dblib.Endpoint(self.env.db.host, self.env.db.port)

    def close(self) -> None:
        self._stack.close()

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
