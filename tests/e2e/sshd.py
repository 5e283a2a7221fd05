"""Extra real sshd servers beside the sandbox's, for the gateway and SFTP tests: the same
host key, authorized keys and user, on their own loopback port, with lines dropped
(e.g. no `Subsystem sftp`) or added (e.g. `PermitOpen`, so a hop may only forward to
the next one). Each logs at VERBOSE to its own file: "Connection from" shows it was used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.servers import SandboxInfo, free_port

SSHD = "/usr/sbin/sshd"


@dataclass
class ExtraSshd:
    address: str
    port: int
    config: Path
    log: Path
    pid: int

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def connections(self) -> int:
        """How many SSH connections it has accepted so far (from its VERBOSE log)."""
        return self.log.read_text(errors="replace").count("Connection from")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)


def start_sshd(
    sandbox: SandboxInfo,
    directory: Path,
    name: str,
    *,
    drop: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    address: str = "127.0.0.1",
) -> ExtraSshd:
    """An sshd like the sandbox's on a free port of `address`: config lines starting
    with one of `drop` left out, `extra` lines added."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / f"{name}.sshd_config"
    log = directory / f"{name}.sshd.log"
    pidfile = directory / f"{name}.sshd.pid"
    lines = []
    for line in sandbox.sshd_config.read_text().splitlines():
        if line.startswith(("Port ", "ListenAddress ", "PidFile ", *drop)):
            continue
        lines.append(line)
    lines += [f"Port {port}", f"ListenAddress {address}", f"PidFile {pidfile}", *extra]
    config.write_text("\n".join(lines) + "\n")
    res = subprocess.run(
        [SSHD, "-f", str(config), "-E", str(log)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr + (log.read_text() if log.exists() else "")
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, f"sshd {name} did not start: {log.read_text()}"
        time.sleep(0.02)
    return ExtraSshd(address, port, config, log, int(pidfile.read_text().strip()))


def host_key_line(sandbox: SandboxInfo, address: str, port: int) -> str:
    """A known_hosts line for the sandbox's host key at address:port (or a bare name:
    port 22 takes no brackets, as ssh writes it)."""
    kind, blob = sandbox.known_hosts.read_text().split()[1:3]
    where = address if port == 22 else f"[{address}]:{port}"
    return f"{where} {kind} {blob}\n"
