"""seed.remote.ssh against the session sandbox's real sshd: host-key policy, commands, SFTP files,
detached jobs and tunnels (no mocks: every failure below is produced by a real server)."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sandbox.servers import SandboxInfo, free_port
from seed.config.environment import Environment, Host
from seed.errors import PreflightFailed
from seed.remote.ssh import Remote, RemoteError, RemoteJob, Result, free_local_port, q


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "seed-unit", "-f", str(path)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def with_ssh(env: Environment, **changes: object) -> Environment:
    return dataclasses.replace(env, ssh=dataclasses.replace(env.ssh, **changes))


def open_error(env: Environment, host: Host | None = None) -> str:
    with pytest.raises(PreflightFailed) as info:
        Remote(env, host or env.roles.db).open().close()
    assert info.value.code == 4
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def remote(sandbox_env: Environment) -> Iterator[Remote]:
    """One connection for the module's tests (none of them breaks it)."""
    r = Remote(sandbox_env, sandbox_env.roles.db).open()
    try:
        yield r
    finally:
        r.close()


# --------------------------------------------------------------------------- commands


def test_run_and_check(remote: Remote, sandbox: SandboxInfo) -> None:
    assert remote.label == f"{sandbox.ssh_user}@127.0.0.1:{sandbox.spec.ssh_port}"
    res = remote.run("echo out; echo err >&2; exit 5")
    assert res == Result("echo out; echo err >&2; exit 5", 5, "out\n", "err\n")
    assert not res.ok
    assert res.tail() == "err"
    ok = remote.check("id -un", "asking who")
    assert ok.ok and ok.stdout == f"{sandbox.ssh_user}\n"
    with pytest.raises(RemoteError) as info:
        remote.check("echo partial; echo 'it broke' >&2; exit 4", "frobbing the widget")
    assert str(info.value) == (f"frobbing the widget on {remote.label} failed (exit 4): it broke")
    assert info.value.code == 4


def test_quoting_round_trips(remote: Remote) -> None:
    weird = 'it\'s "a" $HOME `id` $(id) ; rm -rf / \\ * \n new line'
    assert remote.check(f"printf %s {q(weird)}", "printing").stdout == weird


def test_not_connected(sandbox_env: Environment) -> None:
    """A user-facing error (exit code, one line), not a bare RuntimeError."""
    with pytest.raises(RemoteError, match="not connected"):
        Remote(sandbox_env, sandbox_env.roles.db).run("true")


def test_run_timeout_is_a_remote_error(sandbox_env: Environment) -> None:
    own = Remote(sandbox_env, sandbox_env.roles.db).open()  # not the shared connection
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError, match=r"timed out"):
            own.run("sleep 20", timeout=0.5)
        assert time.monotonic() - started < 15  # the command itself would take 20 s
    finally:
        own.close()


# --------------------------------------------------------------------------- files


def test_put_bytes_creates_a_0600_file(remote: Remote, tmp_path: Path) -> None:
    path = tmp_path / "secret.env"
    remote.put_bytes(b"PGPASSWORD='x'\n", str(path))
    assert path.read_bytes() == b"PGPASSWORD='x'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    remote.put_bytes(b"#!/bin/sh\n", str(tmp_path / "run.sh"), mode=0o700)
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sh", "secret.env"]


