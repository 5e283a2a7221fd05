"""More app hosts for the sandbox: one sshd per host on a loopback port, each in its own
mount namespace where the environment's `deploy_to` is that host's own directory.

So N "hosts" on one machine each have their own releases, `current` and shared/env,
as separate servers would, while sharing the network (one PostgreSQL) and the rest
of the filesystem. Needs root (mount namespaces and bind mounts); used by the
multi-host tests and bench/fanout.py. Every sshd runs in the foreground under this
process and is stopped by `stop()` (or the context manager).
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

from seed.errors import ConfigError
from seed.sandbox import HOST, SSHD, SandboxInfo, free_port


@dataclass
class ExtraHost:
    port: int
    root: Path  # what this host sees at deploy_to
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def start_hosts(
    info: SandboxInfo, deploy_to: Path, n: int, base: Path, user: str | None = None
) -> list[ExtraHost]:
    """Start `n` hosts; their known_hosts lines are appended to info.known_hosts.
    `user`: also let this (local) user log in, besides the sandbox's own."""
    if os.geteuid() != 0:
        raise ConfigError("extra sandbox hosts need root (mount namespaces)")
    deploy_to.mkdir(parents=True, exist_ok=True)
    host_pub = info.known_hosts.read_text().split("\n")[0].split()[1:3]
    hosts: list[ExtraHost] = []
    try:
        for i in range(n):
            root = base / f"host{i + 1}"
            root.mkdir(parents=True, exist_ok=True)
            port = free_port()
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
            process = subprocess.Popen(
                [
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
            hosts.append(ExtraHost(port, root, process))
        deadline = time.monotonic() + 15
        for host in hosts:
            while not _accepts(host.port):
                if host.process.poll() is not None or time.monotonic() > deadline:
                    err = host.process.stderr.read().decode() if host.process.stderr else ""
                    raise ConfigError(f"extra sandbox host on port {host.port} failed: {err}")
                time.sleep(0.05)
        with info.known_hosts.open("a") as fh:
            for host in hosts:
                fh.write(f"[{HOST}]:{host.port} {host_pub[0]} {host_pub[1]}\n")
    except BaseException:
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
    ports = {f"[{HOST}]:{h.port} " for h in hosts}
    if info.known_hosts.exists():
        lines = info.known_hosts.read_text().splitlines(keepends=True)
        kept = [ln for ln in lines if not any(ln.startswith(p) for p in ports)]
        info.known_hosts.write_text("".join(kept))


@contextlib.contextmanager
def extra_hosts(
    info: SandboxInfo, deploy_to: Path, n: int, base: Path, user: str | None = None
) -> Iterator[list[ExtraHost]]:
    hosts = start_hosts(info, deploy_to, n, base, user)
    try:
        yield hosts
    finally:
        stop_hosts(info, hosts)
