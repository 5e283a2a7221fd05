"""seed.backup.dump: pgpass lines read by real libpq, the dump script run by real bash and pg_dump
on the sandbox (its sshd as the state host), verification against real corruption."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sandbox.servers import SandboxInfo
from seed.backup.dump import (
    BackupRecord,
    dump_script,
    estimate_size,
    expected_dump_size,
    free_bytes,
    pg_dump_version,
    pgpass_line,
    restore_space,
    take_backup,
    verify_file,
    write_manifest,
)
from seed.backup.verified import table_differences
from seed.config.environment import Environment, Secret, lookup_pgpass
from seed.db.postgres import exported_snapshot
from seed.errors import PreflightFailed
from seed.remote.ssh import Remote

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]


# --------------------------------------------------------------------------- pgpass


def test_pgpass_line_escapes_colon_and_backslash() -> None:
    line = pgpass_line("db:1", 5432, "u\\x", Secret("a:b\\c"))
    assert line == b"db\\:1:5432:*:u\\\\x:a\\:b\\\\c\n"
    assert pgpass_line("h", 1, "u", None) == b"h:1:*:u:\n"


def test_pgpass_line_round_trips_through_lookup(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    path.write_bytes(pgpass_line("127.0.0.1", 5432, "a:dm\\in", Secret("x:y\\z:\\")))
    assert lookup_pgpass("127.0.0.1", 5432, "anydb", "a:dm\\in", path) == "x:y\\z:\\"


def write_passfile(path: Path, line: bytes) -> str:
    path.write_bytes(line)
    path.chmod(0o600)  # libpq ignores a group- or world-readable password file
    return str(path)


def test_libpq_accepts_the_admin_line(sandbox: SandboxInfo, tmp_path: Path) -> None:
    admin = sandbox.spec.admin_user
    line = pgpass_line("127.0.0.1", sandbox.spec.pg_port, admin, Secret(sandbox.password(admin)))
    passfile = write_passfile(tmp_path / "pgpass", line)
    with psycopg.connect(
        host="127.0.0.1",
        port=sandbox.spec.pg_port,
        user=admin,
        dbname="postgres",
        passfile=passfile,
    ) as conn:
        assert conn.execute("select current_user").fetchone() == (admin,)


@pytest.fixture
def escaped_role(pg_admin_dsn: str) -> Iterator[tuple[str, str]]:
    """A login role whose name and password contain `:` and `\\`."""
    name, password = "seed:unit\\role", "pa:ss\\wo:rd\\"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    yield name, password
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def test_libpq_accepts_escaped_colons_and_backslashes(
    sandbox: SandboxInfo, escaped_role: tuple[str, str], tmp_path: Path
) -> None:
    user, password = escaped_role
    line = pgpass_line("127.0.0.1", sandbox.spec.pg_port, user, Secret(password))
    passfile = write_passfile(tmp_path / "pgpass", line)
    params = {"host": "127.0.0.1", "port": sandbox.spec.pg_port, "user": user}
    with psycopg.connect(dbname="postgres", passfile=passfile, **params) as conn:
        assert conn.execute("select current_user").fetchone() == (user,)
    # the unescaped line is not enough: proves the escaping is what made it work
    raw = f"127.0.0.1:{sandbox.spec.pg_port}:*:{user}:{password}\n".encode()
    bad = write_passfile(tmp_path / "raw", raw)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dbname="postgres", passfile=bad, **params).close()


# --------------------------------------------------------------------------- script


def with_db(env: Environment, **changes: Any) -> Environment:
    return dataclasses.replace(env, db=dataclasses.replace(env.db, **changes))


def bash_n(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)


def test_dump_script_is_valid_bash(sandbox_env: Environment) -> None:
    for snapshot in (None, "00000003-0000001B-1"):
        script = dump_script(sandbox_env, "/srv/b/x y.dump", "/tmp/job/pgpass", "seed-t", snapshot)
        res = bash_n(script)
        assert res.returncode == 0, res.stderr
        assert script.startswith("set -euo pipefail\n")
        assert ("--snapshot=00000003-0000001B-1" in script) is (snapshot is not None)
        assert "final='/srv/b/x y.dump'" in script
        assert sandbox_env.db.admin_password is not None
        assert sandbox_env.db.admin_password.reveal() not in script  # only a PGPASSFILE


def test_dump_script_quotes_the_database_name(sandbox_env: Environment) -> None:
    env = with_db(sandbox_env, name='shop"db')
    res = bash_n(dump_script(env, "/srv/b/x.dump", "/tmp/job/pgpass", "seed-t", None))
    assert res.returncode == 0, res.stderr


def test_dump_script_never_expands_the_database_name(
    sandbox_env: Environment, tmp_path: Path
) -> None:
    marker = tmp_path / "expanded"
    env = with_db(sandbox_env, name=f"shop$(touch {marker})`touch {marker}`")
    script = dump_script(env, str(tmp_path / "b" / "x.dump"), str(tmp_path / "pw"), "t", None)
    res = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode != 0  # no such database (and no password file)
    assert f"dumping shop$(touch {marker})" in res.stdout  # printed verbatim
    assert not marker.exists()


def test_dump_script_uses_pg_bin(sandbox_env: Environment) -> None:
    backup = dataclasses.replace(sandbox_env.backup, pg_bin="/opt/pg 15/bin/")
    env = dataclasses.replace(sandbox_env, backup=backup)
    script = dump_script(env, "/srv/b/x.dump", "/tmp/job/pgpass", "seed-t", None)
    assert "'/opt/pg 15/bin/pg_dump' --format=custom" in script
    assert "'/opt/pg 15/bin/pg_restore' --file=/dev/null" in script
    assert bash_n(script).returncode == 0


# --------------------------------------------------------------------------- on the state host


@pytest.fixture(scope="module")
def remote(sandbox_env: Environment) -> Iterator[Remote]:
    """One connection for the module's tests (none of them breaks it)."""
    r = Remote(sandbox_env, sandbox_env.state_host).open()
    try:
        yield r
    finally:
        r.close()


