"""Fixtures shared by the core's unit tests: the session sandbox as an `Environment`,
and scratch databases on the sandbox PostgreSQL (never the app's own `shop` database).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sandbox.servers import SandboxInfo, environment_text
from seed.config.environment import Environment, load_environment

_counter = itertools.count()


def sandbox_env_text(sandbox: SandboxInfo, server: Path) -> str:
    """A small environment file for the session sandbox (every role on 127.0.0.1)."""
    return environment_text(sandbox, server, "unit tests against the session sandbox")


@pytest.fixture(scope="session")
def sandbox_env(sandbox: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Environment:
    """The sandbox as an Environment, loaded from a real file by `load_environment`."""
    base = tmp_path_factory.mktemp("sandbox-env")
    envdir = base / "environments"
    envdir.mkdir()
    (envdir / "sb.yml").write_text(sandbox_env_text(sandbox, base / "server"))
    env = load_environment("sb", envdir)
    assert env.db.admin_password is not None, "the sandbox pgpass must give the admin password"
    return env


@pytest.fixture
def scratch_db(
    sandbox: SandboxInfo, pg_admin_dsn: str
) -> Iterator[Callable[[], tuple[str, psycopg.Connection[Any]]]]:
    """Make scratch databases: returns (name, autocommit admin connection to it); dropped after."""
    made: list[tuple[str, psycopg.Connection[Any]]] = []

    def make() -> tuple[str, psycopg.Connection[Any]]:
        name = f"seed_unit_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        conn = psycopg.connect(sandbox.admin_conninfo(name), autocommit=True)
        made.append((name, conn))
        return name, conn

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        for name, conn in made:
            conn.close()
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
