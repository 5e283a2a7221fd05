"""Session fixtures: a real sandbox (PostgreSQL + sshd) per test session.

DESIGN: Tests use real components. The sandbox root is a fresh directory in
/var/tmp (not pytest's tmp_path, which sits under a 0700 directory that the
`postgres` user cannot enter when we run as root). It is stopped and removed at
the end of the session, also when tests fail, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `pytest` run as a script does not put the repo on sys.path
    sys.path.insert(0, str(REPO))

from sandbox.servers import (  # noqa: E402
    PortInUse,
    SandboxInfo,
    SandboxSpec,
    free_port,
    sandbox_down,
    sandbox_up,
)

SANDBOX_PARENT = "/var/tmp"


def new_spec(prefix: str = "seed-test-") -> SandboxSpec:
    """A spec with a fresh 0755 root under /var/tmp and two free ports."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=SANDBOX_PARENT))
    os.chmod(root, 0o755)  # noqa: S103 - postgres must traverse it when we run as root
    return SandboxSpec(root=root, ssh_port=free_port(), pg_port=free_port())


class _Purge:
    """Idempotent `sandbox_down(spec, purge=True)`, for finally blocks and atexit alike."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        sandbox_down(self.spec, purge=True)


def _sigterm_to_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    # A cancelled CI job sends SIGTERM: turn it into KeyboardInterrupt so that
    # pytest tears fixtures down (and the sandbox's servers stop) before exiting.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def _up_retrying(spec: SandboxSpec) -> SandboxInfo:
    """sandbox_up; if a port picked by free_port() was grabbed meanwhile, pick new ones."""
    for _ in range(3):
        try:
            return sandbox_up(spec)
        except PortInUse:
            spec = dataclasses.replace(spec, ssh_port=free_port(), pg_port=free_port())
            if spec.pitr:
                spec = dataclasses.replace(spec, repo_tls_port=free_port(), db_tls_port=free_port())
    return sandbox_up(spec)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxInfo]:
    """The session's sandbox: PostgreSQL and sshd on free ports of 127.0.0.1."""
    spec = new_spec()
    purge = _Purge(spec)
    atexit.register(purge)
    try:
        yield _up_retrying(spec)
    finally:
        try:
            purge()
        finally:
            atexit.unregister(purge)


def pitr_spec(prefix: str = "seed-pitr-") -> SandboxSpec:
    """A spec whose cluster archives WAL into a pgBackRest repository on 127.0.0.3."""
    return dataclasses.replace(
        new_spec(prefix), pitr=True, repo_tls_port=free_port(), db_tls_port=free_port()
    )


@pytest.fixture(scope="session")
def pitr_sandbox() -> Iterator[SandboxInfo]:
    """A sandbox of its own whose cluster archives WAL (sandbox.pgbackrest): restores rewind
    the whole cluster, which no other test's data may share."""
    spec = pitr_spec()
    purge = _Purge(spec)
    atexit.register(purge)
    try:
        yield _up_retrying(spec)
    finally:
        try:
            purge()
        finally:
            atexit.unregister(purge)


@pytest.fixture
def sandbox_spec_factory() -> Iterator[Callable[[], SandboxSpec]]:
    """Make extra sandbox specs for one test; each is stopped and purged afterwards."""
    purges: list[_Purge] = []

    def make() -> SandboxSpec:
        spec = new_spec()
        purge = _Purge(spec)
        atexit.register(purge)
        purges.append(purge)
        return spec

    try:
        yield make
    finally:
        for purge in purges:
            try:
                purge()
            finally:
                atexit.unregister(purge)


@pytest.fixture(scope="session")
def pg_admin_dsn(sandbox: SandboxInfo) -> str:
    """libpq conninfo: admin user, 127.0.0.1:<port>, dbname postgres, passfile=<pgpass>."""
    return sandbox.admin_conninfo()


@pytest.fixture(scope="session")
def pg_app_dsn(sandbox: SandboxInfo) -> str:
    """libpq conninfo: app user and app database, 127.0.0.1:<port>, passfile=<pgpass>."""
    return sandbox.app_conninfo()


def _deployment_on(sandbox: SandboxInfo, *up: str) -> Any:
    """The sandbox as `local` sees it, after `fab sandbox.up` (with `up`'s options)."""
    from tests.e2e.conftest import Deployment

    home = sandbox.root / "control"
    home.mkdir()
    app_port, lb_port = free_port(), free_port()
    env = {
        "SEED_SANDBOX_DIR": str(sandbox.root),
        "SEED_SANDBOX_SSH_PORT": str(sandbox.spec.ssh_port),
        "SEED_SANDBOX_PG_PORT": str(sandbox.spec.pg_port),
        "SEED_SANDBOX_APP_PORT": str(app_port),
        "SEED_SANDBOX_LB_PORT": str(lb_port),
        "SEED_SANDBOX_REPO_TLS_PORT": str(sandbox.spec.repo_tls_port),
        "SEED_SANDBOX_DB_TLS_PORT": str(sandbox.spec.db_tls_port),
        "SEED_HOME": str(home),
        "CI": "true",
    }
    dep = Deployment(sandbox, env, home, app_port, lb_port)
    # both app hosts behind HAProxy
    res = dep.fab("sandbox.up", *up, envdir=REPO / "environments")
    assert res.returncode == 0, res.stdout + res.stderr
    return dep


@pytest.fixture(scope="session")
def deployment(sandbox: SandboxInfo) -> Iterator[Any]:
    """The sandbox as the `local` environment sees it (tests/e2e/conftest.py: Deployment),
    shared by the end-to-end tests and the fault matrix: `fab sandbox.up` runs once."""
    dep = _deployment_on(sandbox)
    yield dep
    dep.reset()


@pytest.fixture(scope="session")
def pitr_deployment(pitr_sandbox: SandboxInfo) -> Iterator[Any]:
    """The pitr sandbox as `local` sees it, with backup.strategy pitr (its own cluster: a
    restore rewinds all of it)."""
    dep = _deployment_on(pitr_sandbox, "--pitr")
    dep.one_host_dir = dep.variant("pitr-one-host", {"backup.strategy": "pitr"})
    yield dep
    dep.reset()