def test_free_bytes(remote: Remote, tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    local = st.f_bavail * st.f_frsize
    for path in (str(tmp_path), str(tmp_path / "not" / "yet" / "there")):
        free = free_bytes(remote, path)
        assert abs(free - local) <= max(local // 100, 64 * 2**20), (free, local)
    assert free_bytes(remote, "relative/path") > 0


def test_pg_dump_version(remote: Remote, sandbox: SandboxInfo, sandbox_env: Environment) -> None:
    text, major = pg_dump_version(sandbox_env, remote)
    assert text.startswith("pg_dump (PostgreSQL) ")
    with psycopg.connect(sandbox.admin_conninfo()) as conn:
        server_major = conn.info.server_version // 10000
    assert major >= server_major
    backup = dataclasses.replace(sandbox_env.backup, pg_bin=str(sandbox.pg_bindir))
    text, major = pg_dump_version(dataclasses.replace(sandbox_env, backup=backup), remote)
    assert major == server_major
    backup = dataclasses.replace(sandbox_env.backup, pg_bin="/nonexistent/bin")
    with pytest.raises(PreflightFailed, match="/nonexistent/bin/pg_dump not found on state host"):
        pg_dump_version(dataclasses.replace(sandbox_env, backup=backup), remote)


def test_pg_dump_version_names_a_missing_pg_restore(
    remote: Remote, sandbox: SandboxInfo, sandbox_env: Environment, tmp_path: Path
) -> None:
    """A rollback needs pg_restore and vacuumdb: pre-flight refuses when one is missing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("pg_dump", "vacuumdb"):
        (bindir / tool).symlink_to(sandbox.pg_bindir / tool)
    backup = dataclasses.replace(sandbox_env.backup, pg_bin=str(bindir))
    with pytest.raises(PreflightFailed, match=f"{bindir}/pg_restore not found on state host"):
        pg_dump_version(dataclasses.replace(sandbox_env, backup=backup), remote)


@pytest.fixture
def source(scratch_db: Scratch, sandbox_env: Environment) -> tuple[Environment, Any]:
    name, conn = scratch_db()
    conn.execute(
        "create table t (id int primary key, v text);"
        "insert into t select g, md5(g::text) from generate_series(1, 500) g"
    )
    return with_db(sandbox_env, name=name), conn


def restored_count(sandbox: SandboxInfo, scratch_db: Scratch, dump: str) -> int:
    name, conn = scratch_db()
    res = subprocess.run(
        ["pg_restore", "--exit-on-error", "--no-owner", "-d", sandbox.admin_conninfo(name), dump],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    row = conn.execute("select count(*) from t").fetchone()
    assert row is not None
    return int(row[0])


def test_take_backup_verify_and_manifest(
    remote: Remote,
    source: tuple[Environment, Any],
    sandbox: SandboxInfo,
    scratch_db: Scratch,
    tmp_path: Path,
) -> None:
    env, _ = source
    env = dataclasses.replace(
        env, backup=dataclasses.replace(env.backup, dir=str(tmp_path / "backups"))
    )
    job = tmp_path / "job"
    path, sha, size = take_backup(env, remote, "b-1", str(job), "seed-unit-b1")
    dump = Path(path)
    assert dump == tmp_path / "backups" / "b-1.dump"
    data = dump.read_bytes()
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size)
    assert data.startswith(b"PGDMP")
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(dump.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in dump.parent.iterdir()) == ["b-1.dump"]  # no partial
    assert not (job / "pgpass").exists()  # the password file is removed after the dump
    assert restored_count(sandbox, scratch_db, path) == 500

    verify_file(env, remote, path, sha)
    with pytest.raises(PreflightFailed, match="sha256 mismatch"):
        verify_file(env, remote, path, "0" * 64)
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(data[: len(data) // 2])
    short_sha = hashlib.sha256(truncated.read_bytes()).hexdigest()
    with pytest.raises(PreflightFailed, match="full read failed"):
        verify_file(env, remote, str(truncated), short_sha)

    record = BackupRecord("b-1", path, size, sha, 0.5, applied_migrations=[("shop", "0001")])
    manifest = write_manifest(remote, record)
    assert manifest == str(tmp_path / "backups" / "b-1.json")
    saved = json.loads(Path(manifest).read_text())
    assert saved["sha256"] == sha
    assert saved["applied_migrations"] == [["shop", "0001"]]
    assert stat.S_IMODE(Path(manifest).stat().st_mode) == 0o600


def test_take_backup_at_an_exported_snapshot(
    remote: Remote,
    source: tuple[Environment, Any],
    sandbox: SandboxInfo,
    scratch_db: Scratch,
    tmp_path: Path,
) -> None:
    env, conn = source
    env = dataclasses.replace(
        env, backup=dataclasses.replace(env.backup, dir=str(tmp_path / "backups"))
    )
    with (
        psycopg.connect(sandbox.admin_conninfo(env.db.name), autocommit=True) as holder,
        exported_snapshot(holder) as snap,
    ):
        conn.execute("insert into t values (501, 'after the snapshot')")
        path, _, _ = take_backup(env, remote, "b-2", str(tmp_path / "job"), "seed-unit", snap)
    assert restored_count(sandbox, scratch_db, path) == 500


def test_failed_backup_leaves_nothing(
    remote: Remote, sandbox_env: Environment, tmp_path: Path
) -> None:
    env = with_db(sandbox_env, name="seed_unit_no_such_db")
    env = dataclasses.replace(
        env, backup=dataclasses.replace(env.backup, dir=str(tmp_path / "backups"))
    )
    with pytest.raises(PreflightFailed, match=r"backup on .* failed: .*seed_unit_no_such_db") as e:
        take_backup(env, remote, "b-3", str(tmp_path / "job"), "seed-unit")
    assert e.value.code == 4
    assert list((tmp_path / "backups").iterdir()) == []
    assert not (tmp_path / "job" / "pgpass").exists()


def test_restore_space(
    remote: Remote, sandbox_env: Environment, pg_admin_dsn: str, pg_app_dsn: str
) -> None:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        assert restore_space(sandbox_env, remote, admin, 1000).endswith("GB free for a restore")
        with pytest.raises(PreflightFailed, match=r"the database.s directory .* a restore"):
            restore_space(sandbox_env, remote, admin, 10**18)
        elsewhere = with_db(sandbox_env, host="db.example.com")
        assert "not checked" in restore_space(elsewhere, remote, admin, 10**18)
    with psycopg.connect(pg_app_dsn, autocommit=True) as app:
        message = restore_space(sandbox_env, remote, app, 10**18)
        assert "data_directory not readable" in message
        assert app.execute("select 1").fetchone() == (1,)  # the session is still usable


def test_a_dumps_expected_size_follows_the_last_compression_ratio() -> None:
    """Progress measures against the likely size; the space check adds a 20 % margin once
    a backup gave a ratio, and takes the database size before that."""
    assert expected_dump_size([], 1000) == 1000 == estimate_size([], 1000)
    older = [{"database_size": 500, "size": 100}, {"database_size": 800, "size": 400}]
    assert expected_dump_size(older, 1000) == 500
    assert estimate_size(older, 1000) == 600
    unknown = [{"database_size": 500, "size": 500}]  # no compression: ratio 1.0
    assert estimate_size(unknown, 1000) == 1200


def test_a_restored_copy_lacking_a_table_is_a_finding_not_a_crash() -> None:
    """verify_by_restoring compared `figures[t]` for every table of either side: a table
    the restored copy lacks was a KeyError (exit 1); now it is named."""
    snap = {"public.a": {"rows": 1, "sha": "x"}, "public.b": {"rows": 2, "sha": "y"}}
    assert table_differences(snap, dict(snap)) == []
    copy = {"public.a": {"rows": 1, "sha": "z"}, "public.c": {"rows": 0, "sha": ""}}
    assert table_differences(snap, copy) == [
        "missing from the restored copy: public.b",
        "not in the snapshot: public.c",
        "different rows or checksum: public.a",
    ]
