"""The sandbox against real PostgreSQL, sshd, paramiko and psycopg (no mocks)."""

from __future__ import annotations

import dataclasses
import http.server
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paramiko  # type: ignore[import-untyped, unused-ignore]
import psycopg
import pytest

from sandbox import balancer
from sandbox.servers import (
    SandboxInfo,
    SandboxSpec,
    free_port,
    sandbox_down,
    sandbox_status,
    sandbox_up,
)
from seed.db.pgbin import find_bindir
from seed.errors import ConfigError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs in CI as root)")


def ssh_client(info: SandboxInfo, known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or info.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=info.spec.ssh_port,
        username=info.ssh_user,
        key_filename=str(info.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=10)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


# --------------------------------------------------------------------------- PostgreSQL


def test_admin_and_app_connect_with_pgpass(
    sandbox: SandboxInfo, pg_admin_dsn: str, pg_app_dsn: str
) -> None:
    with psycopg.connect(pg_admin_dsn) as conn:
        row = conn.execute(
            "SELECT current_user, rolsuper, inet_server_addr()::text, current_setting('port')"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (sandbox.spec.admin_user, True, "127.0.0.1/32", str(sandbox.spec.pg_port))
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    with psycopg.connect(pg_app_dsn) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == (sandbox.spec.app_user, sandbox.spec.db_name)


def test_passwords_are_scram_and_wrong_ones_refused(
    sandbox: SandboxInfo, pg_admin_dsn: str
) -> None:
    for user, db in ((sandbox.spec.admin_user, "postgres"), (sandbox.spec.app_user, "shop")):
        dsn = sandbox.conninfo(user, db)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn, password="not-the-password").close()  # noqa: S106
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(dsn, passfile="/dev/null").close()
        # the right password, given explicitly instead of through the passfile
        psycopg.connect(dsn, passfile="/dev/null", password=sandbox.password(user)).close()
    with psycopg.connect(pg_admin_dsn) as conn:
        kinds = conn.execute(
            "SELECT rolname, left(rolpassword, 14) FROM pg_authid WHERE rolname = ANY(%s)"
            " ORDER BY rolname",
            [[sandbox.spec.admin_user, sandbox.spec.app_user]],
        ).fetchall()
        assert [k for _, k in kinds] == ["SCRAM-SHA-256$", "SCRAM-SHA-256$"]
        rules = conn.execute(
            "SELECT type, address, auth_method FROM pg_hba_file_rules ORDER BY line_number"
        ).fetchall()
    for kind, address, method in rules:
        if kind == "local":
            assert method == "trust"
        else:
            assert (kind, address, method) == ("host", "127.0.0.1", "scram-sha-256")
    socket_dir = sandbox.pg_socket_dir.stat()
    assert stat.S_IMODE(socket_dir.st_mode) == 0o700


def test_pgpass_file(sandbox: SandboxInfo) -> None:
    st = sandbox.pgpass.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    lines = [line for line in sandbox.pgpass.read_text().splitlines() if not line.startswith("#")]
    prefix = f"127.0.0.1:{sandbox.spec.pg_port}:*:"
    assert sorted(line.rsplit(":", 1)[0] for line in lines) == [
        prefix + sandbox.spec.admin_user,
        prefix + sandbox.spec.app_user,
    ]
    assert sandbox.password(sandbox.spec.admin_user) != sandbox.password(sandbox.spec.app_user)


def test_app_user_owns_db_and_creates_tables(sandbox: SandboxInfo, pg_app_dsn: str) -> None:
    with psycopg.connect(pg_app_dsn) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert owner == (sandbox.spec.app_user,)
        conn.execute("CREATE TABLE sandbox_probe (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO sandbox_probe (name) VALUES ('x')")
        assert conn.execute("SELECT count(*) FROM sandbox_probe").fetchone() == (1,)
        conn.rollback()


# --------------------------------------------------------------------------- sshd


def test_ssh_login_checks_the_host_key(sandbox: SandboxInfo) -> None:
    line = sandbox.known_hosts.read_text().strip()
    assert line.startswith(f"[127.0.0.1]:{sandbox.spec.ssh_port} ssh-ed25519 AAAA")
    assert stat.S_IMODE(sandbox.client_key.stat().st_mode) == 0o600
    client = ssh_client(sandbox)
    try:
        assert run(client, "id -un") == (0, sandbox.ssh_user + "\n")
        assert run(client, "exit 3")[0] == 3
    finally:
        client.close()

    with (
        tempfile.NamedTemporaryFile("w", suffix="known_hosts") as empty,
        pytest.raises(paramiko.SSHException, match="not found in known_hosts"),
    ):
        ssh_client(sandbox, known_hosts=Path(empty.name)).close()


def test_ssh_refuses_other_keys(sandbox: SandboxInfo) -> None:
    with tempfile.TemporaryDirectory() as d:
        key = Path(d) / "k"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        client = paramiko.SSHClient()
        client.load_host_keys(str(sandbox.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(
                "127.0.0.1",
                port=sandbox.spec.ssh_port,
                username=sandbox.ssh_user,
                key_filename=str(key),
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
        client.close()


def test_sftp_into_server_root(sandbox: SandboxInfo) -> None:
    target = sandbox.server_root / "sftp-probe.txt"
    client = ssh_client(sandbox)
    try:
        sftp = client.open_sftp()
        with sftp.open(str(target), "w") as f:
            f.write(b"hello sandbox\n")
        assert sftp.stat(str(target)).st_size == len(b"hello sandbox\n")
        assert target.read_bytes() == b"hello sandbox\n"
        sftp.remove(str(target))
        sftp.close()
    finally:
        client.close()
    assert not target.exists()


# --------------------------------------------------------------------------- lifecycle


def test_up_again_is_idempotent(sandbox: SandboxInfo) -> None:
    pgpass_before = sandbox.pgpass.read_text()
    host_key_before = sandbox.known_hosts.read_text()
    again = sandbox_up(sandbox.spec)
    assert (again.pg_pid, again.sshd_pid) == (sandbox.pg_pid, sandbox.sshd_pid)
    assert sandbox.pgpass.read_text() == pgpass_before
    assert sandbox.known_hosts.read_text() == host_key_before
    assert again == sandbox


def test_status_shows_running(sandbox: SandboxInfo) -> None:
    status = sandbox_status(sandbox.spec)
    pg, sshd = status["postgres"], status["sshd"]
    assert isinstance(pg, dict) and isinstance(sshd, dict)
    assert (pg["running"], pg["pid"], pg["port"], pg["accepting"]) == (
        True,
        sandbox.pg_pid,
        sandbox.spec.pg_port,
        True,
    )
    assert (sshd["running"], sshd["pid"], sshd["port"]) == (
        True,
        sandbox.sshd_pid,
        sandbox.spec.ssh_port,
    )
    assert status["running"] is True
    assert isinstance(status["app_running"], bool)  # e2e tests may have started the app
    assert status["root"] == str(sandbox.spec.root)


def test_down_up_reuses_data_and_purge_removes_root(
    sandbox_spec_factory: Callable[[], SandboxSpec],
) -> None:
    spec = sandbox_spec_factory()
    info = sandbox_up(spec)
    with psycopg.connect(info.app_conninfo()) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    # an "app" started under the server root, as a deploy would: down stops it too
    shared = info.server_root / "srv" / "shop" / "shared"
    shared.mkdir(parents=True)
    app = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "gunicorn", "master"]
    )
    try:
        (shared / "gunicorn.pid").write_text(f"{app.pid}\n")
        status = sandbox_status(spec)
        assert status["app_running"] is True

        passwords = info.pgpass.read_text()
        sandbox_down(spec)
        assert app.wait(timeout=10) == -15  # SIGTERM
    finally:
        app.kill()
        app.wait()
    status = sandbox_status(spec)
    pg, sshd = status["postgres"], status["sshd"]
    assert isinstance(pg, dict) and isinstance(sshd, dict)
    assert (status["running"], pg["running"], pg["pid"], sshd["running"], sshd["pid"]) == (
        False,
        False,
        None,
        False,
        None,
    )
    sandbox_down(spec)  # idempotent

    again = sandbox_up(spec)
    assert again.pgpass.read_text() == passwords
    assert again.pg_pid != info.pg_pid
    with psycopg.connect(again.app_conninfo()) as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]

    sandbox_down(spec, purge=True)
    assert not spec.root.exists()
    assert sandbox_status(spec)["running"] is False
    sandbox_down(spec, purge=True)  # idempotent on a removed root


def test_port_in_use_is_a_config_error(sandbox_spec_factory: Callable[[], SandboxSpec]) -> None:
    spec = sandbox_spec_factory()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = SandboxSpec(root=spec.root, ssh_port=spec.ssh_port, pg_port=port)
        with pytest.raises(ConfigError, match=f"port {port} .*choose another port"):
            sandbox_up(taken)
        taken = SandboxSpec(root=spec.root, ssh_port=port, pg_port=spec.pg_port)
        with pytest.raises(ConfigError, match=f"port {port} .*choose another port"):
            sandbox_up(taken)


def test_bad_specs_are_refused(sandbox_spec_factory: Callable[[], SandboxSpec]) -> None:
    spec = sandbox_spec_factory()
    with pytest.raises(ConfigError, match="both"):
        sandbox_up(SandboxSpec(root=spec.root, ssh_port=spec.pg_port, pg_port=spec.pg_port))
    with pytest.raises(ConfigError, match="too long for a unix socket"):
        sandbox_up(SandboxSpec(root=spec.root / ("x" * 80), ssh_port=1, pg_port=2))


def test_purge_refuses_a_directory_that_is_not_a_sandbox() -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        (Path(d) / "precious").write_text("keep me")
        spec = SandboxSpec(root=Path(d), ssh_port=free_port(), pg_port=free_port())
        with pytest.raises(ConfigError, match="not a Seed sandbox"):
            sandbox_down(spec, purge=True)
        sandbox_down(spec)  # nothing of ours runs there: nothing to do
        with pytest.raises(ConfigError, match="not a Seed sandbox"):
            sandbox_up(spec)
        assert (Path(d) / "precious").read_text() == "keep me"


def test_free_port_never_repeats() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20


@root_only
def test_root_refuses_a_root_postgres_cannot_enter() -> None:
    private = Path(tempfile.mkdtemp(dir="/var/tmp"))  # mkdtemp makes it 0700
    try:
        spec = SandboxSpec(root=private / "sb", ssh_port=free_port(), pg_port=free_port())
        with pytest.raises(ConfigError, match=f"inside {private}.*'postgres'"):
            sandbox_up(spec)
        assert not (private / "sb").exists()
    finally:
        os.rmdir(private)


@root_only
def test_root_cluster_is_owned_by_postgres(sandbox: SandboxInfo) -> None:
    import pwd

    pg = pwd.getpwnam("postgres")
    for path in (sandbox.pg_data, sandbox.pg_socket_dir):
        assert path.stat().st_uid == pg.pw_uid
    assert sandbox.ssh_user == "root"


# --------------------------------------------------------------------------- pgbin


def test_pgbin_finds_the_server_binaries() -> None:
    bindir = find_bindir()
    for name in ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore"):
        assert os.access(bindir / name, os.X_OK), name


def test_pgbin_picks_the_highest_debian_version(tmp_path: Path) -> None:
    for version in ("9.6", "15", "16", "100-broken"):
        (tmp_path / version / "bin").mkdir(parents=True)
    for version in ("9.6", "15", "16"):
        initdb = tmp_path / version / "bin" / "initdb"
        initdb.write_text("#!/bin/sh\n")
        initdb.chmod(0o755)
    assert find_bindir(debian_root=tmp_path) == tmp_path / "16" / "bin"


def test_pgbin_override_must_hold_initdb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEED_PG_BINDIR", str(tmp_path))
    with pytest.raises(ConfigError, match="SEED_PG_BINDIR"):
        find_bindir()


class _Named(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the address it listens on; /slow/ after a second."""

    def do_GET(self) -> None:
        if self.path == "/slow/":
            time.sleep(1.0)
        body = self.server.server_address[0].encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_balancer_sends_requests_only_to_hosts_in_traffic(
    sandbox_spec_factory: Callable[[], SandboxSpec],
) -> None:
    """HAProxy in front of two app hosts (127.0.0.1, 127.0.0.2); lbctl drains one (after
    its requests finished), never the last one serving, and undrains it; `down` stops it."""
    port, lb = free_port(), free_port()
    backends = (f"127.0.0.1:{port}", f"127.0.0.2:{port}")
    spec = dataclasses.replace(sandbox_spec_factory(), lb_port=lb, app_backends=backends)
    apps = [
        http.server.ThreadingHTTPServer((ip, port), _Named) for ip in ("127.0.0.1", "127.0.0.2")
    ]
    for app in apps:
        threading.Thread(target=app.serve_forever, daemon=True).start()
    lbctl = str(spec.root / "lb" / "lbctl")

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([lbctl, *args], capture_output=True, text=True, timeout=60)

    def served(n: int = 8, path: str = "/") -> set[str]:
        seen = set()
        for _ in range(n):
            with urllib.request.urlopen(f"http://127.0.0.1:{lb}{path}", timeout=10) as r:
                seen.add(r.read().decode())
        return seen

    try:
        info = sandbox_up(spec)
        assert info.lb_pid and sandbox_status(spec)["balancer"]["running"]  # type: ignore[index]
        deadline = time.monotonic() + 10
        while ctl("status").stdout.count(" UP ") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served() == {"127.0.0.1", "127.0.0.2"}

        # requests in flight on both hosts: drain returns once the first host's finished
        slow: list[str] = []

        def fetch() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{lb}/slow/", timeout=10) as r:
                slow.append(r.read().decode())

        fetches = [threading.Thread(target=fetch) for _ in range(2)]
        for t in fetches:
            t.start()
        time.sleep(0.3)
        started = time.monotonic()
        drained = ctl("drain", "127.0.0.1")
        waited = time.monotonic() - started
        for t in fetches:
            t.join(timeout=10)
        assert drained.returncode == 0 and "127.0.0.1 drained" in drained.stdout, drained.stderr
        assert sorted(slow) == ["127.0.0.1", "127.0.0.2"]  # both answered, none cut short
        assert waited >= 0.4, waited
        assert served() == {"127.0.0.2"}

        kept = ctl("drain", "127.0.0.2")  # the only one left serving
        assert kept.returncode == 0 and "kept in traffic" in kept.stdout
        assert served() == {"127.0.0.2"}

        back = ctl("undrain", "127.0.0.1")
        assert back.returncode == 0 and "in traffic" in back.stdout
        assert served() == {"127.0.0.1", "127.0.0.2"}

        unknown = ctl("drain", "127.0.0.9")
        assert unknown.returncode == 1 and "no server '127.0.0.9'" in unknown.stderr
        assert ctl("sideways").returncode == 2

        apps[1].shutdown()  # a host that stops answering: HAProxy counts it out
        apps[1].server_close()
        deadline = time.monotonic() + 10
        while "DOWN" not in ctl("status").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served() == {"127.0.0.1"}
        stuck = ctl("--timeout", "1", "undrain", "127.0.0.2")
        assert stuck.returncode == 1 and "health check fails" in stuck.stderr
    finally:
        for app in apps:
            app.shutdown()
            app.server_close()
    sandbox_down(spec)
    assert sandbox_status(spec)["balancer"]["running"] is False  # type: ignore[index]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", lb)) != 0


def test_a_config_haproxy_refuses_is_one_line_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text("frontend site\n    bind 127.0.0.1:notaport\n")
    with pytest.raises(ConfigError) as info:
        balancer.check_config(balancer.haproxy_path(), config)
    message = str(info.value)
    assert f"config {config}: " in message and "\n" not in message and "[" not in message


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user owns needs root")
def test_a_sandbox_root_another_user_owns_is_refused() -> None:
    """/var/tmp is writable by everyone: a root someone else created (or a link they
    planted to their own directory) is refused before anything is written into it."""
    short = Path(tempfile.mkdtemp(prefix="sb-", dir="/var/tmp"))  # socket paths stay short
    short.chmod(0o755)
    try:
        refused_in(short)
    finally:
        shutil.rmtree(short)


def refused_in(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 54321, 54321)
    planted = tmp_path / "planted"
    planted.symlink_to(theirs)
    fab = str(Path(sys.executable).parent / "fab")
    for root in (theirs, planted):
        res = subprocess.run(
            [fab, "sandbox.up"], cwd=Path(__file__).parents[3], capture_output=True, text=True,
            env={**os.environ, "SEED_SANDBOX_DIR": str(root)}, timeout=120, check=False,
        )  # fmt: skip
        assert res.returncode == 2, res.stdout + res.stderr
        assert res.stderr.strip() == (
            f"seed: sandbox root {root} belongs to uid 54321, not to you: remove it or choose "
            "another root (SEED_SANDBOX_DIR)"
        )
        assert list(theirs.iterdir()) == []
