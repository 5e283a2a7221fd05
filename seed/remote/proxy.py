"""A ProxyCommand from the ssh config, run as `ssh` runs it: through the shell, its
standard input and output being the connection.

paramiko's own ProxyCommand splits the command with shlex (no pipes, no `exec`, no
`$VAR`), never notices the command's end (its recv spins until the banner timeout) and
drops what the command said on stderr. This one runs `/bin/sh -c`, reads like a socket
(b"" at the end, so the SSH layer fails at once with EOF), keeps the stderr's tail for
the error message, and runs in its own session: with no controlling terminal a command
such as `ssh -W` cannot stop at a password or host-key prompt and hang the run. It is
ended (TERM, then KILL) when the connection closes.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import tempfile

import paramiko


class ShellProxy(paramiko.ProxyCommand):
    """The connection to the first hop through a local command."""

    def __init__(self, command: str) -> None:
        # not super().__init__: that one splits the command and pipes stderr unread
        self.cmd = ["/bin/sh", "-c", command]
        self.command = command
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
            start_new_session=True,
        )
        self.timeout: float | None = None
        self._said: str | None = None  # stderr, kept when closed
        self._stopped = False  # ended by close(), not by itself

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes as soon as any arrive; b"" when the command has ended;
        TimeoutError (socket.timeout) after `timeout` without any."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], self.timeout)
        if not ready:
            raise TimeoutError()
        try:
            return os.read(stdout.fileno(), size)
        except OSError as exc:
            raise paramiko.ProxyCommandFailure(self.command, exc.strerror or str(exc)) from None

    def close(self) -> None:
        # a command that closed its stdout as it exited may not be reaped yet when paramiko
        # sees the EOF and closes us: a moment's grace tells "it ended" from "we stopped it"
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(0.3)
        if self.process.poll() is None:
            self._stopped = True
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(2)
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        if self._said is None:  # paramiko closes us as the connection fails: keep it
            self._said = self._read_stderr()
            with contextlib.suppress(OSError):
                self._stderr.close()

    def ended(self) -> int | None:
        """The command's exit status when it ended by itself; None while it runs, and
        when close() stopped it (paramiko closes the proxy as a handshake times out:
        "exited -15" would hide that the command gave no banner)."""
        status = self.process.poll()
        return None if self._stopped else status

    def stderr_tail(self, lines: int = 3) -> str:
        """The last lines the command wrote to stderr, on one line."""
        text = self._said if self._said is not None else self._read_stderr()
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def _read_stderr(self) -> str:
        try:
            self._stderr.seek(0)
            return bytes(self._stderr.read()[-4000:]).decode(errors="replace")
        except (OSError, ValueError):
            return ""
