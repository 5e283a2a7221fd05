"""seed.backup.pitr on a real pgBackRest: the sandbox's cluster archiving WAL over TLS into an
encrypted repository on 127.0.0.3, reached over the sandbox sshd as Seed reaches any host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sandbox.pgbackrest import REPO_HOST, environment_section
from sandbox.servers import SandboxInfo, environment_text
from seed.backup import pitr
from seed.config.environment import Environment, Host, load_environment
from seed.errors import PreflightFailed, StepFailed
from seed.remote.ssh import Remote


@pytest.fixture(scope="module")
def env(pitr_sandbox: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Environment:
    base = tmp_path_factory.mktemp("pitr-env")
    (base / "environments").mkdir()
    text = environment_text(pitr_sandbox, base / "server", "pitr unit tests")
    text += "  strategy: pitr\n" + environment_section(pitr_sandbox.root, "shop")
    (base / "environments" / "pitr.yml").write_text(text)
    return load_environment("pitr", base / "environments")


@pytest.fixture(scope="module")
def hosts(env: Environment) -> Iterator[tuple[Remote, Remote]]:
    """(the database host, the repository host) over the sandbox sshd."""
    assert env.roles.backup is not None and env.roles.backup.name == REPO_HOST
    db, repo = Remote(env, env.roles.db).open(), Remote(env, env.roles.backup).open()
    yield db, repo
    db.close()
    repo.close()


def admin(sandbox: SandboxInfo, dbname: str = "shop") -> psycopg.Connection[Any]:
    return psycopg.connect(sandbox.admin_conninfo(dbname), autocommit=True)


def test_the_repository_is_encrypted_and_a_full_backup_comes_first(
    env: Environment, hosts: tuple[Remote, Remote]
) -> None:
    db, repo = hosts
    info = pitr.repo_info(env, repo)
    assert info.cipher == "aes-256-cbc"
    if info.newest() is None:
        assert pitr.backup_type(env, info, now=0) == "full"
        backup = pitr.take_backup(env, repo, "full", f"{env.state_dir}/jobs/full")
        assert backup.type == "full" and backup.size > 0
        info = pitr.repo_info(env, repo)
    newest = info.newest()
    assert newest is not None
    assert pitr.backup_type(env, info, now=newest.stopped + 60) is None  # fresh enough
    assert pitr.backup_type(env, info, now=newest.stopped + 25 * 3600) == "diff"
    assert "WAL archive works" in pitr.check_archive(env, db)


def test_a_restore_point_is_restored_exactly(
    env: Environment, hosts: tuple[Remote, Remote], pitr_sandbox: SandboxInfo
) -> None:
    db, repo = hosts
    if pitr.repo_info(env, repo).newest() is None:
        pitr.take_backup(env, repo, "full", f"{env.state_dir}/jobs/full")
    with admin(pitr_sandbox) as conn:
        conn.execute("drop table if exists pitr_t")
        conn.execute("create table pitr_t (id int primary key, v text)")
        conn.execute("insert into pitr_t select g, 'before' from generate_series(1, 500) g")
        assert pitr.missing_privileges(conn) == []
        assert pitr.archiving(conn) is None
        point = pitr.create_restore_point(conn, pitr.point_name("unit-1"))
        assert point.timeline >= 1 and point.name == "seed-unit-1"
        assert pitr.wait_archived(conn, point.wal, timeout=30) < 30
        conn.execute("update pitr_t set v = 'after'")
        conn.execute("create table pitr_later (x int)")
    info = pitr.repo_info(env, repo)
    backup = info.before(point.lsn)
    assert backup is not None
    parts = pitr.restore_cluster(env, db, point, backup.label, f"{env.state_dir}/jobs/restore")
    assert set(parts) == {"stop", "restore", "start"}
    pitr.wait_promoted(lambda: admin(pitr_sandbox), point, timeout=60)
    with admin(pitr_sandbox) as conn:
        assert conn.execute("select v, count(*) from pitr_t group by v").fetchall() == [
            ("before", 500)
        ]
        assert conn.execute("select to_regclass('pitr_later')").fetchone() == (None,)
        # a new timeline began at the point; its history reaches the archive
        tli = conn.execute("select timeline_id from pg_control_checkpoint()").fetchone()
        assert tli is not None and tli[0] == point.timeline + 1
    assert "WAL archive works" in pitr.check_archive(env, db)


def test_the_app_role_may_not_make_restore_points(pitr_sandbox: SandboxInfo) -> None:
    with psycopg.connect(pitr_sandbox.app_conninfo(), autocommit=True) as conn:
        assert pitr.missing_privileges(conn) == ["pg_create_restore_point", "pg_switch_wal"]


def test_a_cluster_shared_with_other_databases_is_refused(
    env: Environment, pitr_sandbox: SandboxInfo
) -> None:
    with admin(pitr_sandbox, "postgres") as conn:
        conn.execute("drop database if exists billing")
        conn.execute("drop database if exists shop_replaced_20261205t0510")
        conn.execute("create database billing")
        conn.execute("create database shop_replaced_20261205t0510")  # Seed's own, kept
        try:
            assert pitr.shared_with(conn, "shop", ()) == ["billing"]
            assert pitr.shared_with(conn, "shop", ("billing",)) == []
            assert pitr.shared_with(conn, "shop", ("*",)) == []
            with pytest.raises(PreflightFailed, match="also holds billing"):
                pitr.refuse_shared_cluster(env, conn)
        finally:
            conn.execute("drop database billing")
            conn.execute("drop database shop_replaced_20261205t0510")
        pitr.refuse_shared_cluster(env, conn)
        assert pitr.streaming_replicas(conn) == []


def test_a_broken_archive_is_named(env: Environment, pitr_sandbox: SandboxInfo) -> None:
    with admin(pitr_sandbox, "postgres") as conn:
        conn.execute("alter system set archive_command = 'false'")
        conn.execute("select pg_reload_conf()")
        try:
            time_ok = conn.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()
            assert time_ok is not None
            point = pitr.create_restore_point(conn, pitr.point_name("unit-broken"))
            with pytest.raises(StepFailed, match="was not archived within 3s"):
                pitr.wait_archived(conn, point.wal, timeout=3)
            assert "failing" in (pitr.archiving(conn) or "")
        finally:
            conn.execute("alter system reset archive_command")
            conn.execute("select pg_reload_conf()")


def test_info_without_the_stanza_and_with_errors() -> None:
    with pytest.raises(StepFailed, match="no stanza 'shop'"):
        pitr.parse_info('[{"name": "other"}]', "shop")
    with pytest.raises(StepFailed, match="no JSON"):
        pitr.parse_info("ERROR: nope", "shop")
    info = pitr.parse_info(
        '[{"name": "shop", "cipher": "none", "status": {"code": 2, "message": "no valid backups"},'
        ' "archive": [], "backup": []}]',
        "shop",
    )
    assert info.newest() is None and info.before("0/1") is None and info.cipher == "none"


def test_an_unencrypted_or_missing_pgbackrest_is_one_line(
    env: Environment, hosts: tuple[Remote, Remote], tmp_path: Path
) -> None:
    import dataclasses

    _, repo = hosts
    assert env.backup.pgbackrest is not None
    broken = dataclasses.replace(
        env,
        backup=dataclasses.replace(
            env.backup,
            pgbackrest=dataclasses.replace(
                env.backup.pgbackrest, repo_command="/nonexistent/pgbackrest"
            ),
        ),
    )
    with pytest.raises(StepFailed, match="not found \\(exit 127\\): install pgBackRest"):
        pitr.repo_info(broken, repo)
    assert isinstance(env.roles.backup, Host)


def test_expire_keeps_the_backup_a_needed_restore_point_is_restored_from(
    env: Environment, hosts: tuple[Remote, Remote]
) -> None:
    """repo1-retention-full=2 (the sandbox's): a third full backup makes the oldest expire,
    unless a restore point a rollback needs is restored from it."""
    _, repo = hosts
    while len([b for b in pitr.repo_info(env, repo).backups if b.type == "full"]) < 3:
        pitr.take_backup(env, repo, "full", f"{env.state_dir}/jobs/full-more")  # no auto expire
    oldest = pitr.repo_info(env, repo).backups[0]
    needed = pitr.RestorePoint("seed-needed", oldest.lsn_stop, oldest.wal_stop, "")
    said = pitr.expire(env, repo, {"rollback of deploy X": needed})
    assert said == f"expire postponed: it would remove {oldest.label} (rollback of deploy X)"
    assert oldest.label in [b.label for b in pitr.repo_info(env, repo).backups]
    said = pitr.expire(env, repo, {})
    assert said.startswith("expired ") and oldest.label in said
    assert oldest.label not in [b.label for b in pitr.repo_info(env, repo).backups]
