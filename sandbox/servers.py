"""The sandbox: real PostgreSQL and sshd on this one machine (DESIGN: Tests use real components).

Everything lives under one state dir (`SandboxSpec.root`) *outside* the clone, so
that the `postgres` user can enter it when we run as root:

    <root>/.seed-sandbox      marker: `down --purge` only ever removes a marked dir
    <root>/.lock              flock: one up/down at a time per root
    <root>/sandbox.json       spec + paths + pids (read by status and down)
    <root>/pgpass             0600, libpq format, admin and app passwords
    <root>/pg/data            the cluster (0700, owned by the cluster owner)
    <root>/pg/run             unix socket dir (0700, `trust` only here)
    <root>/pg/log/postgresql.log
    <root>/ssh/               0700: host key, client key, authorized_keys,
                              known_hosts, sshd_config, sshd.pid, sshd.log
    <root>/server/            the "server's" filesystem (deploy_to, backups, state)
    <root>/lb/                the load balancer (sandbox.balancer): haproxy.cfg, haproxy.pid,
                              admin.sock (0600), lbctl (its drain/undrain command)

Two "hosts" share the machine: sshd listens on 127.0.0.1 and 127.0.0.2 (the whole of
127/8 is loopback on Linux), so an environment can name two app hosts, each with its own
deploy_to and APP_BIND, behind the balancer.

As root the cluster is owned by `postgres` (initdb refuses root) and its
programs run through `runuser -u postgres --`; as a normal user they run
directly and sshd can only log that user in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import itertools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko  # type: ignore[import-untyped, unused-ignore]
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sandbox import balancer as sandbox_lb
from sandbox import pgbackrest as sandbox_pitr
from seed.db.pgbin import find_bindir
from seed.errors import ConfigError

SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.1"
# the addresses sshd answers on: two app hosts and the pgBackRest repository host
HOSTS = (HOST, "127.0.0.2", sandbox_pitr.REPO_HOST)
POSTGRES_OS_USER = "postgres"
MARKER = ".seed-sandbox"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; stay well below
STOP_TIMEOUT = 10.0
START_TIMEOUT = 60

# Directories the app-pidfile search never descends into (big and irrelevant).
_PRUNE = {"releases", "venvs", "site-packages", "node_modules", ".git", "__pycache__", "backups"}


@dataclass(frozen=True)
class SandboxSpec:
    """What to build. `root` must be outside any 0700 home (postgres must traverse it as root)."""

    root: Path
    ssh_port: int
    pg_port: int
    db_name: str = "shop"
    app_user: str = "shop"
    admin_user: str = "postgres"
    # the load balancer (sandbox.balancer): 0 = none; the app hosts' host:port it balances
    lb_port: int = 0
    app_backends: tuple[str, ...] = ()
    health_path: str = "/health/"
    # pgBackRest (sandbox.pgbackrest): WAL archiving into an encrypted repository on the
    # host 127.0.0.3; its two TLS servers' ports
    pitr: bool = False
    repo_tls_port: int = 0
    db_tls_port: int = 0


@dataclass(frozen=True)
class SandboxInfo:
    """A running sandbox: where everything is and how to reach it."""

    spec: SandboxSpec
    ssh_user: str
    client_key: Path
    known_hosts: Path
    pgpass: Path
    server_root: Path
    pg_bindir: Path
    pg_data: Path
    pg_socket_dir: Path
    pg_log: Path
    sshd_config: Path
    sshd_log: Path
    sshd_pidfile: Path
    state_file: Path
    pg_pid: int
    sshd_pid: int
    lb_pid: int | None = None
    host: str = HOST

    @property
    def root(self) -> Path:
        return self.spec.root

    def conninfo(self, user: str, dbname: str) -> str:
        """libpq conninfo over TCP 127.0.0.1 with `passfile` = our pgpass (no password inline)."""
        return make_conninfo(
            host=self.host,
            port=str(self.spec.pg_port),
            user=user,
            dbname=dbname,
            passfile=str(self.pgpass),
            connect_timeout="10",
        )

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        return self.conninfo(self.spec.admin_user, dbname)

    def app_conninfo(self) -> str:
        return self.conninfo(self.spec.app_user, self.spec.db_name)

    def password(self, user: str) -> str:
        """The sandbox password of `user` (from the pgpass file)."""
        pw = _read_pgpass(self.pgpass).get(user)
        if pw is None:
            raise ConfigError(
                f"no password for {user} in {self.pgpass}: run `sandbox up` again to recreate it"
            )
        return pw

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": _spec_to_dict(self.spec),
            "ssh_user": self.ssh_user,
            "host": self.host,
            "client_key": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "pgpass": str(self.pgpass),
            "server_root": str(self.server_root),
            "pg_bindir": str(self.pg_bindir),
            "pg_data": str(self.pg_data),
            "pg_socket_dir": str(self.pg_socket_dir),
            "pg_log": str(self.pg_log),
            "sshd_config": str(self.sshd_config),
            "sshd_log": str(self.sshd_log),
            "sshd_pidfile": str(self.sshd_pidfile),
            "state_file": str(self.state_file),
            "pg_pid": self.pg_pid,
            "sshd_pid": self.sshd_pid,
            "lb_pid": self.lb_pid,
        }


def _spec_to_dict(spec: SandboxSpec) -> dict[str, Any]:
    return {
        "root": str(spec.root),
        "ssh_port": spec.ssh_port,
        "pg_port": spec.pg_port,
        "db_name": spec.db_name,
        "app_user": spec.app_user,
        "admin_user": spec.admin_user,
        "lb_port": spec.lb_port,
        "app_backends": list(spec.app_backends),
        "pitr": spec.pitr,
        "repo_tls_port": spec.repo_tls_port,
        "db_tls_port": spec.db_tls_port,
    }


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def state(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def pgpass(self) -> Path:
        return self.root / "pgpass"

    @property
    def server(self) -> Path:
        return self.root / "server"

    @property
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def pg_data(self) -> Path:
        return self.pg / "data"

    @property
    def pg_run(self) -> Path:
        return self.pg / "run"

    @property
    def pg_logdir(self) -> Path:
        return self.pg / "log"

    @property
    def pg_log(self) -> Path:
        return self.pg_logdir / "postgresql.log"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def host_key(self) -> Path:
        return self.ssh / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.ssh / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    @property
    def sshd_config(self) -> Path:
        return self.ssh / "sshd_config"

    @property
    def sshd_pid(self) -> Path:
        return self.ssh / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.ssh / "sshd.log"

    @property
    def lb(self) -> Path:
        return self.root / "lb"

    @property
    def lb_config(self) -> Path:
        return self.lb / "haproxy.cfg"

    @property
    def lb_pid(self) -> Path:
        return self.lb / "haproxy.pid"

    @property
    def lb_admin(self) -> Path:
        return self.lb / "admin.sock"

    @property
    def lbctl(self) -> Path:
        return self.lb / "lbctl"


def _paths(spec: SandboxSpec) -> _Paths:
    return _Paths(Path(os.path.abspath(spec.root)))


# --------------------------------------------------------------------------- small helpers


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (never the same one twice per process)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise ConfigError("could not find a free TCP port on 127.0.0.1: free some ports and retry")


def _port_in_use(port: int) -> bool:
    """True if something listens on 127.0.0.1:port (bind test, TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _port_accepts(port: int) -> bool:
    """True if a socket LISTENs on 127.0.0.1:port (or the wildcard).

    Read from /proc/net/tcp rather than by connecting: a probe connection would
    show up in sshd's log as a pre-auth disconnect and count against MaxStartups.
    """
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            return False
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    return any(f[1] in wanted and f[3] == "0A" for f in (ln.split() for ln in lines) if len(f) > 3)


def _is_root() -> bool:
    return os.geteuid() == 0


def _local_user() -> str:
    """The user we run as, from the uid (not $USER, which sudo/su may leave stale)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise ConfigError(
            f"uid {os.geteuid()} has no entry in /etc/passwd, so sshd cannot log it in: "
            "run the sandbox as a user that exists"
        ) from None


def _postgres_pw() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        raise ConfigError(
            f"no '{POSTGRES_OS_USER}' system user to own the sandbox cluster (running as root): "
            "install PostgreSQL (make install-system)"
        ) from None


def _runuser() -> str:
    for cand in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise ConfigError(
        "runuser not found (util-linux): install util-linux to run the sandbox as root"
    )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _clean_env() -> dict[str, str]:
    """Our environment without libpq variables, which would redirect initdb/pg_ctl/psycopg."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _write_file(path: Path, text: str, mode: int, owner: pwd.struct_passwd | None = None) -> bool:
    """Atomically write `text` if it differs; returns True when the file changed."""
    try:
        if path.read_text() == text:
            os.chmod(path, mode)
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner.pw_uid, owner.pw_gid)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def _mkdir(path: Path, mode: int, owner: pwd.struct_passwd | None = None) -> None:
    path.mkdir(exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _user_name(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _makedirs_0755(path: Path) -> None:
    """Create `path` and any missing parents, each 0755 whatever the umask."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        os.chmod(d, 0o755)  # noqa: S103 - postgres (as root) must traverse it


def _traversal_blocker(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first existing directory on `path` that `user` cannot enter, by mode bits."""
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    real = path.resolve()
    for d in [*reversed(real.parents), real]:
        try:
            st = d.stat()
        except FileNotFoundError:
            return None
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return d
    return None


# --------------------------------------------------------------------------- processes


def _proc_state(pid: int) -> str | None:
    """Process state letter from /proc, None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[0]


def _alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            after = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(after[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return not any(_alive(p) for p in pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise ConfigError(
            f"not allowed to stop process {pid} of the sandbox: run as the user who started it"
        ) from None


def _terminate(pid: int, with_descendants: bool = True, timeout: float = STOP_TIMEOUT) -> None:
    """TERM `pid` (and its descendants), wait, then KILL whatever is left."""
    group = [pid, *(_descendants(pid) if with_descendants else [])]
    for p in group:
        _signal(p, signal.SIGTERM)
    if _wait_gone(group, timeout):
        return
    for p in group:
        if _alive(p):
            _signal(p, signal.SIGKILL)
    _wait_gone(group, 5.0)


# --------------------------------------------------------------------------- pgpass


def _pgpass_fields(line: str) -> list[str]:
    fields, cur, esc = [], [], False
    for ch in line:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ":":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    fields.append("".join(cur))
    return fields


def _read_pgpass(path: Path) -> dict[str, str]:
    """user -> password for the 127.0.0.1 lines of a pgpass file ({} if absent)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        f = _pgpass_fields(line)
        if len(f) == 5 and f[0] in (HOST, "*"):
            out.setdefault(f[3], f[4])
    return out


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _ensure_passwords(spec: SandboxSpec, paths: _Paths) -> dict[str, str]:
    """Reuse the passwords in <root>/pgpass, generate the missing ones; (re)write the file."""
    pws = _read_pgpass(paths.pgpass)
    for user in (spec.admin_user, spec.app_user):
        if not pws.get(user):
            pws[user] = secrets.token_urlsafe(24)
    lines = ["# Seed sandbox passwords (generated; reused by `sandbox up`)"]
    for user in (spec.admin_user, spec.app_user):
        lines.append(
            ":".join(
                [HOST, str(spec.pg_port), "*", _pgpass_escape(user), _pgpass_escape(pws[user])]
            )
        )
    _write_file(paths.pgpass, "\n".join(lines) + "\n", 0o600)
    return {u: pws[u] for u in (spec.admin_user, spec.app_user)}


# --------------------------------------------------------------------------- PostgreSQL


class _Pg:
    def __init__(self, spec: SandboxSpec, paths: _Paths) -> None:
        self.spec = spec
        self.paths = paths
        self.bindir = find_bindir()
        self.owner = _postgres_pw() if _is_root() else None

    def run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = args
        if self.owner is not None:
            cmd = [_runuser(), "-u", self.owner.pw_name, "--", *args]
        return subprocess.run(
            cmd,
            cwd=self.paths.pg,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def exe(self, name: str) -> str:
        return str(self.bindir / name)

    def pid(self) -> int | None:
        pid = _read_pid(self.paths.pg_data / "postmaster.pid")
        if pid is not None and _alive(pid) and str(self.paths.pg_data) in _cmdline(pid):
            return pid
        return None

    def running_port(self) -> int | None:
        try:
            lines = (self.paths.pg_data / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def locale(self) -> str:
        try:
            out = subprocess.run(
                ["locale", "-a"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "C"
        names = {n.strip().lower().replace("-", "") for n in out.splitlines()}
        return "C.UTF-8" if "c.utf8" in names else "C"

    def dirs(self) -> None:
        _mkdir(self.paths.pg, 0o755, self.owner)
        _mkdir(self.paths.pg_run, 0o700, self.owner)
        _mkdir(self.paths.pg_logdir, 0o755, self.owner)

    def initdb(self, admin_password: str) -> None:
        data = self.paths.pg_data
        if (data / "PG_VERSION").exists():
            return
        if data.exists():  # a half-made cluster from an interrupted first `up`
            shutil.rmtree(data)
        pwfile = self.paths.pg / ".initdb-pw"
        _write_file(pwfile, admin_password + "\n", 0o600, self.owner)
        try:
            locale = self.locale()
            res = self.run(
                [
                    self.exe("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.spec.admin_user,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    f"--locale={locale}",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ConfigError(
                f"initdb of the sandbox cluster in {data} failed: {last} — fix it, "
                f"or remove {self.paths.root} and run `sandbox up` again"
            )

    def configure(self) -> bool:
        """Write our settings and pg_hba.conf; True if anything changed."""
        data = self.paths.pg_data
        conf = data / "postgresql.conf"
        include = "include_if_exists = 'seed.conf'"
        changed = False
        text = conf.read_text()
        if include not in text:
            text = text.rstrip("\n") + f"\n\n# Seed sandbox settings\n{include}\n"
            _write_file(conf, text, 0o600, self.owner)
            changed = True
        seed_conf = (
            "# Written by Seed on every `sandbox up`; edit sandbox/servers.py instead.\n"
            f"listen_addresses = '{HOST}'\n"
            f"port = {self.spec.pg_port}\n"
            f"unix_socket_directories = '{self.paths.pg_run}'\n"
            "unix_socket_permissions = 0700\n"
            "password_encryption = 'scram-sha-256'\n"
            "fsync = on\n"
            "log_line_prefix = '%m [%p] %q%u@%d/%a '\n"
        )
        if self.spec.pitr:
            seed_conf += sandbox_pitr.archive_settings(self.pitr_setup())
        changed |= _write_file(data / "seed.conf", seed_conf, 0o600, self.owner)
        hba = (
            "# Written by Seed on every `sandbox up`.\n"
            "# trust only through the unix socket, whose directory is 0700 (cluster owner).\n"
            "local   all             all                     trust\n"
            "local   replication     all                     trust\n"
            f"host    all             all     {HOST}/32    scram-sha-256\n"
            f"host    replication     all     {HOST}/32    scram-sha-256\n"
        )
        changed |= _write_file(data / "pg_hba.conf", hba, 0o600, self.owner)
        return changed

    def pitr_setup(self) -> sandbox_pitr.PitrSetup:
        s, p = self.spec, self.paths
        return sandbox_pitr.PitrSetup(
            root=p.root,
            stanza=s.db_name,
            pg_data=p.pg_data,
            pg_port=s.pg_port,
            pg_socket_dir=p.pg_run,
            pg_bindir=self.bindir,
            pg_log=p.pg_log,
            admin_user=s.admin_user,
            repo_port=s.repo_tls_port,
            db_port=s.db_tls_port,
            owner=self.owner,
        )

    def start(self) -> int:
        if _port_in_use(self.spec.pg_port):
            raise _port_taken("PostgreSQL", self.spec.pg_port)
        res = self.run(
            [
                self.exe("pg_ctl"),
                "-D",
                str(self.paths.pg_data),
                "-l",
                str(self.paths.pg_log),
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
            ],
            timeout=START_TIMEOUT + 30,
        )
        pid = self.pid()
        if res.returncode != 0 or pid is None:
            raise ConfigError(
                f"sandbox PostgreSQL did not start on port {self.spec.pg_port} "
                f"(log {self.paths.pg_log}): {_tail(self.paths.pg_log, 3) or res.stderr.strip()}"
            )
        return pid

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        res = self.run(
            [
                self.exe("pg_ctl"),
                "-D",
                str(self.paths.pg_data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(START_TIMEOUT),
                "stop",
            ],
            timeout=START_TIMEOUT + 30,
        )
        if res.returncode != 0 and self.pid() is not None:
            _terminate(pid, with_descendants=False)  # SIGTERM = smart shutdown, then KILL
            if self.pid() is not None:
                raise ConfigError(
                    f"could not stop the sandbox PostgreSQL (pid {pid}): "
                    f"{res.stderr.strip()} — stop it by hand"
                )

    def provision(self, passwords: dict[str, str]) -> None:
        """Admin password, app role (LOGIN) and the app database owned by it. Idempotent."""
        try:
            self._provision(passwords)
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"could not set up roles and database in the sandbox PostgreSQL: {first} — "
                f"see {self.paths.pg_log}, or remove {self.paths.root} to start afresh"
            ) from None

    def _provision(self, passwords: dict[str, str]) -> None:
        s = self.spec
        with psycopg.connect(
            host=str(self.paths.pg_run),
            port=s.pg_port,
            user=s.admin_user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                    sql.Identifier(s.admin_user), sql.Literal(passwords[s.admin_user])
                )
            )
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [s.app_user])
            verb = "ALTER" if exists.fetchone() else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(s.app_user), sql.Literal(passwords[s.app_user])
                )
            )
            row = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [s.db_name]
            ).fetchone()
            if row is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                        sql.Identifier(s.db_name), sql.Identifier(s.app_user)
                    )
                )
            elif row[0] != s.app_user:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(s.db_name), sql.Identifier(s.app_user)
                    )
                )

    def up(self, passwords: dict[str, str]) -> int:
        self.dirs()
        self.initdb(passwords[self.spec.admin_user])
        if self.spec.pitr:  # the archive's configuration and servers before the first WAL
            sandbox_pitr.configure(self.pitr_setup())
            sandbox_pitr.start_servers(self.pitr_setup())
        else:
            sandbox_pitr.stop_servers(self.paths.root)
        changed = self.configure()
        pid = self.pid()
        if pid is not None and (changed or self.running_port() != self.spec.pg_port):
            self.stop()
            pid = None
        if pid is None:
            pid = self.start()
        self.provision(passwords)
        if self.spec.pitr:
            sandbox_pitr.create_stanza(self.pitr_setup())
        return pid


