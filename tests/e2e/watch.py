"""Every command Seed runs, recorded (issue 22): on the hosts by a second sshd of the
sandbox (same keys, same user) whose `ForceCommand` logs `$SSH_ORIGINAL_COMMAND` before
running it, on the control machine by shims in front of `git` and `bash` on PATH.
Sampling /proc would miss short-lived processes; these miss nothing that goes through
ssh or PATH."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.servers import free_port
from tests.e2e.conftest import Deployment

WRAPPER = """#!/bin/bash
printf '%s\\0' "$SSH_ORIGINAL_COMMAND" >> {log}
case "$SSH_ORIGINAL_COMMAND" in
  /usr/lib/openssh/sftp-server) exec /usr/lib/openssh/sftp-server ;;
esac
exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
"""
SHIM = """#!/bin/bash
printf '%s ' {name} "$@" >> {log}
printf '\\0' >> {log}
exec {real} "$@"
"""


@dataclass
class Watch:
    port: int  # the logging sshd's (on the sandbox's addresses)
    known_hosts: Path
    host_log: Path
    local_log: Path
    path: str  # PATH with the shims in front

    def ssh_settings(self, data: dict[str, Any]) -> None:
        """Point an environment file's mapping at the logging sshd."""
        data.setdefault("ssh", {}).update(port=self.port, known_hosts=str(self.known_hosts))

    def commands(self) -> str:
        """Every command logged so far, hosts' then the control machine's, NUL-separated."""
        host = self.host_log.read_bytes() if self.host_log.exists() else b""
        local = self.local_log.read_bytes() if self.local_log.exists() else b""
        return (host + local).decode(errors="replace")


def _logging_sshd(dep: Deployment, where: Path) -> tuple[int, Path, Path, subprocess.Popen[bytes]]:
    port = free_port()
    log = where / "host-commands.log"
    wrapper = where / "log-command"
    wrapper.write_text(WRAPPER.format(log=shlex.quote(str(log))))
    wrapper.chmod(0o755)
    lines = [
        line
        for line in dep.sandbox.sshd_config.read_text().splitlines()
        if not line.startswith(("Port ", "PidFile ", "Subsystem "))
    ]
    lines += [
        f"Port {port}",
        f"PidFile {where / 'sshd.pid'}",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        f"ForceCommand {wrapper}",
    ]
    config = where / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    sshd_log = where / "sshd.log"
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(sshd_log)],
        stdin=subprocess.DEVNULL,
    )
    host_key = next(ln.split()[1] for ln in lines if ln.startswith("HostKey "))
    host_pub = Path(f"{host_key}.pub").read_text().split()
    known = where / "known_hosts"
    known.write_text(
        "".join(f"[{a}]:{port} {host_pub[0]} {host_pub[1]}\n" for a in ("127.0.0.1", "127.0.0.2"))
    )
    deadline = time.monotonic() + 10
    while not sshd_log.exists() or "Server listening" not in sshd_log.read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, "the logging sshd did not start"
        time.sleep(0.05)
    return port, known, log, proc


def _shims(where: Path, path: str) -> tuple[str, Path]:
    folder = where / "shims"
    folder.mkdir()
    log = where / "local-commands.log"
    for name in ("git", "bash"):
        real = shutil.which(name)
        assert real is not None
        shim = folder / name
        shim.write_text(SHIM.format(name=name, log=shlex.quote(str(log)), real=real))
        shim.chmod(0o755)
    return f"{folder}:{path}", log


@contextmanager
def watching(dep: Deployment, where: Path, path: str) -> Iterator[Watch]:
    """A logging sshd and shims under `where` (made readable: sshd runs the wrapper as
    the sandbox's user), stopped afterwards; `path` is the PATH to put the shims on."""
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o755)
    port, known, host_log, sshd = _logging_sshd(dep, where)
    shimmed, local_log = _shims(where, path)
    try:
        yield Watch(port, known, host_log, local_log, shimmed)
    finally:
        sshd.terminate()
        sshd.wait(10)
