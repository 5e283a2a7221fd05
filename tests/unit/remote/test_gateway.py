"""Gateways against real sshd servers on loopback: ProxyJump aliases and chains through
the ssh config, ssh.gateway chains, ProxyCommand, host-key failures naming the gateway.

On loopback every server reaches every other, so each hop's sshd may only forward to
the next one (`PermitOpen`): a route that skips a hop is refused by the hop it used, and
each hop's log counts the connections it took.
"""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from sandbox.servers import SandboxInfo, free_port
from seed.config.environment import Environment, Host
from seed.errors import PreflightFailed
from seed.remote.route import parse_spec
from seed.remote.ssh import Remote, fingerprint
from tests.e2e.sshd import ExtraSshd, host_key_line, start_sshd

RELAY = """\
import os, socket, sys, threading
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := os.read(0, 65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := sock.recv(65536):
    os.write(1, data)
"""


@dataclasses.dataclass
class Hops:
    a: ExtraSshd  # forwards only to b
    b: ExtraSshd  # forwards only to the sandbox's sshd (the target)
    direct: ExtraSshd  # forwards only to the target too (a one-hop gateway)
    dir: Path


@pytest.fixture(scope="module")
def hops(sandbox: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hops]:
    directory = tmp_path_factory.mktemp("hops")
    target = f"PermitOpen 127.0.0.1:{sandbox.spec.ssh_port}"
    b = start_sshd(sandbox, directory, "b", extra=(target,))
    a = start_sshd(sandbox, directory, "a", extra=(f"PermitOpen 127.0.0.1:{b.port}",))
    direct = start_sshd(sandbox, directory, "direct", extra=(target,))
    try:
        yield Hops(a, b, direct, directory)
    finally:
        for server in (a, b, direct):
            server.stop()


def with_ssh(env: Environment, **changes: object) -> Environment:
    return dataclasses.replace(env, ssh=dataclasses.replace(env.ssh, **changes))


def known_hosts(sandbox: SandboxInfo, path: Path, *endpoints: tuple[str, int]) -> Path:
    path.write_text("".join(host_key_line(sandbox, a, p) for a, p in endpoints))
    return path


def open_error(env: Environment, host: Host) -> str:
    with pytest.raises(PreflightFailed) as info:
        Remote(env, host).open(retries=0).close()
    assert info.value.code == 4
    message = str(info.value)
    assert "\n" not in message
    return message


def reaches(env: Environment, host: Host) -> None:
    remote = Remote(env, host).open(retries=0)
    try:
        assert remote.check("echo through", "hop").stdout == "through\n"
    finally:
        remote.close()


def target(sandbox_env: Environment, name: str = "127.0.0.1") -> Host:
    return Host(name, sandbox_env.roles.db.user, sandbox_env.roles.db.port, port_default=True)


def test_parse_spec() -> None:
    assert parse_spec("bastion") == (None, "bastion", None)
    assert parse_spec("deploy@bastion.example:2222") == ("deploy", "bastion.example", 2222)
    assert parse_spec("ssh://me@[::1]:22") == ("me", "::1", 22)
    assert parse_spec("::1") == (None, "::1", None)
    with pytest.raises(ValueError):
        parse_spec("host:port")


# --------------------------------------------------------------------------- host keys


def test_gateway_host_key_unknown_names_the_gateway(
    sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    port = sandbox.spec.ssh_port
    user = sandbox.ssh_user
    # the target's key is known, the gateway's (127.0.0.2) is not
    known = known_hosts(sandbox, tmp_path / "known", ("127.0.0.1", port))
    env = with_ssh(sandbox_env, known_hosts=known, gateway=f"{user}@127.0.0.2:{port}")
    message = open_error(env, sandbox_env.roles.db)
    key = fingerprint_of(sandbox)
    assert message.startswith(
        f"ssh gateway {user}@127.0.0.2:{port} (for {sandbox_env.roles.db.label}): "
        f"host key unknown (not in {known}); it offered {key}"
    ), message
    assert f"add the gateway's key (ssh-keyscan -p {port} 127.0.0.2)" in message

    # a changed gateway key: named as the gateway's, with both fingerprints
    other = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text(known.read_text() + f"[127.0.0.2]:{port} {kind} {blob}\n")
    message = open_error(env, sandbox_env.roles.db)
    assert message.startswith(f"ssh gateway {user}@127.0.0.2:{port} (for "), message
    assert f"host key CHANGED: offered {key}" in message
    assert "Verify the gateway's key out of band" in message

    # the gateway known, the target not: the target is named, not the gateway
    known = known_hosts(sandbox, tmp_path / "known2", ("127.0.0.2", port))
    message = open_error(with_ssh(env, known_hosts=known), sandbox_env.roles.db)
    assert message.startswith(f"ssh {sandbox_env.roles.db.label}: host key unknown"), message


def fingerprint_of(sandbox: SandboxInfo) -> str:
    _, kind, blob = sandbox.known_hosts.read_text().split()[:3]
    return fingerprint(paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))


# --------------------------------------------------------------------------- ProxyJump


def test_proxyjump_alias_is_resolved_through_the_ssh_config(
    sandbox_env: Environment, sandbox: SandboxInfo, hops: Hops, tmp_path: Path
) -> None:
    """`ProxyJump jumpy` where jumpy is a Host block with HostName/Port/User/IdentityFile:
    the jump host is connected as that block says."""
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host jumpy\n"
        "    HostName 127.0.0.1\n"
        f"    Port {hops.direct.port}\n"
        f"    User {sandbox.ssh_user}\n"
        f"    IdentityFile {sandbox.client_key}\n"
        "Host app-alias\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sandbox.spec.ssh_port}\n"
        f"    IdentityFile {sandbox.client_key}\n"
        "    ProxyJump jumpy\n"
    )
    known = known_hosts(
        sandbox,
        tmp_path / "known",
        ("127.0.0.1", sandbox.spec.ssh_port),
        ("127.0.0.1", hops.direct.port),
    )
    env = with_ssh(sandbox_env, config_file=config, key=None, known_hosts=known)
    before = hops.direct.connections()
    reaches(env, target(sandbox_env, "app-alias"))
    assert hops.direct.connections() == before + 1


