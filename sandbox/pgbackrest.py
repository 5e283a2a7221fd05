"""The sandbox's pgBackRest (`sandbox.up --pitr`): the cluster's WAL archived into an
encrypted repository on a host of its own.

The repository host is 127.0.0.3 (loopback, like the second app host): Seed reaches it
over the sandbox sshd as it would a real backup server, and its files live under
`<root>/server/repohost/`. The two pgBackRest processes (the cluster's `archive-push` and
`restore` on the database host, `backup` on the repository host) talk TLS with
certificates from the sandbox's own CA: each side checks the other's certificate
(its host name, and the client's CN against `tls-server-auth`), which is what
`StrictHostKeyChecking` is to SSH. TLS rather than SSH because as root the cluster
runs as `postgres`, whose account Debian locks: sshd (UsePAM no) would refuse the
repository host's login to it.

    <root>/pgbackrest/ca.crt, ca.key         the CA (0600 key, ours)
    <root>/pgbackrest/cipher-pass            the repository passphrase (0600), unless
                                             SEED_SANDBOX_PITR_PASS gives one
    <root>/pgbackrest/db/                    the database host's side (owned by the cluster
                                             owner, 0700): pgbackrest.conf, certificates,
                                             log/, lock/, spool/, server.pid
    <root>/server/repohost/etc/pgbackrest.conf   the repository host's (0600, cipher pass)
    <root>/server/repohost/var/lib/pgbackrest    the repository (repo1-path)
    <root>/server/bin/pgbackrest             the database host's command (as the cluster owner)
    <root>/server/bin/pgctl                  stop | start | status of the cluster
    <root>/server/repohost/bin/pgbackrest    the repository host's command
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from seed.errors import ConfigError

REPO_HOST = "127.0.0.3"
DB_HOST = "127.0.0.1"
CIPHER = "aes-256-cbc"
DB_CLIENT_CN = "seed-sandbox-db"
REPO_CLIENT_CN = "seed-sandbox-repo"
PASS_VARIABLE = "SEED_SANDBOX_PITR_PASS"  # noqa: S105 - a variable name
START_TIMEOUT = 20.0


def pgbackrest_path() -> str:
    """The pgBackRest executable (Debian package pgbackrest), or a ConfigError saying so."""
    found = shutil.which("pgbackrest") or (
        "/usr/bin/pgbackrest" if os.access("/usr/bin/pgbackrest", os.X_OK) else None
    )
    if found is None:
        raise ConfigError(
            "pgbackrest not found (Debian package pgbackrest): run `make install-system`"
        )
    return found


@dataclass(frozen=True)
class PitrPaths:
    """Where the sandbox's pgBackRest keeps its files (module docstring)."""

    root: Path

    @property
    def top(self) -> Path:
        return self.root / "pgbackrest"

    @property
    def db(self) -> Path:
        return self.top / "db"

    @property
    def db_conf(self) -> Path:
        return self.db / "pgbackrest.conf"

    @property
    def repohost(self) -> Path:
        return self.root / "server" / "repohost"

    @property
    def repo_conf(self) -> Path:
        return self.repohost / "etc" / "pgbackrest.conf"

    @property
    def repo_path(self) -> Path:
        return self.repohost / "var" / "lib" / "pgbackrest"

    @property
    def db_command(self) -> Path:
        return self.root / "server" / "bin" / "pgbackrest"

    @property
    def pgctl(self) -> Path:
        return self.root / "server" / "bin" / "pgctl"

    @property
    def as_owner(self) -> Path:
        return self.root / "server" / "bin" / "as-owner"

    @property
    def repo_command(self) -> Path:
        return self.repohost / "bin" / "pgbackrest"

    @property
    def db_server_pid(self) -> Path:
        return self.db / "server.pid"

    @property
    def repo_server_pid(self) -> Path:
        return self.repohost / "server.pid"


@dataclass(frozen=True)
class PitrSetup:
    """What `configure` needs from the sandbox: the cluster and who owns it."""

    root: Path
    stanza: str
    pg_data: Path
    pg_port: int
    pg_socket_dir: Path
    pg_bindir: Path
    pg_log: Path
    admin_user: str
    repo_port: int  # the repository host's TLS server
    db_port: int  # the database host's TLS server
    owner: pwd.struct_passwd | None  # the cluster's owner when we are root (else: us)


