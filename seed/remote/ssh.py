"""SSH to the environment's hosts: connections with strict host keys, commands, files, jobs.

Every interpolated value in a shell command goes through `q` (shlex.quote).
Secrets never go on a command line: they travel as 0600 files over SFTP.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import logging
import posixpath
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection

from seed import faults
from seed.config.environment import Environment, Host
from seed.errors import PreflightFailed, SeedError, StepFailed
from seed.remote.liveness import Liveness
from seed.remote.proxy import ShellProxy
from seed.remote.route import Hop, Route
from seed.remote.route import resolve as route_to

q = shlex.quote

# paramiko logs a failed handshake with its traceback at ERROR; with no logging set up,
# Python's last-resort handler prints that to stderr, under Seed's one line. Seed says
# what failed itself (Remote._failure): paramiko's log goes nowhere unless configured.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def exports_text(names: Mapping[str, str | None]) -> str:
    """Shell lines exporting `names`, unsetting those that are None (read by `eval` on
    the host, never a command line)."""
    return "".join(
        f"unset {k}\n" if v is None else f"export {k}={q(v)}\n" for k, v in sorted(names.items())
    )


class RemoteError(StepFailed):
    """A remote command failed; `code` is set by whoever knows what it means."""

    code = 4


@dataclass(frozen=True)
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = 5) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-lines:])


class _Transient(Exception):
    """A connection failure worth retrying (its message is the user's line)."""


class Remote:
    """One open SSH connection to one host of an environment."""

    def __init__(self, env: Environment, host: Host) -> None:
        self.env = env
        self.host = host
        self._conn: Connection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        # the gateways' connections and the ProxyCommand this connection goes through
        self._route: list[paramiko.SSHClient | ShellProxy] = []
        self.accepted_keys: list[str] = []  # host keys added on first contact (accept_new)
        self._watchers: list[Liveness] = []  # this connection's liveness checks

    @property
    def label(self) -> str:
        return self.host.label

    def open(self, retries: int = 2, delay: float = 1.0) -> Remote:
        """Connect, refusing unknown or changed host keys; failures are one clear line.

        A refused or timed-out connection (a host rebooting, a transient network
        problem) is retried `retries` times with a growing delay; DNS, host-key and
        authentication failures are not.
        """
        for attempt in range(retries + 1):
            try:
                return self._open()
            except _Transient as exc:
                if attempt == retries:
                    raise PreflightFailed(str(exc)) from None
                time.sleep(delay * (attempt + 1))
        raise AssertionError("unreachable")

    def _open(self) -> Remote:
        ssh = self.env.ssh
        known = ssh.known_hosts
        if not known.is_file():
            raise PreflightFailed(
                f"ssh {self.label}: known_hosts file {known} not found "
                f"(set ssh.known_hosts in {self.env.path.name}, or ssh-keyscan the host into it)"
            )
        if ssh.key is not None and not ssh.key.is_file():
            raise PreflightFailed(f"ssh {self.label}: key file {ssh.key} not found")
        route = self._resolve()
        target = route.target
        connect_kwargs = self._connect_kwargs(target)
        sock = self._open_route(route)
        if sock is not None:
            connect_kwargs["sock"] = sock
        config = Config(overrides={"load_ssh_configs": False})
        conn = Connection(
            target.hostname,
            user=target.user,
            port=target.port,
            config=config,
            connect_timeout=int(ssh.connect_timeout),
            connect_kwargs=connect_kwargs,
        )
        _strict_host_keys(conn.client, known, ssh.accept_new, self.accepted_keys)
        try:
            conn.open()
        except Exception as exc:
            failure = self._failure(exc, route, target)
            with contextlib.suppress(Exception):
                conn.close()
            self._close_route()
            if failure is None:
                raise
            raise failure from None
        try:
            self._sftp = self._start_sftp(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            self._close_route()
            raise
        self._conn = conn
        self._watch(conn)
        return self

    def _watch(self, conn: Connection) -> None:
        """A liveness check on the connection and on every gateway it goes through (a
        dead hop anywhere ends the connection within the same bound)."""
        ssh = self.env.ssh
        hops: list[tuple[str, paramiko.Transport | None]] = [
            (self.label, conn.client.get_transport())
        ]
        for part in self._route:
            if isinstance(part, paramiko.SSHClient):
                transport = part.get_transport()
                peer = "?"
                with contextlib.suppress(Exception):
                    host, port = transport.getpeername()[:2] if transport else ("?", 0)
                    peer = f"{host}:{port}"
                hops.append((f"{self.label} (gateway {peer})", transport))
        for label, hop in hops:
            if hop is not None:
                self._watchers.append(Liveness(hop, label, ssh.alive_interval, ssh.alive_count))

    @property
    def dead(self) -> str | None:
        """The one line saying the link was declared dead (None while it lives); a dead
        gateway's first, being the cause when the hops behind it went silent too."""
        return next((w.dead for w in reversed(self._watchers) if w.dead), None)

    def lost(self, exc: BaseException) -> RemoteError:
        """The error for a failure of the connection itself: the liveness check's line
        when it declared the link dead, else what the failure said."""
        return RemoteError(self.dead or f"ssh {self.label}: connection lost ({exc})")

    def _resolve(self) -> Route:
        """The target's host name, user, port and identity files after the OpenSSH client
        config (ssh.config, default ~/.ssh/config), and the gateways in front of it
        (ssh.gateway, else the config's ProxyJump chain or ProxyCommand): seed.remote.route.
        The environment file wins for anything it states."""
        ssh = self.env.ssh
        return route_to(self.host, ssh.config_file, ssh.gateway)

    def _connect_kwargs(self, hop: Hop) -> dict[str, object]:
        """paramiko's connect() settings for one hop: ssh.key for every hop when set, else
        the hop's own IdentityFile, the agent and ~/.ssh/id_*; every wait bounded by
        ssh.connect_timeout."""
        ssh = self.env.ssh
        kwargs: dict[str, object] = {
            "look_for_keys": ssh.key is None,
            "allow_agent": ssh.key is None,
            "banner_timeout": ssh.connect_timeout,
            "auth_timeout": ssh.connect_timeout,
        }
        if ssh.key is not None:
            kwargs["key_filename"] = str(ssh.key)
        elif hop.key_files:
            kwargs["key_filename"] = list(hop.key_files)
        return kwargs

    def _open_route(self, route: Route) -> paramiko.Channel | ShellProxy | None:
        """Connect the gateways in order, each through the one before (the first through
        its ProxyCommand, if any), each with its own connect timeout, host-key check and
        one-line failure naming it. Returns what the target is reached through: a
        direct-tcpip channel through the last gateway, the ProxyCommand, or None (direct).
        What it opened is kept in `_route` and closed with the connection."""
        ssh = self.env.ssh
        timeout = ssh.connect_timeout
        sock: paramiko.Channel | ShellProxy | None = None
        if route.proxy_command is not None:
            sock = ShellProxy(route.proxy_command)
            self._route.append(sock)
        for i, hop in enumerate(route.gateways):
            after = route.gateways[i + 1] if i + 1 < len(route.gateways) else route.target
            client = paramiko.SSHClient()
            self._route.append(client)
            _strict_host_keys(client, ssh.known_hosts, ssh.accept_new, self.accepted_keys)
            try:
                client.connect(
                    hop.hostname,
                    port=hop.port,
                    username=hop.user,
                    timeout=timeout,
                    sock=sock,  # a Channel or a ProxyCommand
                    **self._connect_kwargs(hop),  # type: ignore[arg-type]
                )
                transport = client.get_transport()
                assert transport is not None
                sock = transport.open_channel(
                    "direct-tcpip", (after.hostname, after.port), ("", 0), timeout=timeout
                )
            except Exception as exc:
                failure = self._failure(exc, route, hop, reaching=after)
                self._close_route()
                if failure is None:
                    raise
                raise failure from None
        return sock

    def _close_route(self) -> None:
        """Close the gateways and the ProxyCommand, last first; never raises."""
        parts, self._route = self._route, []
        for part in reversed(parts):
            with contextlib.suppress(Exception):
                part.close()

    def _failure(
        self, exc: BaseException, route: Route, hop: Hop, reaching: Hop | None = None
    ) -> SeedError | _Transient | None:
        """The one line for a failure to connect to `hop` (the target or a gateway, while
        it opened a channel to `reaching`); None for an error this does not know."""
        ssh = self.env.ssh
        timeout = ssh.connect_timeout
        gateway = hop is not route.target
        who = f"ssh gateway {hop.label} (for {self.label})" if gateway else f"ssh {self.label}"
        its = "the gateway's" if gateway else "the host's"
        if hop is route.first and (said := self._proxy_failure(exc, hop)):
            return _Transient(f"{who}: {said}")
        if reaching is not None and isinstance(exc, paramiko.ChannelException):
            return PreflightFailed(
                f"{who}: it refused to connect on to {reaching.hostname}:{reaching.port} "
                f"({exc.text}); check that host and port, and that the gateway's sshd "
                "allows forwarding there (AllowTcpForwarding, PermitOpen)"
            )
        if reaching is not None and "Timeout opening channel" in str(exc):
            return _Transient(
                f"{who}: it did not connect on to {reaching.hostname}:{reaching.port} within "
                f"{timeout:g}s; is that host up, and reachable from the gateway?"
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return PreflightFailed(
                f"{who}: host key CHANGED: offered {fingerprint(exc.key)}, "
                f"{ssh.known_hosts} has {fingerprint(exc.expected_key)}; refusing to connect. "
                f"Verify {its} key out of band, then update known_hosts"
            )
        if isinstance(exc, UnknownHostKey):
            return PreflightFailed(
                f"{who}: host key unknown (not in {ssh.known_hosts}); it offered "
                f"{exc.fingerprint}. Check that fingerprint out of band, then add {its} key "
                f"(ssh-keyscan -p {hop.port} {hop.hostname}) or run once with "
                "`fab <env> --accept-new-host-keys <task>`"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            where = (
                "the gateway's user (ssh.gateway or ProxyJump) and ssh.key or its IdentityFile"
                if gateway
                else "ssh.user and ssh.key"
            )
            return PreflightFailed(
                f"{who}: authentication failed for user {hop.user} "
                f"(check {where} in {self.env.path.name})"
            )
        if isinstance(exc, paramiko.SSHException):
            text = str(exc)
            if _stalled(exc):
                return _Transient(
                    f"{who}: cannot connect: no SSH banner within {timeout:g}s (the port "
                    "answers but no sshd speaks: a stuck server, or another service there?)"
                )
            return PreflightFailed(f"{who}: {text}")
        if isinstance(exc, socket.gaierror):
            fix = "check ssh.gateway or ProxyJump" if gateway else "check the host name in roles"
            return PreflightFailed(
                f"{who}: cannot connect: DNS lookup of {hop.hostname!r} failed "
                f"({exc.strerror or exc}); {fix}"
            )
        if isinstance(exc, TimeoutError):
            return _Transient(
                f"{who}: cannot connect: timed out after {timeout:g}s; "
                "is the host up, and reachable through the firewall?"
            )
        if isinstance(exc, OSError):
            # paramiko reports a refused port as NoValidConnectionsError (errno None)
            inner = getattr(exc, "errors", {}) or {}
            codes = {exc.errno, *(getattr(e, "errno", None) for e in inner.values())}
            if errno.ECONNREFUSED in codes:
                return _Transient(
                    f"{who}: cannot connect: connection refused (nothing listens "
                    f"on port {hop.port}); is sshd running and the port right?"
                )
            reason = exc.strerror or str(exc) or type(exc).__name__
            return _Transient(
                f"{who}: cannot connect ({reason}); is the host up and the port right?"
            )
        if isinstance(exc, EOFError):
            return _Transient(f"{who}: cannot connect: the connection was closed at once")
        return None

    def _proxy_failure(self, exc: BaseException, hop: Hop) -> str | None:
        """What the ProxyCommand `hop` is reached through says, if it is what failed (it
        ended, or gave no banner in time)."""
        proxy = next((p for p in self._route if isinstance(p, ShellProxy)), None)
        if proxy is None:
            return None
        status = proxy.ended()
        if status is None and not (isinstance(exc, (EOFError, TimeoutError)) or _stalled(exc)):
            return None
        timeout = self.env.ssh.connect_timeout
        ending = f"exited {status}" if status is not None else f"gave no SSH banner in {timeout:g}s"
        said = proxy.stderr_tail()
        where = self.env.ssh.config_file or "the ssh config"
        return (
            f"ProxyCommand of {hop.alias!r} in {where} {ending}"
            + (f": {said}" if said else "")
            + f" (command: {proxy.command})"
        )

    def _start_sftp(self, conn: Connection) -> paramiko.SFTPClient:
        """The connection's SFTP session, opened once when it connects: every file Seed
        copies goes over it, so a host without the SFTP subsystem is a pre-flight failure
        naming it, not "Channel closed" in the middle of a step."""
        try:
            sftp: paramiko.SFTPClient = conn.sftp()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport = conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise
            raise PreflightFailed(
                f"ssh {self.label}: the SFTP subsystem is not available "
                f"({str(exc).strip() or type(exc).__name__}); Seed copies files over SFTP: "
                "enable it in that host's sshd_config (`Subsystem sftp internal-sftp`)"
            ) from None
        return sftp

    def reconnect(self, attempts: int = 6, delay: float = 1.0) -> None:
        """Drop this connection and open a new one, retrying with a growing delay."""
        self.close()
        last: SeedError | None = None
        for attempt in range(attempts):
            try:
                self.open(retries=0)
                return
            except SeedError as exc:
                last = exc
                time.sleep(delay * (attempt + 1))
        raise RemoteError(f"ssh {self.label}: could not reconnect ({last})")

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RemoteError(f"ssh {self.label}: not connected")
        return self._conn

    def close(self) -> None:
        """Close; never raises (the connection may already be dead)."""
        sftp, conn = self._sftp, self._conn
        self._sftp = self._conn = None
        for watcher in self._watchers:
            watcher.stop()
        self._watchers = []
        with contextlib.suppress(Exception):
            if sftp is not None:
                sftp.close()
        with contextlib.suppress(Exception):
            if conn is not None:
                conn.close()
        self._close_route()

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        long: bool = False,
        on_data: Callable[[bytes, bool], None] | None = None,
        private_env: Mapping[str, str | None] | None = None,
    ) -> Result:
        """Run `command` through the login shell; never raises for a non-zero exit.
        A `timeout` that expires raises RemoteError (the channel is closed: sshd hangs
        the command up). Without one, ssh.command_timeout applies, unless the command is
        marked `long` (pg_dump, pg_restore, a whole manage.py command: their length is
        the data's, and only a dead link ends them, noticed by the liveness check). A
        connection lost meanwhile raises RemoteError too (never an exit status of -1).
        `on_data(chunk, is_stderr)` sees the output as it arrives.
        `private_env`: variables exported to the command, sent on its stdin (the command
        line is every local user's to read in `ps`; the stdin is not), `Result.command`
        stays the command as given.

        A plain SSH channel, read in this thread: no stdin, no pty, no helper threads
        (Fabric's runner starts three per command, which adds up over many hosts).
        """
        started = time.monotonic()
        default = timeout is None and not long
        if default:
            timeout = self.env.ssh.command_timeout
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("the SSH transport is closed")
            chan = transport.open_session(timeout=self.env.ssh.connect_timeout)
            try:
                if private_env:
                    chan.exec_command(f'eval "$(cat)" && {{ {command}\n}}')
                    chan.sendall(exports_text(private_env).encode())
                else:
                    chan.exec_command(command)
                chan.shutdown_write()
                while True:
                    got = False
                    while chan.recv_ready():
                        out.append(chan.recv(65536))
                        if on_data:
                            on_data(out[-1], False)
                        got = True
                    while chan.recv_stderr_ready():
                        err.append(chan.recv_stderr(65536))
                        if on_data:
                            on_data(err[-1], True)
                        got = True
                    # end of output (the server may send the exit status before the last
                    # data: read to EOF, not to the status)
                    done = chan.eof_received or chan.closed
                    if done and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if got:
                        continue
                    if timeout is not None and time.monotonic() - started >= timeout:
                        raise RemoteError(
                            f"ssh {self.label}: {_short(command)!r} timed out after {timeout:g}s"
                            + (f" (ssh.command_timeout in {self.env.path.name})" if default else "")
                        )
                    select.select([chan], [], [], 0.05)
                left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
                chan.status_event.wait(10.0 if left is None else min(left, 10.0))
                code = chan.exit_status  # -1: ended by a signal, no exit status
                if code == -1 and not transport.is_active():
                    raise EOFError("the connection ended before the command did")
            finally:
                chan.close()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self.lost(exc) from None
        return Result(
            command,
            code,
            b"".join(out).decode(errors="replace"),
            b"".join(err).decode(errors="replace"),
        )

    def check(
        self,
        command: str,
        what: str,
        *,
        timeout: float | None = None,
        long: bool = False,
        private_env: Mapping[str, str | None] | None = None,
    ) -> Result:
        """Run `command` (as `run`); a non-zero exit raises RemoteError naming `what` and
        the host."""
        res = self.run(command, timeout=timeout, long=long, private_env=private_env)
        if not res.ok:
            raise RemoteError(f"{what} on {self.label} failed (exit {res.exit_code}): {res.tail()}")
        return res

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._start_sftp(self.conn)
        return self._sftp

    def put_bytes(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write `data` to `path` atomically (temp name, chmod before content, rename)."""
        tmp = f"{path}.seed-tmp"
        with self.sftp.open(tmp, "wb") as fh:
            fh.chmod(mode)
            fh.set_pipelined(True)
            fh.write(data)
        self.sftp.posix_rename(tmp, path)

    def symlink(self, target: str, path: str, replace: bool = False) -> None:
        """`path` -> `target` over SFTP; with `replace`, atomically over an existing
        link (a temporary link renamed into place: never a moment without `path`)."""
        try:
            if not replace:
                self.sftp.symlink(target, path)
                return
            tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.seed-tmp")
            with contextlib.suppress(FileNotFoundError):
                self.sftp.remove(tmp)
            self.sftp.symlink(target, tmp)
            self.sftp.posix_rename(tmp, path)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if self.dead:
                raise self.lost(exc) from None
            raise RemoteError(f"ssh {self.label}: linking {path} -> {target}: {exc}") from None

    def put_file(self, local: str, path: str, mode: int = 0o600) -> None:
        tmp = f"{path}.seed-tmp"
        self.sftp.put(local, tmp)
        self.sftp.chmod(tmp, mode)
        self.sftp.posix_rename(tmp, path)

    def get_bytes(self, path: str) -> bytes:
        buf = io.BytesIO()
        self.sftp.getfo(path, buf)
        return buf.getvalue()

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def is_dir(self, path: str) -> bool:
        try:
            st = self.sftp.stat(path)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode or 0)

    def readlink(self, path: str) -> str | None:
        try:
            target = self.sftp.readlink(path)
        except (FileNotFoundError, OSError):
            return None
        return str(target) if target else None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(self.sftp.listdir(path))
        except FileNotFoundError:
            return []

    def mkdirs(self, *paths: str, mode: int = 0o755) -> None:
        """`mkdir -p` each path over SFTP (no shell: ~0.1 s less per call); the leaves get
        `mode`, missing parents 0700."""
        try:
            for path in paths:
                parts = [p for p in path.split("/") if p]
                prefix = "/" if path.startswith("/") else ""
                for i in range(len(parts)):
                    here = prefix + "/".join(parts[: i + 1])
                    try:
                        self.sftp.stat(here)
                    except FileNotFoundError:
                        try:
                            self.sftp.mkdir(here, 0o700)
                        except OSError:
                            if not self.exists(here):  # not a lost race with another mkdir
                                raise
                self.sftp.chmod(path, mode)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if self.dead:
                raise self.lost(exc) from None
            raise RemoteError(f"ssh {self.label}: creating directories {paths}: {exc}") from None

    @contextmanager
    def tunnel(self, remote_host: str, remote_port: int) -> Iterator[int]:
        """Forward a free local port on 127.0.0.1 to remote_host:remote_port as seen from here."""
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"ssh {self.label}: no connection for a tunnel")
        forwarder = _Forwarder(transport, remote_host, remote_port)
        try:
            yield forwarder.port
        finally:
            forwarder.close()


class _Forwarder:
    """127.0.0.1:<free port> → remote_host:remote_port through one SSH transport.

    Each accepted connection gets its own direct-tcpip channel and one pump thread. A
    channel the server refuses (the database restarting) closes just that client
    connection, which the client sees as a lost connection and may retry; the
    forwarder itself keeps listening. (Fabric's forward_local let such a refusal end
    its tunnel thread and re-raise at exit.)
    """

    def __init__(self, transport: paramiko.Transport, remote_host: str, remote_port: int) -> None:
        self.transport = transport
        self.target = (remote_host, remote_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.closed = threading.Event()
        threading.Thread(target=self._accept, name=f"seed-tunnel-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        # whatever ends it (a refused channel, EOF, a reset, the forwarder closing) ends
        # this one client connection quietly: its peer sees EOF; nothing is raised
        chan = None
        with contextlib.suppress(Exception):
            chan = self.transport.open_channel(
                "direct-tcpip", self.target, client.getpeername(), timeout=10
            )
            self._copy(client, chan)
        for end in (chan, client):
            with contextlib.suppress(Exception):
                if end is not None:
                    end.close()

    def _copy(self, client: socket.socket, chan: paramiko.Channel) -> None:
        while not self.closed.is_set():
            ready, _, _ = select.select([client, chan], [], [], 0.5)
            if client in ready:
                data = client.recv(65536)
                if not data:
                    return
                chan.sendall(data)
            if chan in ready:
                data = chan.recv(65536)
                if not data:
                    return
                client.sendall(data)

    def close(self) -> None:
        self.closed.set()
        # shutdown wakes the accept() blocked in the other thread; close alone would not
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def fingerprint(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...` as `ssh-keygen -l` prints it."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"{hostname} not found in known_hosts")
        self.fingerprint = fingerprint(key)


class _RejectNew(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host, keeping the offered key's fingerprint for the message."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """OpenSSH's `StrictHostKeyChecking=accept-new`: an unknown host's key is added to
    known_hosts (and reported); a changed key is still refused (paramiko raises
    BadHostKeyException before asking a policy)."""

    def __init__(self, known_hosts: Path, accepted: list[str]) -> None:
        self.known_hosts = known_hosts
        self.accepted = accepted

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with self.known_hosts.open("a", encoding="ascii") as fh:
            fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.accepted.append(f"{hostname} {fingerprint(key)}")


def _strict_host_keys(
    client: paramiko.SSHClient, known_hosts: Path, accept_new: bool, accepted: list[str]
) -> None:
    client.load_host_keys(str(known_hosts))
    policy: paramiko.MissingHostKeyPolicy = (
        _AcceptNew(known_hosts, accepted) if accept_new else _RejectNew()
    )
    client.set_missing_host_key_policy(policy)


def _stalled(exc: BaseException) -> bool:
    """paramiko's ways of saying the SSH handshake did not finish in time: no banner
    within banner_timeout, or connect()'s timeout over before the handshake (it then
    goes on to authenticate and finds "No existing session")."""
    text = str(exc)
    return any(s in text for s in ("banner", "No existing session", "Negotiation timed out"))


def _short(command: str, limit: int = 60) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JobStatus:
    state: str  # running | done | lost
    exit_code: int | None
    output: str


class RemoteJob:
    """A long command run detached (setsid) on a host: pidfile, log and exit-status file.

    A dropped connection or a killed `fab` leaves the job running and its outcome
    on disk: `poll` (from any later process) reads the status file or finds the pid.
    """

    def __init__(self, remote: Remote, job_dir: str) -> None:
        self.remote = remote
        self.dir = job_dir
        self._offset = 0
        self._pid: int | None = None

    @classmethod
    def start(cls, remote: Remote, job_dir: str, script: str) -> RemoteJob:
        """Upload `script` (bash) to job_dir/run.sh and start it detached."""
        remote.mkdirs(job_dir, mode=0o700)
        remote.put_bytes(script.encode(), posixpath.join(job_dir, "run.sh"), mode=0o700)
        d = q(job_dir)
        inner = "bash ./run.sh > log 2>&1; echo $? > status.tmp && mv status.tmp status"
        # only the setsid'd job goes to the background (braces), so this command returns at
        # once and the pidfile names the job's session leader; --norc: bash started under
        # sshd would read ~/.bashrc again (0.3-0.6 s with pyenv), the environment is inherited
        remote.check(
            f"cd {d} && rm -f status log pid && : > log && "
            f"{{ setsid bash --norc -c {q(inner)} < /dev/null > /dev/null 2>&1 & echo $! > pid; }}",
            f"starting job {job_dir}",
        )
        faults.point(f"{posixpath.basename(job_dir).split('-')[0]} job started")
        return cls(remote, job_dir)

    def poll(self) -> JobStatus:
        """One look over SFTP (no shell on the host): status file, pid liveness, new log."""
        try:
            status = self._read("status")
            state = "done" if status is not None else "running"
            if status is None and not self._alive():
                status = self._read("status")  # it may have ended between the two looks
                state = "done" if status is not None else "lost"
            rest = self._read_log()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self.remote.lost(exc) from None
        code = (status or "").strip()
        exit_code = int(code) if code.lstrip("-").isdigit() else None
        return JobStatus(state, exit_code, rest)

    @property
    def pid(self) -> int | None:
        """The job's session leader (from its pidfile)."""
        if self._pid is None:
            text = (self._read("pid") or "").strip()
            self._pid = int(text) if text.isdigit() else None
        return self._pid

    def exit_code(self) -> int | None:
        """The recorded exit status; None while running or when it died without one."""
        text = (self._read("status") or "").strip()
        return int(text) if text.lstrip("-").isdigit() else None

    def running(self) -> bool:
        """No exit status yet and the session leader alive (a cheap look, no log read)."""
        try:
            return self._read("status") is None and self._alive()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self.remote.lost(exc) from None

    def stop(self, grace: float = 10.0) -> None:
        """TERM the job's whole process group (it is its own session), KILL after `grace`."""
        if not self.running():
            return
        self.remote.run(f"kill -TERM -- -{self.pid} 2>/dev/null || true")
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.running():
            self.remote.run(f"kill -KILL -- -{self.pid} 2>/dev/null || true")
            while self.running() and time.monotonic() < deadline + 5:
                time.sleep(0.2)

    def _read(self, name: str) -> str | None:
        try:
            with self.remote.sftp.open(posixpath.join(self.dir, name), "r") as fh:
                return bytes(fh.read()).decode(errors="replace")
        except FileNotFoundError:
            return None

    def _alive(self) -> bool:
        """The job's session leader exists and is not a zombie (from /proc, Linux hosts)."""
        if self.pid is None:
            return False
        try:
            with self.remote.sftp.open(f"/proc/{self.pid}/stat", "r") as fh:
                stat_line = bytes(fh.read()).decode(errors="replace")
        except (FileNotFoundError, OSError):
            return False
        return stat_line.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])

    def _read_log(self) -> str:
        try:
            with self.remote.sftp.open(posixpath.join(self.dir, "log"), "r") as fh:
                fh.seek(self._offset)
                data = bytes(fh.read())
        except FileNotFoundError:
            return ""
        self._offset += len(data)
        return data.decode(errors="replace")

    def wait(
        self,
        on_output: Callable[[str], None] | None = None,
        interval: float = 0.2,
        timeout: float | None = None,
        on_lost: Callable[[], None] | None = None,
        on_poll: Callable[[], None] | None = None,
    ) -> tuple[int, str]:
        """Poll until the job ends; returns (exit code, whole output). Lost → RemoteError.

        The job runs detached: a dropped SSH connection does not touch it. With `on_lost`
        (which must reconnect this remote), polling goes on after a drop, up to 3 times.
        `on_poll` runs after every look while the job runs (progress measurements)."""
        output: list[str] = []
        started = time.monotonic()
        pause = 0.01
        drops = 0
        while True:
            try:
                status = self.poll()
            except RemoteError:
                if on_lost is None or drops >= 3:
                    raise
                drops += 1
                on_lost()
                continue
            if status.output:
                output.append(status.output)
                if on_output:
                    on_output(status.output)
            if status.state == "done":
                assert status.exit_code is not None
                return status.exit_code, "".join(output)
            if status.state == "lost":
                raise RemoteError(
                    f"job {self.dir} on {self.remote.label} died without an exit status"
                )
            if timeout is not None and time.monotonic() - started > timeout:
                raise RemoteError(f"job {self.dir} on {self.remote.label}: timed out")
            if on_poll:
                on_poll()
            # short jobs end within a few polls; long ones are polled every `interval`
            time.sleep(pause)
            pause = min(interval, pause * 2)