@pytest.mark.parametrize("how", ["ProxyJump a,b", "ssh.gateway a,b", "b's own ProxyJump a"])
def test_a_two_hop_chain_is_followed(
    sandbox_env: Environment, sandbox: SandboxInfo, hops: Hops, tmp_path: Path, how: str
) -> None:
    """a may only forward to b, b only to the target: only a→b→target gets through."""
    user = sandbox.ssh_user
    a, b = f"{user}@127.0.0.1:{hops.a.port}", f"{user}@127.0.0.1:{hops.b.port}"
    config = tmp_path / "ssh_config"
    blocks = {
        "ProxyJump a,b": f"Host app-chain\n    ProxyJump {a},{b}\n",
        "ssh.gateway a,b": "",
        "b's own ProxyJump a": (
            f"Host hop-b\n    HostName 127.0.0.1\n    Port {hops.b.port}\n    ProxyJump {a}\n"
            "Host app-chain\n    ProxyJump hop-b\n"
        ),
    }
    config.write_text(
        blocks[how] + f"Host app-chain\n    HostName 127.0.0.1\n    Port {sandbox.spec.ssh_port}\n"
    )
    known = known_hosts(
        sandbox,
        tmp_path / "known",
        *(("127.0.0.1", p) for p in (sandbox.spec.ssh_port, hops.a.port, hops.b.port)),
    )
    gateway = f"{a},{b}" if how == "ssh.gateway a,b" else None
    env = with_ssh(sandbox_env, config_file=config, known_hosts=known, gateway=gateway)
    counts = (hops.a.connections(), hops.b.connections())
    reaches(env, target(sandbox_env, "app-chain"))
    assert (hops.a.connections(), hops.b.connections()) == (counts[0] + 1, counts[1] + 1)


def test_a_hop_that_may_not_forward_there_is_named(
    sandbox_env: Environment, sandbox: SandboxInfo, hops: Hops, tmp_path: Path
) -> None:
    """Skipping b: a refuses to forward to the target, and the message says which gateway
    refused what (not the target's name alone)."""
    known = known_hosts(
        sandbox,
        tmp_path / "known",
        *(("127.0.0.1", p) for p in (sandbox.spec.ssh_port, hops.a.port)),
    )
    a = f"{sandbox.ssh_user}@127.0.0.1:{hops.a.port}"
    env = with_ssh(sandbox_env, known_hosts=known, gateway=a)
    message = open_error(env, sandbox_env.roles.db)
    assert message.startswith(f"ssh gateway {a} (for {sandbox_env.roles.db.label}): ")
    assert f"it refused to connect on to 127.0.0.1:{sandbox.spec.ssh_port}" in message
    assert "PermitOpen" in message


def test_a_proxyjump_loop_is_refused(sandbox_env: Environment, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host app-loop\n    ProxyJump hop-x\nHost hop-x\n    ProxyJump hop-y\n"
        "Host hop-y\n    ProxyJump app-loop\n"
    )
    started = time.monotonic()
    message = open_error(with_ssh(sandbox_env, config_file=config), target(sandbox_env, "app-loop"))
    assert time.monotonic() - started < 2
    assert f"{config}: the ProxyJump chain loops back to 'app-loop'" in message
    config.write_text("Host app-both\n    ProxyJump hop-x\n    ProxyCommand nc %h %p\n")
    message = open_error(with_ssh(sandbox_env, config_file=config), target(sandbox_env, "app-both"))
    assert "has both ProxyJump and ProxyCommand" in message


# --------------------------------------------------------------------------- ProxyCommand


def test_proxycommand_is_run(
    sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """The config's ProxyCommand carries the connection (the HostName:Port written there
    has nothing listening: only the command reaches the server)."""
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    nothing = free_port()
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host app-pc\n    HostName 127.0.0.1\n"
        f"    Port {nothing}\n"
        f"    ProxyCommand exec {sys.executable} {relay} %h {sandbox.spec.ssh_port}\n"
    )
    known = known_hosts(sandbox, tmp_path / "known", ("127.0.0.1", nothing))
    env = with_ssh(sandbox_env, config_file=config, known_hosts=known)
    reaches(env, target(sandbox_env, "app-pc"))


def test_a_failing_proxycommand_is_one_line(
    sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """A command that ends says so at once, with what it said on stderr; one that hangs
    is stopped after ssh.connect_timeout, and killed."""
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host app-pc\n    HostName 127.0.0.1\n"
        "    ProxyCommand echo 'bastion: no route to host' >&2; exit 3\n"
    )
    env = with_ssh(sandbox_env, config_file=config, connect_timeout=5)
    started = time.monotonic()
    message = open_error(env, target(sandbox_env, "app-pc"))
    assert time.monotonic() - started < 3
    assert f"ProxyCommand of 'app-pc' in {config} exited 3: bastion: no route to host" in message

    pidfile = tmp_path / "proxy.pid"
    config.write_text(f"Host app-pc\n    ProxyCommand echo $$ > {pidfile}; exec sleep 60\n")
    env = with_ssh(sandbox_env, config_file=config, connect_timeout=1)
    message = open_error(env, target(sandbox_env, "app-pc"))
    assert "gave no SSH banner in 1s" in message
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists(), "the hanging ProxyCommand was left running"