def _write(path: Path, text: str | bytes, mode: int, owner: pwd.struct_passwd | None) -> None:
    data = text.encode() if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    os.replace(tmp, path)


def _mkdir(path: Path, mode: int, owner: pwd.struct_passwd | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


# --------------------------------------------------------------------------- certificates


def _cert_files(paths: PitrPaths) -> None:
    """The CA, and a server and a client certificate for each side (made once)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key_path, ca_crt_path = paths.top / "ca.key", paths.top / "ca.crt"
    if ca_key_path.exists() and ca_crt_path.exists():
        return
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=3650)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"seed sandbox CA {paths.root}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(cn: str, address: str | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
        )
        if address is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(address), x509.IPAddress(ipaddress.ip_address(address))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    made = {
        "db-server": issue(DB_HOST, DB_HOST),
        "db-client": issue(DB_CLIENT_CN, None),
        "repo-server": issue(REPO_HOST, REPO_HOST),
        "repo-client": issue(REPO_CLIENT_CN, None),
    }
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    for name, (crt, key) in made.items():
        _write(paths.top / "certs" / f"{name}.crt", crt, 0o644, None)
        _write(paths.top / "certs" / f"{name}.key", key, 0o600, None)
    _write(ca_key_path, pem_key(ca_key), 0o600, None)
    _write(ca_crt_path, ca_pem, 0o644, None)


def _cipher_pass(paths: PitrPaths) -> str:
    given = os.environ.get(PASS_VARIABLE)
    if given:
        return given
    path = paths.top / "cipher-pass"
    if not path.exists():
        _write(path, secrets.token_urlsafe(32) + "\n", 0o600, None)
    return path.read_text().strip()


# --------------------------------------------------------------------------- configuration


def archive_settings(setup: PitrSetup) -> str:
    """The cluster's postgresql settings for WAL archiving into the stanza."""
    paths = PitrPaths(setup.root)
    push = f"{pgbackrest_path()} --config={paths.db_conf} --stanza={setup.stanza} archive-push %p"
    return (
        f"wal_level = replica\narchive_mode = on\narchive_command = '{push}'\nmax_wal_senders = 3\n"
    )


def configure(setup: PitrSetup) -> None:
    """Write both sides' pgbackrest.conf, certificates, and the commands Seed runs."""
    paths = PitrPaths(setup.root)
    owner = setup.owner
    _mkdir(paths.top, 0o755, None)
    _cert_files(paths)
    _mkdir(paths.db, 0o700, owner)
    for sub in ("log", "lock", "spool", "tls"):
        _mkdir(paths.db / sub, 0o700, owner)
    certs = paths.top / "certs"
    tls_db = paths.db / "tls"
    for name in ("db-server", "db-client"):
        for ext in ("crt", "key"):
            _write(tls_db / f"{name}.{ext}", (certs / f"{name}.{ext}").read_bytes(), 0o600, owner)
    _write(tls_db / "ca.crt", (paths.top / "ca.crt").read_bytes(), 0o600, owner)
    for sub in ("etc", "var/lib/pgbackrest", "var/log", "var/lock", "tls", "bin"):
        _mkdir(paths.repohost / sub, 0o700, None)
    os.chmod(paths.repohost / "bin", 0o755)  # noqa: S103 - commands only, no secrets
    tls_repo = paths.repohost / "tls"
    for name in ("repo-server", "repo-client"):
        for ext in ("crt", "key"):
            _write(tls_repo / f"{name}.{ext}", (certs / f"{name}.{ext}").read_bytes(), 0o600, None)
    _write(tls_repo / "ca.crt", (paths.top / "ca.crt").read_bytes(), 0o600, None)
    stanza = (
        f"[{setup.stanza}]\n"
        f"pg1-path={setup.pg_data}\n"
        f"pg1-port={setup.pg_port}\n"
        f"pg1-socket-path={setup.pg_socket_dir}\n"
        f"pg1-user={setup.admin_user}\n"
    )
    db_conf = (
        "# Written by Seed on every `sandbox up --pitr` (sandbox/pgbackrest.py).\n"
        "[global]\n"
        f"log-path={paths.db / 'log'}\n"
        f"lock-path={paths.db / 'lock'}\n"
        f"spool-path={paths.db / 'spool'}\n"
        "log-level-console=warn\n"
        "log-level-file=info\n"
        f"repo1-host={REPO_HOST}\n"
        "repo1-host-type=tls\n"
        f"repo1-host-port={setup.repo_port}\n"
        f"repo1-host-ca-file={tls_db / 'ca.crt'}\n"
        f"repo1-host-cert-file={tls_db / 'db-client.crt'}\n"
        f"repo1-host-key-file={tls_db / 'db-client.key'}\n"
        f"tls-server-address={DB_HOST}\n"
        f"tls-server-port={setup.db_port}\n"
        f"tls-server-ca-file={tls_db / 'ca.crt'}\n"
        f"tls-server-cert-file={tls_db / 'db-server.crt'}\n"
        f"tls-server-key-file={tls_db / 'db-server.key'}\n"
        f"tls-server-auth={REPO_CLIENT_CN}={setup.stanza}\n"
        "archive-timeout=60\n"
        # the remote side takes the repository's options from its client: the path too
        f"repo1-path={paths.repo_path}\n"
        # ...and the repository is encrypted on the side that reads it: the client's
        f"repo1-cipher-type={CIPHER}\n"
        f"repo1-cipher-pass={_cipher_pass(paths)}\n"
        "\n" + stanza
    )
    _write(paths.db_conf, db_conf, 0o600, owner)
    repo_conf = (
        "# Written by Seed on every `sandbox up --pitr` (sandbox/pgbackrest.py).\n"
        "[global]\n"
        f"repo1-path={paths.repo_path}\n"
        f"repo1-cipher-type={CIPHER}\n"
        f"repo1-cipher-pass={_cipher_pass(paths)}\n"
        "repo1-retention-full=2\n"
        f"log-path={paths.repohost / 'var/log'}\n"
        f"lock-path={paths.repohost / 'var/lock'}\n"
        "log-level-console=warn\n"
        "log-level-file=info\n"
        "start-fast=y\n"
        f"tls-server-address={REPO_HOST}\n"
        f"tls-server-port={setup.repo_port}\n"
        f"tls-server-ca-file={tls_repo / 'ca.crt'}\n"
        f"tls-server-cert-file={tls_repo / 'repo-server.crt'}\n"
        f"tls-server-key-file={tls_repo / 'repo-server.key'}\n"
        f"tls-server-auth={DB_CLIENT_CN}={setup.stanza}\n"
        "\n" + stanza + f"pg1-host={DB_HOST}\n"
        "pg1-host-type=tls\n"
        f"pg1-host-port={setup.db_port}\n"
        f"pg1-host-ca-file={tls_repo / 'ca.crt'}\n"
        f"pg1-host-cert-file={tls_repo / 'repo-client.crt'}\n"
        f"pg1-host-key-file={tls_repo / 'repo-client.key'}\n"
    )
    _write(paths.repo_conf, repo_conf, 0o600, None)
    exe = pgbackrest_path()
    as_owner = f"runuser -u {shlex.quote(owner.pw_name)} -- " if owner is not None else ""
    _write(
        paths.db_command,
        "#!/bin/sh\n# The database host's pgBackRest, as the cluster's owner.\n"
        f'exec {as_owner}{exe} --config={shlex.quote(str(paths.db_conf))} "$@"\n',
        0o755,
        None,
    )
    _write(
        paths.repo_command,
        "#!/bin/sh\n# The repository host's pgBackRest.\n"
        f'exec {exe} --config={shlex.quote(str(paths.repo_conf))} "$@"\n',
        0o755,
        None,
    )
    _write(
        paths.as_owner,
        "#!/bin/sh\n# Runs its arguments as the cluster's owner (Debian: sudo -u postgres).\n"
        f'exec {as_owner}"$@"\n',
        0o755,
        None,
    )
    pg_ctl = shlex.quote(str(setup.pg_bindir / "pg_ctl"))
    data = shlex.quote(str(setup.pg_data))
    log = shlex.quote(str(setup.pg_log))
    _write(
        paths.pgctl,
        "#!/bin/sh\n"
        "# The sandbox cluster's service: stop | start | status (Debian: pg_ctlcluster).\n"
        'case "$1" in\n'
        f"  stop) exec {as_owner}{pg_ctl} -D {data} -m fast -w -t 60 stop ;;\n"
        f"  start) exec {as_owner}{pg_ctl} -D {data} -l {log} -w -t 600 start ;;\n"
        f"  status) exec {as_owner}{pg_ctl} -D {data} status ;;\n"
        '  *) echo "usage: $0 stop|start|status" >&2; exit 2 ;;\n'
        "esac\n",
        0o755,
        None,
    )


# --------------------------------------------------------------------------- TLS servers


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
    except OSError:
        return False


def _server_pid(pidfile: Path, conf: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return pid if _alive(pid) and str(conf) in cmdline and "server" in cmdline else None


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _start_server(
    conf: Path,
    pidfile: Path,
    log: Path,
    lock: Path,
    address: str,
    port: int,
    owner: pwd.struct_passwd | None,
) -> int:
    pid = _server_pid(pidfile, conf)
    if pid is not None:
        return pid
    if _accepts(address, port):
        raise ConfigError(
            f"port {port} on {address} is already in use, so the sandbox's pgBackRest TLS "
            "server cannot listen there: choose another port"
        )
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [pgbackrest_path(), f"--config={conf}", "server"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=owner.pw_uid if owner is not None else None,
            group=owner.pw_gid if owner is not None else None,
            extra_groups=[] if owner is not None else None,
            # a remote request's options come from its client, which does not send its
            # lock path: without this the server's workers would lock in the shared default
            # /tmp/pgbackrest (another sandbox's stanza of the same name locks there too)
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PGBACKREST_LOCK_PATH": str(lock)},
            cwd="/",
        )
    _write(pidfile, f"{proc.pid}\n", 0o644, owner)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(
                f"the sandbox's pgBackRest TLS server on {address}:{port} exited "
                f"({proc.returncode}): see {log}"
            )
        if _accepts(address, port):
            return proc.pid
        time.sleep(0.05)
    raise ConfigError(f"the sandbox's pgBackRest TLS server did not listen on {address}:{port}")


def start_servers(setup: PitrSetup) -> tuple[int, int]:
    """The TLS servers of both sides (the database host's as the cluster owner)."""
    paths = PitrPaths(setup.root)
    repo = _start_server(
        paths.repo_conf,
        paths.repo_server_pid,
        paths.repohost / "var/log/server.out",
        paths.repohost / "var/lock",
        REPO_HOST,
        setup.repo_port,
        None,
    )
    db = _start_server(
        paths.db_conf,
        paths.db_server_pid,
        paths.db / "log/server.out",
        paths.db / "lock",
        DB_HOST,
        setup.db_port,
        setup.owner,
    )
    return repo, db


def stop_servers(root: Path) -> None:
    """Stop both TLS servers (TERM, then KILL); nothing if they do not run."""
    paths = PitrPaths(root)
    for pidfile, conf in (
        (paths.repo_server_pid, paths.repo_conf),
        (paths.db_server_pid, paths.db_conf),
    ):
        pid = _server_pid(pidfile, conf)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- the stanza


def _run(command: list[str], what: str, timeout: float = 300) -> str:
    res = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"},
    )
    out = res.stdout.decode(errors="replace")
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        last = (err or out.strip() or "(no output)").splitlines()[-1]
        raise ConfigError(f"sandbox pgBackRest: {what} failed (exit {res.returncode}): {last}")
    return out


def create_stanza(setup: PitrSetup) -> None:
    """`stanza-create` on the repository host (idempotent), then `check` from the database
    host: a WAL segment archived through the TLS link proves the whole path."""
    paths = PitrPaths(setup.root)
    _run(
        [str(paths.repo_command), f"--stanza={setup.stanza}", "stanza-create"],
        f"stanza-create on {REPO_HOST}",
    )
    _run(
        [str(paths.db_command), f"--stanza={setup.stanza}", "check"],
        f"check on {DB_HOST} (WAL archiving to {REPO_HOST})",
    )


def environment_section(root: Path, stanza: str, indent: str = "  ") -> str:
    """The `pgbackrest:` mapping (under `backup:`) for an environment file on this sandbox."""
    paths = PitrPaths(root)
    lines = [
        "pgbackrest:",
        f"  stanza: {stanza}",
        f"  repo_host: {REPO_HOST}",
        f"  command: {paths.db_command}",
        f"  repo_command: {paths.repo_command}",
        f"  stop: {paths.pgctl} stop",
        f"  start: {paths.pgctl} start",
        f"  as_owner: {paths.as_owner}",
        f"  verify_dir: {root / 'pg'}",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)
