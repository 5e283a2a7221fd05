"""More app hosts for the sandbox: one sshd per host, each in its own mount namespace
where the environment's `deploy_to` is that host's own directory, and — where `ip
netns` works — its own network namespace, reached over a veth pair at 10.<x>.<n>.2:22.
Without network namespaces every sshd listens on its own loopback port instead.

So N "hosts" on one machine each have their own releases, `current` and shared/env
(and network stack), as separate servers would, sharing the rest of the filesystem.
Needs root; used by the multi-host tests and bench/fanout.py. Every sshd runs in the
foreground under this process; `stop_hosts` (or the context manager) stops them and
removes the namespaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.servers import HOST, SSHD, SandboxInfo, free_port
from seed.errors import ConfigError


@dataclass
class ExtraHost:
    port: int
    root: Path  # what this host sees at deploy_to
    process: subprocess.Popen[bytes]
    ip: str = HOST
    netns: str | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.ip if self.port == 22 else f"[{self.ip}]:{self.port}"


def _accepts(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((ip, port)) == 0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_available() -> bool:
    """Whether `ip netns` works here (root, iproute2, a kernel that allows it)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"seedprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError):
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return True


def _netns_up(i: int) -> tuple[str, str]:
    """Namespace seedh<pid>x<i> with lo up and a veth pair: (name, the host's address)."""
    name = f"seedh{os.getpid()}x{i}"
    outer, inner = f"sv{os.getpid() % 100000}x{i}", f"sh{os.getpid() % 100000}x{i}"
    net = f"10.{77 + os.getpid() % 100}.{i}"  # distinct per process: no clash between runs
    _ip("netns", "add", name)
    _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
    _ip("link", "set", inner, "netns", name)
    _ip("addr", "add", f"{net}.1/24", "dev", outer)
    _ip("link", "set", outer, "up")
    _ip("-n", name, "addr", "add", f"{net}.2/24", "dev", inner)
    _ip("-n", name, "link", "set", inner, "up")
    _ip("-n", name, "link", "set", "lo", "up")
    return name, f"{net}.2"


def _netns_down(name: str) -> None:
    # deleting the namespace deletes its veth end, and with it the pair
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def start_hosts(
    info: SandboxInfo,
    deploy_to: Path,
    n: int,
    base: Path,
    user: str | None = None,
    netns: bool | None = None,
) -> list[ExtraHost]:
    """Start `n` hosts; their known_hosts lines are appended to info.known_hosts.
    `user`: also let this (local) user log in, besides the sandbox's own. `netns`:
    network namespaces (None: when available), else loopback ports."""
    if netns is None:
        netns = netns_available()
    if os.geteuid() != 0:
        raise ConfigError("extra sandbox hosts need root (mount namespaces)")
    deploy_to.mkdir(parents=True, exist_ok=True)
    host_pub = info.known_hosts.read_text().split("\n")[0].split()[1:3]
    hosts: list[ExtraHost] = []
    ns: str | None = None
    try:
        for i in range(n):
            root = base / f"host{i + 1}"
            root.mkdir(parents=True, exist_ok=True)
            ns, ip = _netns_up(i + 1) if netns else (None, HOST)
            port = 22 if ns else free_port()
            sshd = [
                str(SSHD),
                "-D",
                "-f",
                str(info.sshd_config),
                "-o",
                f"Port={port}",
                "-o",
                f"PidFile={base / f'host{i + 1}.pid'}",
                "-E",
                str(base / f"host{i + 1}.log"),
            ]
            if user:
                # the user reads its authorized keys itself: a copy it can read
                keys = base / "authorized_keys"
                shutil.copyfile(f"{info.client_key}.pub", keys)
                keys.chmod(0o644)
                sshd[1:1] = [
                    "-o",
                    f"AllowUsers={user} {info.ssh_user}",
                    "-o",
                    f"AuthorizedKeysFile={keys}",
                ]
            script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
            if ns:
                sshd[1:1] = ["-o", f"ListenAddress={ip}"]
            enter = ["ip", "netns", "exec", ns] if ns else []
            process = subprocess.Popen(
                [
                    *enter,
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                    str(root),
                    str(deploy_to),
                    *sshd,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            hosts.append(ExtraHost(port, root, process, ip, ns))
            ns = None  # from here on stop_hosts removes it
        deadline = time.monotonic() + 15
        for host in hosts:
            while not _accepts(host.ip, host.port):
                if host.process.poll() is not None or time.monotonic() > deadline:
                    err = host.process.stderr.read().decode() if host.process.stderr else ""
                    raise ConfigError(f"extra sandbox host on port {host.port} failed: {err}")
                time.sleep(0.05)
        with info.known_hosts.open("a") as fh:
            for host in hosts:
                fh.write(f"{host.known_hosts_name} {host_pub[0]} {host_pub[1]}\n")
    except BaseException:
        if ns:
            _netns_down(ns)
        stop_hosts(info, hosts)
        raise
    return hosts


def stop_hosts(info: SandboxInfo, hosts: list[ExtraHost]) -> None:
    for host in hosts:
        with contextlib.suppress(OSError):
            host.process.terminate()
    for host in hosts:
        try:
            host.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            host.process.kill()
    for host in hosts:
        if host.netns:
            _netns_down(host.netns)
    ports = {f"{h.known_hosts_name} " for h in hosts}
    if info.known_hosts.exists():
        lines = info.known_hosts.read_text().splitlines(keepends=True)
        kept = [ln for ln in lines if not any(ln.startswith(p) for p in ports)]
        info.known_hosts.write_text("".join(kept))


@contextlib.contextmanager
def extra_hosts(
    info: SandboxInfo,
    deploy_to: Path,
    n: int,
    base: Path,
    user: str | None = None,
    netns: bool | None = None,
) -> Iterator[list[ExtraHost]]:
    hosts = start_hosts(info, deploy_to, n, base, user, netns)
    try:
        yield hosts
    finally:
        stop_hosts(info, hosts)