def test_put_bytes_replaces_atomically(remote: Remote, tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_bytes(b"old content\n")
    path.chmod(0o644)
    with path.open("rb") as old:  # a reader holding the old file
        remote.put_bytes(b"new content\n" * 10000, str(path))
        assert old.read() == b"old content\n"  # renamed over, never rewritten in place
    assert path.read_bytes() == b"new content\n" * 10000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["env"]  # no temp file left


def test_sftp_helpers(remote: Remote, tmp_path: Path) -> None:
    base = tmp_path / "d"
    remote.mkdirs(str(base / "a" / "b"), str(base / "c"), mode=0o700)
    assert stat.S_IMODE((base / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((base / "c").stat().st_mode) == 0o700
    remote.mkdirs(str(base / "x" / "y"), mode=0o755)
    remote.mkdirs(str(base / "x" / "y"), mode=0o755)  # existing: fine
    assert stat.S_IMODE((base / "x").stat().st_mode) == 0o700  # missing parents: private
    assert stat.S_IMODE((base / "x" / "y").stat().st_mode) == 0o755
    (base / "c" / "f").write_bytes(b"\x00\xffdata")
    os.symlink("c/f", base / "link")
    assert remote.get_bytes(str(base / "c" / "f")) == b"\x00\xffdata"
    assert remote.exists(str(base / "c" / "f"))
    assert not remote.exists(str(base / "nope"))
    assert remote.is_dir(str(base / "c"))
    assert not remote.is_dir(str(base / "c" / "f"))
    assert not remote.is_dir(str(base / "nope"))
    assert remote.readlink(str(base / "link")) == "c/f"
    assert remote.readlink(str(base / "c")) is None
    assert remote.readlink(str(base / "nope")) is None
    assert remote.listdir(str(base)) == ["a", "c", "link", "x"]
    assert remote.listdir(str(base / "nope")) == []
    with pytest.raises(RemoteError, match="creating directories"):
        remote.mkdirs(str(base / "c" / "f" / "under-a-file"))


# --------------------------------------------------------------------------- host keys, auth


def test_missing_known_hosts_file(sandbox_env: Environment, tmp_path: Path) -> None:
    env = with_ssh(sandbox_env, known_hosts=tmp_path / "absent")
    message = open_error(env)
    assert f"known_hosts file {tmp_path / 'absent'} not found" in message


def server_fingerprint(sandbox: SandboxInfo) -> str:
    """`ssh-ed25519 SHA256:...` of the sandbox sshd's key, as ssh-keygen -l prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(sandbox.known_hosts)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = out.split()
    return f"ssh-{fields[-1].strip('()').lower()} {fields[1]}"


def test_unknown_host_key_is_refused(
    sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    message = open_error(with_ssh(sandbox_env, known_hosts=empty))
    assert "host key unknown" in message
    assert str(empty) in message
    assert f"it offered {server_fingerprint(sandbox)}" in message
    assert "--accept-new-host-keys" in message
    assert empty.read_text() == ""


def test_accept_new_adds_an_unknown_key_once(
    sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    remote = Remote(with_ssh(sandbox_env, known_hosts=known, accept_new=True), sandbox_env.roles.db)
    remote.open()
    assert remote.run("echo hi").stdout.strip() == "hi"
    remote.close()
    port = sandbox.spec.ssh_port
    assert remote.accepted_keys == [f"[127.0.0.1]:{port} {server_fingerprint(sandbox)}"]
    line = known.read_text()
    assert line.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ") and line.count("\n") == 1
    # from now on the key is known: strict checking connects, nothing more is added
    strict = Remote(with_ssh(sandbox_env, known_hosts=known), sandbox_env.roles.db).open()
    strict.close()
    assert strict.accepted_keys == [] and known.read_text() == line


def test_changed_host_key_is_refused(
    sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    other = keygen(tmp_path / "other_host_key")
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sandbox.spec.ssh_port} {kind} {blob}\n")
    message = open_error(with_ssh(sandbox_env, known_hosts=known))
    assert "host key CHANGED" in message
    assert "refusing to connect" in message
    assert f"offered {server_fingerprint(sandbox)}" in message
    assert "SHA256:" in message.split(f"{known} has ")[1]
    # --accept-new-host-keys never accepts a changed key
    before = known.read_text()
    message = open_error(with_ssh(sandbox_env, known_hosts=known, accept_new=True))
    assert "host key CHANGED" in message and known.read_text() == before


def test_refused_port_is_retried_then_named(sandbox_env: Environment) -> None:
    port = free_port()
    host = Host("127.0.0.1", sandbox_env.roles.db.user, port)
    started = time.monotonic()
    message = open_error(sandbox_env, host)
    assert time.monotonic() - started >= 3.0  # two retries, 1 s then 2 s apart
    assert message == (
        f"ssh {host.label}: cannot connect: connection refused (nothing listens on port "
        f"{port}); is sshd running and the port right?"
    )


def test_a_port_that_opens_during_the_retries_connects(
    sandbox_env: Environment, sandbox: SandboxInfo
) -> None:
    """A host coming back (sshd restarting): the retry reaches it."""
    port = free_port()
    proxy: list[subprocess.Popen[bytes]] = []

    def start_proxy() -> None:
        time.sleep(1.5)
        proxy.append(
            subprocess.Popen(
                ["python3", "-c", FORWARDER, str(port), str(sandbox.spec.ssh_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    thread = threading.Thread(target=start_proxy)
    thread.start()
    known = sandbox.known_hosts.read_text().split("\n")[0].split()
    extra = Path(str(sandbox.known_hosts) + f".{port}")
    extra.write_text(f"[127.0.0.1]:{port} {known[1]} {known[2]}\n")
    try:
        env = with_ssh(sandbox_env, known_hosts=extra)
        remote = Remote(env, Host("127.0.0.1", sandbox_env.roles.db.user, port)).open()
        assert remote.run("echo back").stdout == "back\n"
        remote.close()
    finally:
        thread.join()
        for p in proxy:
            p.kill()
        extra.unlink()


# a one-connection TCP forwarder: listen on argv[1], relay to 127.0.0.1:argv[2]
FORWARDER = """
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(4)
def pump(a, b):
    while data := a.recv(65536):
        b.sendall(data)
    b.close()
while True:
    c, _ = srv.accept()
    u = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"""


def test_dns_failure_is_named_and_not_retried(sandbox_env: Environment) -> None:
    host = Host("seed-unit-no-such-host.invalid", sandbox_env.roles.db.user, 22)
    started = time.monotonic()
    message = open_error(sandbox_env, host)
    assert time.monotonic() - started < 3.0
    assert "cannot connect: DNS lookup of 'seed-unit-no-such-host.invalid' failed" in message


def test_wrong_client_key(sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path) -> None:
    env = with_ssh(sandbox_env, key=keygen(tmp_path / "id_wrong"))
    message = open_error(env)
    assert f"authentication failed for user {sandbox.ssh_user}" in message
    missing = with_ssh(sandbox_env, key=tmp_path / "no_such_key")
    assert "key file" in open_error(missing)


def test_through_a_gateway(sandbox_env: Environment, sandbox: SandboxInfo) -> None:
    gateway = f"{sandbox.ssh_user}@127.0.0.1:{sandbox.spec.ssh_port}"
    r = Remote(with_ssh(sandbox_env, gateway=gateway), sandbox_env.roles.db).open()
    try:
        assert r.check("echo via-gateway", "hop").stdout == "via-gateway\n"
    finally:
        r.close()


# --------------------------------------------------------------------------- jobs


def test_job_exit_code_and_output(remote: Remote, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    seen: list[str] = []
    job = RemoteJob.start(remote, str(job_dir), "echo first\necho 'to stderr' >&2\nexit 3\n")
    code, output = job.wait(on_output=seen.append, interval=0.05, timeout=30)
    assert code == 3
    assert output == "first\nto stderr\n"
    assert "".join(seen) == output
    assert (job_dir / "status").read_text().strip() == "3"
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    # a later process (a fresh RemoteJob on the same dir) still reads the outcome
    status = RemoteJob(remote, str(job_dir)).poll()
    assert (status.state, status.exit_code, status.output) == ("done", 3, output)


def test_job_succeeds_with_zero(remote: Remote, tmp_path: Path) -> None:
    job = RemoteJob.start(remote, str(tmp_path / "job"), "set -e\ntrue\n")
    assert job.wait(interval=0.05, timeout=30) == (0, "")


def test_poll_without_a_job_is_lost(remote: Remote, tmp_path: Path) -> None:
    status = RemoteJob(remote, str(tmp_path / "never-started")).poll()
    assert (status.state, status.exit_code) == ("lost", None)
    with pytest.raises(RemoteError, match="died without an exit status"):
        RemoteJob(remote, str(tmp_path / "never-started")).wait()


def test_job_runs_detached(remote: Remote, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    started = time.monotonic()
    job = RemoteJob.start(remote, str(job_dir), "echo begun\nsleep 1.2\necho done\n")
    assert time.monotonic() - started < 1.0, "start waited for the job"
    pid = int((job_dir / "pid").read_text())
    os.kill(pid, 0)  # alive
    status = job.poll()
    assert status.state == "running"
    with pytest.raises(RemoteError, match="timed out"):
        job.wait(interval=0.05, timeout=0.2)
    code, _ = job.wait(interval=0.05, timeout=30)
    assert code == 0


def test_killed_job_is_lost(remote: Remote, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job = RemoteJob.start(remote, str(job_dir), "sleep 1.5\n")
    pid = int((job_dir / "pid").read_text())
    remote.check(f"kill -9 {pid}", "killing the job")
    deadline = time.monotonic() + 5
    while (status := job.poll()).state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (status.state, status.exit_code) == ("lost", None)
    with pytest.raises(RemoteError, match="died without an exit status"):
        job.wait(interval=0.05)


# --------------------------------------------------------------------------- tunnel


def test_tunnel_reaches_postgres(remote: Remote, sandbox: SandboxInfo) -> None:
    admin = sandbox.spec.admin_user
    params = {
        "host": "127.0.0.1",
        "user": admin,
        "dbname": "postgres",
        "password": sandbox.password(admin),
        "connect_timeout": 5,
    }
    with remote.tunnel("127.0.0.1", sandbox.spec.pg_port) as port:
        assert port != sandbox.spec.pg_port
        # retried: the listener may lag behind (test_tunnel_listens_before_it_yields)
        deadline = time.monotonic() + 3
        while True:
            try:
                conn = psycopg.connect(port=port, **params)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        with conn:
            row = conn.execute("select current_user, current_setting('port')").fetchone()
            assert row == (admin, str(sandbox.spec.pg_port))
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(port=port, **params).close()  # the tunnel is gone


def test_tunnel_listens_before_it_yields(remote: Remote, sandbox: SandboxInfo) -> None:
    for _ in range(200):  # ~10 ms each; with the race, refusals come within a few tries
        with remote.tunnel("127.0.0.1", sandbox.spec.pg_port) as port:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_refused_target_closes_one_connection_not_the_tunnel(remote: Remote) -> None:
    """A database restarting refuses the forwarded connection: that client connection
    ends, the tunnel keeps listening, and once the target is back it reaches it."""
    target = free_local_port()
    with remote.tunnel("127.0.0.1", target) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.settimeout(5)
            assert client.recv(10) == b""  # closed by the tunnel: nothing listens there
        with socket.socket() as server:
            server.bind(("127.0.0.1", target))
            server.listen(1)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                peer, _ = server.accept()
                with peer:
                    client.sendall(b"ping")
                    assert peer.recv(4) == b"ping"
                    peer.sendall(b"pong")
                    client.settimeout(5)
                    assert client.recv(4) == b"pong"


def test_free_local_port() -> None:
    port = free_local_port()
    assert 1024 <= port <= 65535


def test_ssh_config_aliases_hosts(
    sandbox_env: Environment, sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """An ~/.ssh/config entry: HostName, Port and IdentityFile apply where the
    environment file left the defaults; what the file states wins."""
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host seed-alias\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sandbox.spec.ssh_port}\n"
        f"    IdentityFile {sandbox.client_key}\n"
    )
    env = with_ssh(sandbox_env, config_file=config, key=None, port_given=False)
    user = sandbox_env.roles.db.user
    alias = Host("seed-alias", user, 22, port_default=True)
    remote = Remote(env, alias).open()
    assert remote.run("echo via-alias").stdout == "via-alias\n"
    remote.close()
    # a port written in the host entry is not overridden by the config
    port = free_port()
    message = open_error(
        env,
        Host("seed-alias", user, port),
    )
    assert f"nothing listens on port {port}" in message
    # no config: the alias is just an unknown name
    message = open_error(with_ssh(env, config_file=None), alias)
    assert "DNS lookup of 'seed-alias' failed" in message
