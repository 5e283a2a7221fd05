"""A dead link is noticed within ssh.alive_interval x ssh.alive_count, whatever waits on
it: a command, a job's SFTP polls, a database session through the tunnel. The link is
cut for real (tests/netcut.py: the real sshd behind a proxy that stops forwarding and
keeps both sockets open), never by killing a process. Also: the default command
timeout, and a quiet but live connection is left alone."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sandbox.servers import SandboxInfo
from seed.config.environment import Environment
from seed.remote.ssh import Remote, RemoteError, RemoteJob
from tests.netcut import CuttableLink, cuttable_link, known_hosts_through

INTERVAL, COUNT = 0.5, 3  # dead after 1.5 s of silence
BOUND = 15.0  # generous: the check itself says 1.5 s


@pytest.fixture
def link(sandbox: SandboxInfo) -> Iterator[CuttableLink]:
    with cuttable_link("127.0.0.1", sandbox.spec.ssh_port) as proxy:
        yield proxy


@pytest.fixture
def remote(
    sandbox_env: Environment, sandbox: SandboxInfo, link: CuttableLink, tmp_path: Path
) -> Iterator[Remote]:
    """The sandbox's state host, reached through `link`, with short liveness settings."""
    known = known_hosts_through(
        sandbox_env.ssh.known_hosts, sandbox.spec.ssh_port, link, tmp_path / "known_hosts"
    )
    ssh = dataclasses.replace(
        sandbox_env.ssh, known_hosts=known, alive_interval=INTERVAL, alive_count=COUNT
    )
    env = dataclasses.replace(sandbox_env, ssh=ssh)
    r = Remote(env, dataclasses.replace(env.roles.db, port=link.port)).open()
    try:
        yield r
    finally:
        r.close()


def outcome_after_cut(link: CuttableLink, work: Callable[[], Any]) -> tuple[BaseException, float]:
    """Run `work` in a thread, cut the link once it is under way: what it raised and how
    long after the cut. A `work` still blocked after BOUND fails the test (the old code
    waited forever)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:
            box["error"] = exc
            box["at"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), f"it ended before the cut: {box}"
    cut = time.monotonic()
    link.cut()
    thread.join(BOUND)
    assert not thread.is_alive(), f"still blocked {BOUND:g} s after the link was cut"
    assert "error" in box, f"it returned {box.get('result')!r} after the link was cut"
    return box["error"], box["at"] - cut


def test_a_command_in_progress_ends_with_one_line(remote: Remote, link: CuttableLink) -> None:
    error, after = outcome_after_cut(link, lambda: remote.run("sleep 30", long=True))
    assert isinstance(error, RemoteError) and error.code == 4
    assert str(error) == f"ssh {remote.label}: no answer for 1.5 s (link down?)"
    assert after >= 1.0  # not before the probes had their chance
    # the next command says the same at once (the connection is closed, not hanging)
    with pytest.raises(RemoteError, match=r"no answer for 1\.5 s \(link down\?\)"):
        remote.run("true")


def test_a_job_being_polled_wakes(remote: Remote, link: CuttableLink, tmp_path: Path) -> None:
    job = RemoteJob.start(remote, str(tmp_path / "job"), "sleep 20\n")
    error, _ = outcome_after_cut(link, lambda: job.wait(interval=0.3))
    assert isinstance(error, RemoteError)
    assert str(error) == f"ssh {remote.label}: no answer for 1.5 s (link down?)"


def test_a_query_through_the_tunnel_wakes(
    remote: Remote, link: CuttableLink, sandbox: SandboxInfo
) -> None:
    admin = sandbox.spec.admin_user
    with remote.tunnel("127.0.0.1", sandbox.spec.pg_port) as port:
        conn = psycopg.connect(
            host="127.0.0.1",
            port=port,
            user=admin,
            dbname="postgres",
            password=sandbox.password(admin),
            connect_timeout=5,
            autocommit=True,
        )
        with conn:
            error, _ = outcome_after_cut(link, lambda: conn.execute("select pg_sleep(30)"))
    assert isinstance(error, psycopg.OperationalError)


def test_a_dead_gateway_ends_the_connection_behind_it(
    sandbox_env: Environment, sandbox: SandboxInfo, link: CuttableLink, tmp_path: Path
) -> None:
    """The gateway is reached through the link; the host behind it directly from the
    gateway (its own hop, never cut): the gateway's check ends both."""
    known = known_hosts_through(
        sandbox_env.ssh.known_hosts, sandbox.spec.ssh_port, link, tmp_path / "known_hosts"
    )
    ssh = dataclasses.replace(
        sandbox_env.ssh,
        known_hosts=known,
        gateway=f"{sandbox.ssh_user}@127.0.0.1:{link.port}",
        alive_interval=INTERVAL,
        alive_count=COUNT,
    )
    env = dataclasses.replace(sandbox_env, ssh=ssh)
    r = Remote(env, env.roles.db).open()
    try:
        assert r.check("echo via-gateway", "hop").stdout == "via-gateway\n"
        error, _ = outcome_after_cut(link, lambda: r.run("sleep 30", long=True))
        assert isinstance(error, RemoteError)
        assert str(error).startswith(f"ssh {r.label}"), error
        assert str(error).endswith(": no answer for 1.5 s (link down?)"), error
    finally:
        r.close()


def test_a_quiet_live_connection_is_left_alone(remote: Remote) -> None:
    time.sleep(INTERVAL * COUNT * 3)  # several probes, every one answered
    assert remote.dead is None
    assert remote.check("echo still here", "asking").stdout == "still here\n"


def test_commands_have_a_default_timeout(sandbox_env: Environment) -> None:
    env = dataclasses.replace(
        sandbox_env, ssh=dataclasses.replace(sandbox_env.ssh, command_timeout=0.5)
    )
    r = Remote(env, env.roles.db).open()
    try:
        with pytest.raises(RemoteError) as info:
            r.run("sleep 5")
        assert str(info.value) == (
            f"ssh {r.label}: 'sleep 5' timed out after 0.5s (ssh.command_timeout in "
            f"{env.path.name})"
        )
        assert r.run("sleep 1", long=True).ok  # marked long: only a dead link ends it
        assert r.run("sleep 1", timeout=5).ok  # its own bound wins
    finally:
        r.close()
