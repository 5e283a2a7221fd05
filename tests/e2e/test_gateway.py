"""`fab` against a gateway that never answers and a host without the SFTP subsystem: one
line naming the gateway or the host, exit 4, within a bounded time.

These use a small environment of their own (tests/unit's, every role on 127.0.0.1) and
`fab <env> status`, which connects to every host first: no `sandbox.up` needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.servers import SandboxInfo, environment_text
from tests.e2e.conftest import FAB, REPO
from tests.e2e.sshd import host_key_line, start_sshd


def fab_status(
    sandbox: SandboxInfo, home: Path, text: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    envdir = home / "environments"
    envdir.mkdir(parents=True, exist_ok=True)
    (envdir / "gw.yml").write_text(text)
    env = {**os.environ, "SEED_ENVIRONMENTS": str(envdir), "SEED_HOME": str(home / ".seed")}
    return subprocess.run(
        [FAB, "gw", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def one_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    output = res.stdout + res.stderr
    assert res.returncode == code, output
    assert "Traceback" not in output, output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("seed: "), output
    return lines[0]


def env_text(sandbox: SandboxInfo, home: Path, **ssh: str) -> str:
    text = environment_text(sandbox, home / "server", "gateway tests")
    for key, value in ssh.items():
        text = text.replace("ssh:\n", f"ssh:\n  {key}: {value}\n", 1)
    return text.replace("  connect_timeout: 10\n", "")


@pytest.fixture
def silent_port() -> Iterator[tuple[int, socket.socket]]:
    """A port whose listener never accepts: TCP connects, no SSH banner ever comes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1], listener


@pytest.fixture
def dropping_port() -> Iterator[int]:
    """A port that drops SYNs, as a firewall does: a listener with a backlog of 0 whose
    one slot is taken (Linux then drops further SYNs: connect() waits for the timeout)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        yield port


@pytest.mark.parametrize("kind", ["SYNs dropped", "no banner"])
def test_a_gateway_that_never_answers_times_out_and_is_named(
    sandbox: SandboxInfo,
    tmp_path: Path,
    kind: str,
    request: pytest.FixtureRequest,
) -> None:
    if kind == "SYNs dropped":
        port = request.getfixturevalue("dropping_port")
        said = "cannot connect: timed out after 1s"
    else:
        port = request.getfixturevalue("silent_port")[0]
        said = "cannot connect: no SSH banner within 1s"
    text = env_text(sandbox, tmp_path, gateway=f"127.0.0.1:{port}", connect_timeout="1")
    started = time.monotonic()
    res = fab_status(sandbox, tmp_path, text)
    elapsed = time.monotonic() - started
    last = one_line(res, 4)
    target = f"{sandbox.ssh_user}@127.0.0.1:{sandbox.spec.ssh_port}"
    assert f"ssh gateway {sandbox.ssh_user}@127.0.0.1:{port} (for {target}): {said}" in last
    # three attempts of 1 s each and 1 + 2 s between them, and fab's own start
    assert elapsed < 20, elapsed


def test_a_host_without_the_sftp_subsystem_is_named(sandbox: SandboxInfo, tmp_path: Path) -> None:
    server = start_sshd(sandbox, tmp_path, "nosftp", drop=("Subsystem",))
    try:
        known = tmp_path / "known_hosts"
        known.write_text(host_key_line(sandbox, "127.0.0.1", server.port))
        text = env_text(sandbox, tmp_path).replace(
            f"  port: {sandbox.spec.ssh_port}\n", f"  port: {server.port}\n"
        )
        text = text.replace(f"known_hosts: {sandbox.known_hosts}", f"known_hosts: {known}")
        res = fab_status(sandbox, tmp_path, text)
    finally:
        server.stop()
    last = one_line(res, 4)
    assert (
        f"ssh {sandbox.ssh_user}@127.0.0.1:{server.port}: the SFTP subsystem is not available"
        in (last)
    )
    assert "Subsystem sftp" in last


def test_a_proxyjump_chain_of_aliases_is_followed(sandbox: SandboxInfo, tmp_path: Path) -> None:
    """Every role on `app-chain`, which the ssh config reaches by `ProxyJump hop-a,hop-b`,
    two aliases with their own HostName and Port. hop-a may only forward to hop-b, hop-b
    only to the target: `status` connects (and reaches the database through the tunnel)
    only by the whole chain, once through each hop."""
    b = start_sshd(sandbox, tmp_path, "b", extra=(f"PermitOpen 127.0.0.1:{sandbox.spec.ssh_port}",))
    a = start_sshd(sandbox, tmp_path, "a", extra=(f"PermitOpen 127.0.0.1:{b.port}",))
    try:
        config = tmp_path / "ssh_config"
        config.write_text(
            f"Host hop-a\n    HostName 127.0.0.1\n    Port {a.port}\n"
            f"Host hop-b\n    HostName 127.0.0.1\n    Port {b.port}\n"
            "Host app-chain\n    HostName 127.0.0.1\n    ProxyJump hop-a,hop-b\n"
        )
        known = tmp_path / "known_hosts"
        known.write_text(
            "".join(
                host_key_line(sandbox, "127.0.0.1", port)
                for port in (sandbox.spec.ssh_port, a.port, b.port)
            )
        )
        text = env_text(sandbox, tmp_path).replace("  config: none\n", f"  config: {config}\n")
        text = text.replace(f"known_hosts: {sandbox.known_hosts}", f"known_hosts: {known}")
        for role in ("app: [127.0.0.1]", "migrate: 127.0.0.1", "db: 127.0.0.1"):
            text = text.replace(f"  {role}\n", f"  {role.replace('127.0.0.1', 'app-chain')}\n")
        before = (a.connections(), b.connections())
        res = fab_status(sandbox, tmp_path, text)
        after = (a.connections(), b.connections())
    finally:
        a.stop()
        b.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert after == (before[0] + 1, before[1] + 1), (before, after)