class PortInUse(ConfigError):
    """A sandbox port is taken by another program (callers may retry with other ports)."""

    def __init__(self, message: str, port: int) -> None:
        super().__init__(message)
        self.port = port


def _port_taken(what: str, port: int) -> PortInUse:
    return PortInUse(
        f"port {port} on {HOST} is already in use by another program, so the sandbox "
        f"{what} cannot listen there: choose another port in the sandbox settings "
        "(sandbox.servers.free_port() finds a free one)",
        port,
    )


# --------------------------------------------------------------------------- sshd


def _require_sshd() -> None:
    if not (SSHD.is_file() and os.access(SSHD, os.X_OK)):
        raise ConfigError(
            f"{SSHD} not found (Debian package openssh-server): run `make install-system`"
        )


def _sshd_pid(paths: _Paths) -> int | None:
    """Pid of *our* sshd listener (its command line names our config), None if not running."""
    pid = _read_pid(paths.sshd_pid)
    if pid is not None and _alive(pid):
        cmd = _cmdline(pid)
        if "sshd" in cmd and str(paths.sshd_config) in cmd:
            return pid
    return None


class _Sshd:
    def __init__(self, spec: SandboxSpec, paths: _Paths) -> None:
        self.spec = spec
        self.paths = paths
        self.user = _local_user()

    def pid(self) -> int | None:
        return _sshd_pid(self.paths)

    def keygen(self, key: Path, comment: str) -> None:
        pub = key.with_name(key.name + ".pub")
        if key.exists() and pub.exists():
            return
        key.unlink(missing_ok=True)
        pub.unlink(missing_ok=True)
        exe = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
        try:
            res = subprocess.run(
                [exe, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            error = res.stderr.strip() if res.returncode != 0 else ""
        except OSError as e:
            error = str(e)
        if error:
            raise ConfigError(
                f"ssh-keygen could not create {key}: {error} — "
                "install openssh-client (make install-system)"
            )

    def config_text(self) -> str:
        p = self.paths
        return "\n".join(
            [
                "# Written by Seed on every `sandbox up`; edit sandbox/servers.py instead.",
                f"Port {self.spec.ssh_port}",
                *(f"ListenAddress {address}" for address in HOSTS),
                f"HostKey {p.host_key}",
                f"AuthorizedKeysFile {p.authorized_keys}",
                f"PidFile {p.sshd_pid}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {self.user}",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "PrintMotd no",
                "X11Forwarding no",
                "# No AcceptEnv: clients cannot pass environment variables.",
                "# bash started by sshd reads ~/.bashrc unless SHLVL says it is nested: the",
                "# sandbox's hosts run commands in a plain environment, as a deploy user's would",
                "# be (a developer's rc, e.g. `pyenv init`, cost 0.1-0.6 s per command here).",
                "SetEnv SHLVL=1",
                "",
            ]
        )

    def prepare(self) -> bool:
        p = self.paths
        _mkdir(p.ssh, 0o700)
        self.keygen(p.host_key, f"seed-sandbox-host@{p.root}")
        self.keygen(p.client_key, f"seed-sandbox-client@{p.root}")
        client_pub = p.client_key.with_name(p.client_key.name + ".pub").read_text()
        _write_file(p.authorized_keys, client_pub, 0o600)
        host_pub = p.host_key.with_name(p.host_key.name + ".pub").read_text().split()
        known = "".join(
            f"[{address}]:{self.spec.ssh_port} {host_pub[0]} {host_pub[1]}\n" for address in HOSTS
        )
        _write_file(p.known_hosts, known, 0o644)
        return _write_file(p.sshd_config, self.config_text(), 0o644)

    def start(self) -> int:
        _require_sshd()
        if _port_in_use(self.spec.ssh_port):
            raise _port_taken("sshd", self.spec.ssh_port)
        if _is_root():
            _makedirs_0755(Path("/run/sshd"))  # privilege-separation chroot
        self.paths.sshd_pid.unlink(missing_ok=True)
        res = subprocess.run(
            [str(SSHD), "-f", str(self.paths.sshd_config), "-E", str(self.paths.sshd_log)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_clean_env(),
        )
        if res.returncode != 0:
            raise ConfigError(
                f"sandbox sshd refused to start: {res.stderr.strip() or _tail(self.paths.sshd_log)}"
                f" (log {self.paths.sshd_log})"
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None and _port_accepts(self.spec.ssh_port):
                return pid
            time.sleep(0.02)
        raise ConfigError(
            f"sandbox sshd did not come up on port {self.spec.ssh_port}: "
            f"{_tail(self.paths.sshd_log, 3)} (log {self.paths.sshd_log})"
        )

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            _terminate(pid)
        self.paths.sshd_pid.unlink(missing_ok=True)

    def verify(self) -> None:
        """A real login: known_hosts + RejectPolicy + the client key, then `true`."""
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.paths.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                HOST,
                port=self.spec.ssh_port,
                username=self.user,
                key_filename=str(self.paths.client_key),
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
                banner_timeout=10,
                auth_timeout=10,
            )
            _, stdout, _ = client.exec_command("true", timeout=10)
            status = stdout.channel.recv_exit_status()
            if status != 0:
                raise ConfigError(
                    f"ssh login to the sandbox works but `true` exited {status}: check the "
                    f"login shell of {self.user}"
                )
        except (paramiko.SSHException, OSError) as e:
            log = _tail(self.paths.sshd_log, 3)
            hint = ""
            if "locked" in log:
                hint = f" ({self.user}'s account is locked: sshd with UsePAM no refuses it)"
            raise ConfigError(
                f"ssh login to the sandbox sshd on {HOST}:{self.spec.ssh_port} as {self.user} "
                f"failed: {e}{hint} — see {self.paths.sshd_log}"
            ) from None
        finally:
            client.close()

    def up(self) -> int:
        changed = self.prepare()
        pid = self.pid()
        if pid is not None and changed:
            self.stop()
            pid = None
        if pid is None:
            pid = self.start()
        self.verify()
        return pid


# --------------------------------------------------------------------------- load balancer


class _Balancer:
    """HAProxy in front of the app hosts (sandbox.balancer), when the spec names a port."""

    def __init__(self, spec: SandboxSpec, paths: _Paths) -> None:
        self.spec = spec
        self.paths = paths

    def pid(self) -> int | None:
        pid = _read_pid(self.paths.lb_pid)
        if pid is not None and _alive(pid):
            cmd = _cmdline(pid)
            if "haproxy" in cmd and str(self.paths.lb_config) in cmd:
                return pid
        return None

    def prepare(self) -> bool:
        p = self.paths
        _mkdir(p.lb, 0o755)
        text = sandbox_lb.config_text(
            self.spec.lb_port, self.spec.app_backends, self.spec.health_path, p.lb_admin
        )
        _write_file(p.lbctl, sandbox_lb.lbctl_text(p.lb_admin), 0o755)
        return _write_file(p.lb_config, text, 0o644)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            _terminate(pid)
        self.paths.lb_pid.unlink(missing_ok=True)

    def up(self) -> int | None:
        if not self.spec.lb_port:
            self.stop()
            return None
        haproxy = sandbox_lb.haproxy_path()  # before anything changes
        changed = self.prepare()
        pid = self.pid()
        if pid is not None and changed:
            self.stop()
            pid = None
        if pid is None:
            if _port_in_use(self.spec.lb_port):
                raise _port_taken("the load balancer", self.spec.lb_port)
            sandbox_lb.check_config(haproxy, self.paths.lb_config)
            sandbox_lb.start(haproxy, self.paths.lb_config, self.paths.lb_pid, self.spec.lb_port)
            pid = self.pid()
        return pid


# --------------------------------------------------------------------------- app (gunicorn)


def _app_pidfiles(server_root: Path) -> list[Path]:
    """Every `<server_root>/**/shared/gunicorn.pid`, without walking releases or venvs."""
    found: list[Path] = []
    if not server_root.is_dir():
        return found
    for dirpath, dirnames, _ in os.walk(server_root, onerror=lambda e: None):
        d = Path(dirpath)
        if d.name == "shared":
            candidate = d / "gunicorn.pid"
            if candidate.is_file():
                found.append(candidate)
        dirnames[:] = [n for n in dirnames if n not in _PRUNE]
    return sorted(found)


def _app_pid(pidfile: Path) -> int | None:
    pid = _read_pid(pidfile)
    if pid is not None and _alive(pid) and "gunicorn" in _cmdline(pid):
        return pid
    return None


# --------------------------------------------------------------------------- public API


def _validate(spec: SandboxSpec) -> None:
    ports = {"ssh_port": spec.ssh_port, "pg_port": spec.pg_port}
    if spec.lb_port:
        ports["lb_port"] = spec.lb_port
    if spec.pitr:
        ports["repo_tls_port"] = spec.repo_tls_port
        ports["db_tls_port"] = spec.db_tls_port
    for name, port in ports.items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"sandbox {name} {port} is not a TCP port: use 1-65535")
    for one, two in itertools.combinations(ports, 2):
        if ports[one] == ports[two]:
            raise ConfigError(f"sandbox {one} and {two} are both {ports[one]}: use two ports")
    if spec.lb_port:
        for backend in spec.app_backends:
            sandbox_lb.backend_address(backend)
            if backend == f"{HOST}:{spec.lb_port}":
                raise ConfigError(
                    f"sandbox load balancer port {spec.lb_port} is also an app host's "
                    f"APP_BIND ({backend}): use two ports"
                )
    for name, value in (
        ("db_name", spec.db_name),
        ("app_user", spec.app_user),
        ("admin_user", spec.admin_user),
    ):
        if not value or len(value.encode()) > 63 or "\0" in value:
            raise ConfigError(f"sandbox {name} {value!r} is not a PostgreSQL name: use 1-63 bytes")
    if spec.app_user == spec.admin_user:
        raise ConfigError(f"sandbox app_user and admin_user are both {spec.app_user!r}: use two")
    socket_path = _paths(spec).pg_run / f".s.PGSQL.{spec.pg_port}"
    if len(str(socket_path).encode()) >= SOCKET_PATH_MAX:
        raise ConfigError(
            f"sandbox root {spec.root} is too long for a unix socket path "
            f"({len(str(socket_path))} bytes, limit {SOCKET_PATH_MAX}): choose a shorter root"
        )


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    try:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        raise ConfigError(
            f"cannot open {paths.lock} (permission denied): run as the user who created "
            f"the sandbox in {paths.root}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _prepare_root(spec: SandboxSpec, paths: _Paths) -> None:
    if _is_root():
        pg_user = _postgres_pw()
        blocker = _traversal_blocker(paths.root, pg_user)
        if blocker is not None and blocker != paths.root.resolve():
            raise ConfigError(
                f"sandbox root {paths.root} is inside {blocker}, which the '{pg_user.pw_name}' "
                "user cannot enter: choose a root outside it, e.g. /var/tmp/seed-sandbox-root"
            )
    if paths.root.exists() and not paths.root.is_dir():
        raise ConfigError(
            f"sandbox root {paths.root} exists and is not a directory: choose another"
        )
    # /var/tmp is writable by everyone: a root another user made (or a link they planted)
    # would let them read the sandbox's keys and passwords, or swap its files
    for st in (os.lstat(paths.root), os.stat(paths.root)) if paths.root.exists() else ():
        if st.st_uid != os.geteuid():
            owner = _user_name(st.st_uid)
            raise ConfigError(
                f"sandbox root {paths.root} belongs to {owner}, not to you: remove it or "
                "choose another root (SEED_SANDBOX_DIR)"
            )
    if paths.root.is_dir() and any(paths.root.iterdir()) and not paths.marker.exists():
        raise ConfigError(
            f"sandbox root {paths.root} is a non-empty directory that is not a Seed sandbox: "
            "choose an empty or new directory"
        )
    try:
        _makedirs_0755(paths.root)
        if paths.root.stat().st_uid == os.geteuid() or _is_root():
            os.chmod(paths.root, 0o755)  # noqa: S103 - postgres (as root) must traverse it
        paths.marker.touch()
        _mkdir(paths.server, 0o755)
    except PermissionError as e:
        raise ConfigError(
            f"cannot set up the sandbox root {paths.root} ({e.strerror}: {e.filename}): "
            "choose a root you can write, e.g. /var/tmp/seed-sandbox-<user>"
        ) from None


def _write_state(info: SandboxInfo) -> None:
    state = info.to_dict()
    state["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_file(info.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o644)


def sandbox_up(spec: SandboxSpec) -> SandboxInfo:
    """Start the sandbox (PostgreSQL + sshd) under `spec.root`; reuses what exists and runs."""
    _validate(spec)
    paths = _paths(spec)
    pg = _Pg(spec, paths)  # locates binaries first: fail before touching anything
    _require_sshd()
    if spec.pitr:
        sandbox_pitr.pgbackrest_path()
    sshd = _Sshd(spec, paths)
    _prepare_root(spec, paths)
    with _locked(paths):
        passwords = _ensure_passwords(spec, paths)
        # Port conflicts are reported before the slow work (initdb).
        if pg.pid() is None and _port_in_use(spec.pg_port):
            raise _port_taken("PostgreSQL", spec.pg_port)
        if sshd.pid() is None and _port_in_use(spec.ssh_port):
            raise _port_taken("sshd", spec.ssh_port)
        balancer = _Balancer(spec, paths)
        if spec.lb_port:
            sandbox_lb.haproxy_path()  # missing: say so before the slow work
            if balancer.pid() is None and _port_in_use(spec.lb_port):
                raise _port_taken("the load balancer", spec.lb_port)
        pg_pid = pg.up(passwords)
        sshd_pid = sshd.up()
        lb_pid = balancer.up()
        info = SandboxInfo(
            spec=spec,
            ssh_user=sshd.user,
            client_key=paths.client_key,
            known_hosts=paths.known_hosts,
            pgpass=paths.pgpass,
            server_root=paths.server,
            pg_bindir=pg.bindir,
            pg_data=paths.pg_data,
            pg_socket_dir=paths.pg_run,
            pg_log=paths.pg_log,
            sshd_config=paths.sshd_config,
            sshd_log=paths.sshd_log,
            sshd_pidfile=paths.sshd_pid,
            state_file=paths.state,
            pg_pid=pg_pid,
            sshd_pid=sshd_pid,
            lb_pid=lb_pid,
        )
        _write_state(info)
        return info


def _rmtree(path: Path) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        # A read-only directory (e.g. an unpacked archive) blocks removing its entries.
        # rmtree never follows symlinks; neither may we (chmod would change the target).
        for d in (os.path.dirname(p), p):
            if os.path.isdir(d) and not os.path.islink(d):
                with contextlib.suppress(OSError):
                    os.chmod(d, 0o700)
        func(p)

    shutil.rmtree(path, onerror=onerror)


def sandbox_down(spec: SandboxSpec, purge: bool = False) -> None:
    """Stop the app, sshd and PostgreSQL of the sandbox; with `purge`, remove its root."""
    paths = _paths(spec)
    if not paths.root.exists():
        return
    if not paths.marker.exists():  # never started here: nothing of ours can run
        if not purge:
            return
        if paths.root.is_dir() and not any(paths.root.iterdir()):
            paths.root.rmdir()
            return
        raise ConfigError(
            f"{paths.root} is not a Seed sandbox (no {MARKER}): refusing to remove it — "
            "check the sandbox root"
        )
    with _locked(paths):
        for pidfile in _app_pidfiles(paths.server):
            pid = _app_pid(pidfile)
            if pid is not None:
                _terminate(pid)
        _Balancer(spec, paths).stop()
        _Sshd(spec, paths).stop()
        if (paths.pg_data / "postmaster.pid").exists():
            _Pg(spec, paths).stop()
        sandbox_pitr.stop_servers(paths.root)
    if purge:
        _rmtree(paths.root)


def sandbox_status(spec: SandboxSpec) -> dict[str, object]:
    """What runs and where; never raises because something is not running."""
    paths = _paths(spec)
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(paths.state.read_text())
    # The pidfiles sit in 0700 dirs; another user falls back to the pids recorded in
    # sandbox.json, checked against the live process's command line.
    pg_pid = _read_pid(paths.pg_data / "postmaster.pid") or state.get("pg_pid")
    pg_running = (
        isinstance(pg_pid, int)
        and _alive(pg_pid)
        and "postgres" in _cmdline(pg_pid)
        and str(paths.pg_data) in _cmdline(pg_pid)
    )
    sshd_pid = _sshd_pid(paths)
    recorded_sshd = state.get("sshd_pid")
    if (
        sshd_pid is None
        and isinstance(recorded_sshd, int)
        and _alive(recorded_sshd)
        and str(paths.sshd_config) in _cmdline(recorded_sshd)
    ):
        sshd_pid = recorded_sshd
    lb_pid = _Balancer(spec, paths).pid()
    apps: list[dict[str, object]] = []
    for pidfile in _app_pidfiles(paths.server):
        apid = _app_pid(pidfile)
        apps.append({"pidfile": str(pidfile), "pid": apid, "running": apid is not None})
    return {
        "root": str(paths.root),
        "exists": paths.root.is_dir(),
        "postgres": {
            "running": pg_running,
            "pid": pg_pid if pg_running else None,
            "port": spec.pg_port,
            "accepting": _port_accepts(spec.pg_port) if pg_running else False,
            "data": str(paths.pg_data),
            "socket_dir": str(paths.pg_run),
            "log": str(paths.pg_log),
        },
        "sshd": {
            "running": sshd_pid is not None,
            "pid": sshd_pid,
            "port": spec.ssh_port,
            "accepting": _port_accepts(spec.ssh_port) if sshd_pid is not None else False,
            "config": str(paths.sshd_config),
            "log": str(paths.sshd_log),
        },
        "balancer": {
            "running": lb_pid is not None,
            "pid": lb_pid,
            "port": spec.lb_port,
            "backends": list(spec.app_backends),
            "config": str(paths.lb_config),
            "lbctl": str(paths.lbctl),
        },
        "app": apps,
        "app_running": any(a["running"] for a in apps),
        "running": pg_running
        or sshd_pid is not None
        or lb_pid is not None
        or any(a["running"] for a in apps),
        "pgpass": str(paths.pgpass),
        "server_root": str(paths.server),
        "state_file": str(paths.state),
        "recorded": state,
    }


def environment_text(info: SandboxInfo, server: Path, description: str) -> str:
    """A minimal environment file for a sandbox, every role on 127.0.0.1 (unit tests and
    benchmarks use it; `environments/local.yml` is the annotated one)."""
    return f"""\
description: {description}
ssh:
  port: {info.spec.ssh_port}
  key: {info.client_key}
  known_hosts: {info.known_hosts}
  connect_timeout: 10
  config: none
roles:
  app: [127.0.0.1]
  migrate: 127.0.0.1
  db: 127.0.0.1
state_dir: {server}/state
app:
  repo: {server}/origin.git
  deploy_to: {server}/srv/shop
  settings: shopsite.settings
  env:
    SECRET_KEY: sandbox-only-secret-key
db:
  host: 127.0.0.1
  port: {info.spec.pg_port}
  name: {info.spec.db_name}
  user: {info.spec.app_user}
  admin_user: {info.spec.admin_user}
  passfile: {info.pgpass}
backup:
  dir: {server}/backups
"""
