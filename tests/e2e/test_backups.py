"""`fab local backup/backups/restore/cleanup` end to end, against the real sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seed.backup.restore import comparable_properties, database_properties
from tests.e2e.conftest import Deployment


@pytest.fixture(scope="module")
def at_v2(deployment: Deployment) -> Iterator[Deployment]:
    deployment.reset()
    deployment.deploy("v1", "v2")
    yield deployment


def take(dep: Deployment, *args: str, **kw: Any) -> dict[str, Any]:
    res = dep.fab("local", "backup", *args, "--report", str(dep.home / "backup.json"), **kw)
    assert res.returncode == 0, res.stderr
    report: dict[str, Any] = json.loads((dep.home / "backup.json").read_text())
    return report["backup"]


def database_state(dep: Deployment, dbname: str = "shop") -> dict[str, Any]:
    with dep.admin() as conn:
        props = comparable_properties(database_properties(conn, dbname))
    with dep.admin(dbname) as conn:
        create = conn.execute("select has_schema_privilege('shop', 'public', 'CREATE')")
        return {"props": props, "public_create": create.fetchone()}


def test_backup_manifest_and_listing(at_v2: Deployment) -> None:
    manifest = take(at_v2, "--label", "nightly")
    on_disk = json.loads(Path(manifest["path"]).with_suffix(".json").read_text())
    for key in (
        "environment",
        "database",
        "server_version",
        "pg_dump_version",
        "format",
        "compression",
        "size",
        "sha256",
        "files",
        "code_sha",
        "applied_migrations",
        "database_properties",
        "created_at",
        "created_by",
        "tables",
    ):
        assert on_disk.get(key) not in (None, "", [], {}), key
    assert on_disk["label"] == "nightly" and on_disk["kind"] == "manual"
    assert Path(manifest["path"]).stat().st_mode & 0o777 == 0o600
    res = at_v2.fab("local", "backups", "--json")
    assert res.returncode == 0, res.stderr
    listed = {m["id"]: m for m in json.loads(res.stdout)}
    assert listed[manifest["id"]]["label"] == "nightly"
    assert any(m["needed_by"].startswith("last good deploy") for m in listed.values())
    table = at_v2.fab("local", "backups")
    assert manifest["id"] in table.stdout and "nightly" in table.stdout


def test_verify_restore_and_download(at_v2: Deployment) -> None:
    manifest = take(at_v2, "--verify-restore", "--download")
    copy = at_v2.home / "local" / "backups" / Path(manifest["path"]).name
    assert copy.read_bytes() == Path(manifest["path"]).read_bytes()
    report = json.loads((at_v2.home / "backup.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert "tables equal to the snapshot" in steps["verify restore"]["detail"]
    # the scratch database is gone
    assert (
        at_v2.scalar(
            "select count(*) from pg_database where datname like 'shop_verify%'", "postgres"
        )
        == 0
    )


def test_every_dump_is_copied_to_another_host_after_the_window(at_v2: Deployment) -> None:
    """backup.copy {host, dir}: the dump streamed through Seed's SSH to 127.0.0.3 (another
    sandbox host), sha256-checked there; a deploy copies after maintenance off; the
    directory format too; an unreachable copy host refuses the deploy at pre-flight."""
    dep = at_v2
    there = dep.root / "server" / "copyhost" / "backups"
    envdir = dep.variant("copy-host", {"backup.copy": {"host": "127.0.0.3", "dir": str(there)}})
    manifest = take(dep, envdir=envdir)
    copy = there / Path(manifest["path"]).name
    assert copy.read_bytes() == Path(manifest["path"]).read_bytes()
    assert copy.stat().st_mode & 0o777 == 0o600 and there.stat().st_mode & 0o777 == 0o700
    assert json.loads(copy.with_suffix(".json").read_text())["sha256"] == manifest["sha256"]
    assert (
        manifest["copy"] == f"{dep.sandbox.ssh_user}@127.0.0.3:{dep.sandbox.spec.ssh_port}:{copy}"
    )
    res = dep.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    report = dep.last_report()
    names = [s["name"] for s in report["steps"]]
    assert names.index("backup copy") > names.index("health")  # after the window
    assert (there / Path(report["backup"]["path"]).name).is_file()
    res = dep.fab("local", "rollback", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    directory = dep.variant(
        "copy-host-dir",
        {"backup.copy": {"host": "127.0.0.3", "dir": str(there)}, "backup.format": "directory"},
    )
    manifest = take(dep, envdir=directory)
    copied = there / Path(manifest["path"]).name
    assert sorted(p.name for p in copied.iterdir()) == sorted(
        p.name for p in Path(manifest["path"]).iterdir()
    )
    unreachable = dep.variant("copy-nowhere", {"backup.copy": {"host": "127.0.0.9"}})
    res = dep.fab("local", "upgradedb", "--ref", "v3", envdir=unreachable)
    assert res.returncode == 4 and "127.0.0.9" in res.stderr, res.stdout + res.stderr


def test_round_trip_preserves_data_properties_acl_and_sequences(at_v2: Deployment) -> None:
    with at_v2.admin() as conn:
        conn.execute("alter database shop set work_mem = '16MB'")
        conn.execute("revoke connect on database shop from public")
        conn.execute("grant connect on database shop to shop")
        conn.execute("comment on database shop is 'restore me'")
    manifest = take(at_v2)
    before = {"figures": at_v2.figures(), **database_state(at_v2)}
    # writes after the backup: they bump the sequence and change data
    with at_v2.admin("shop") as conn:
        for i in range(3):
            conn.execute(
                "insert into shop_customer (name, email, created_at, first_name, last_name) "
                "values (%s, %s, now(), 'A', 'B')",
                (f"A B{i}", f"late{i}@example.com"),
            )
        seq_live = conn.execute("select last_value from shop_customer_id_seq").fetchone()
    refused = at_v2.fab("local", "restore", "--backup", manifest["id"])
    assert refused.returncode == 4 and "public.shop_customer 3" in refused.stderr
    res = at_v2.fab("local", "restore", "--backup", manifest["id"], "--discard-writes")
    assert res.returncode == 0, res.stderr
    assert {"figures": at_v2.figures(), **database_state(at_v2)} == before
    with at_v2.admin("shop") as conn:
        seq_now = conn.execute("select last_value from shop_customer_id_seq").fetchone()
    assert seq_now is not None and seq_live is not None and seq_now[0] >= seq_live[0]
    assert at_v2.http("/version/") == (200, "v2")


def test_corrupt_backups_are_refused_before_the_live_database_is_touched(
    at_v2: Deployment,
) -> None:
    for damage in ("truncate", "bitflip"):
        manifest = take(at_v2, "--label", damage)
        path = Path(manifest["path"])
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            path.write_bytes(bytes(data[: len(data) // 2]))
        else:
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
        before = at_v2.figures()
        replaced = at_v2.scalar("select count(*) from pg_database", "postgres")
        res = at_v2.fab("local", "restore", "--backup", manifest["id"])
        assert res.returncode == 4, res.stderr
        assert "sha256 mismatch" in res.stderr
        assert at_v2.figures() == before
        assert at_v2.scalar("select count(*) from pg_database", "postgres") == replaced
        path.unlink()


def test_restore_while_the_app_holds_connections(at_v2: Deployment) -> None:
    manifest = take(at_v2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, psycopg; c = psycopg.connect(sys.argv[1]); "
            "c.execute('select 1'); print('connected', flush=True); time.sleep(120)",
            at_v2.sandbox.app_conninfo(),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "connected"
        res = at_v2.fab("local", "restore", "--backup", manifest["id"])
        assert res.returncode == 0, res.stderr
        assert "1 session(s) ended" in res.stderr
    finally:
        holder.kill()
        holder.wait()


def test_cleanup_keeps_the_newest_and_the_last_good_deploy(at_v2: Deployment) -> None:
    envdir = at_v2.variant("keep2", {"backup.keep": 2})
    for i in range(3):
        res = at_v2.fab("local", "backup", "--label", f"extra{i}", envdir=envdir)
        assert res.returncode == 0, res.stderr
    res = at_v2.fab("local", "cleanup", envdir=envdir)
    assert res.returncode == 0, res.stderr
    listed = json.loads(at_v2.fab("local", "backups", "--json").stdout)
    labels = [m.get("label") for m in listed]
    assert labels[-2:] == ["extra1", "extra2"]
    assert any(m["needed_by"].startswith("last good deploy") for m in listed)
    assert len(listed) == 3
    assert (
        at_v2.scalar(
            "select count(*) from pg_database where datname like 'shop_replaced%'", "postgres"
        )
        == 0
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_during_the_dump_exits_4_and_leaves_nothing_valid(at_v2: Deployment) -> None:
    probe = take(at_v2)
    size = int(probe["size"])
    small = at_v2.root / "server" / "full-disk"
    small.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size * 3 // 4}", "tmpfs", str(small)], check=True
    )
    try:
        backups = small / "backups"
        backups.mkdir(mode=0o700)
        # an earlier backup whose ratio makes the estimate pass the pre-check
        fake = {
            "id": "00000000T000000Z-0000",
            "sha256": "0" * 64,
            "path": str(backups / "x.dump"),
            "size": 1,
            "database_size": 40,
            "created_at": "2000-01-01T00:00:00Z",
        }
        (backups / "00000000T000000Z-0000.json").write_text(json.dumps(fake))
        envdir = at_v2.variant("full-disk", {"backup.dir": str(backups)})
        res = at_v2.fab("local", "backup", envdir=envdir)
        assert res.returncode == 4, res.stderr
        assert "No space left on device" in res.stderr
        names = sorted(p.name for p in backups.iterdir())
        assert names == ["00000000T000000Z-0000.json"], names
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_names_near_the_63_byte_limit(at_v2: Deployment) -> None:
    long_name = "shop_" + "x" * 55  # 60 bytes
    with at_v2.admin() as conn:
        conn.execute(f'create database "{long_name}" owner shop template shop')
    try:
        envdir = at_v2.variant("long-name", {"db.name": long_name})
        res = at_v2.fab("local", "backup", envdir=envdir)
        assert res.returncode == 0, res.stderr
        res = at_v2.fab("local", "restore", "--discard-writes", envdir=envdir)
        assert res.returncode == 0, res.stderr
        with at_v2.admin() as conn:
            rows = conn.execute(
                "select datname from pg_database where datname like 'shop\\_xxx%'"
            ).fetchall()
        names = [str(r[0]) for r in rows]
        assert long_name in names and all(len(n.encode()) <= 63 for n in names)
        assert len(names) == 2  # the live one and the replaced one, distinct
    finally:
        with at_v2.admin() as conn:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname like 'shop\\_xxx%'"
            )
            for (name,) in conn.execute(
                "select datname from pg_database where datname like 'shop\\_xxx%'"
            ).fetchall():
                conn.execute(f'drop database "{name}" with (force)')


def test_replication_slot_refuses_restore_and_deploy(at_v2: Deployment) -> None:
    take(at_v2)
    with at_v2.admin() as conn:
        conn.execute("select pg_create_physical_replication_slot('seed_test_standby')")
    try:
        res = at_v2.fab("local", "restore", "--discard-writes")
        assert res.returncode == 4, res.stderr
        assert "physical replication slot seed_test_standby" in res.stderr
        res = at_v2.fab("local", "upgradedb", "--ref", "v3")
        assert res.returncode == 4, res.stderr
        assert "is replicated" in res.stderr and "nothing changed" in res.stderr
        allowed = at_v2.variant("replicated-ok", {"backup.allow_replication": True})
        res = at_v2.fab("local", "restore", "--discard-writes", envdir=allowed)
        assert res.returncode == 0, res.stderr
    finally:
        with at_v2.admin() as conn:
            conn.execute("select pg_drop_replication_slot('seed_test_standby')")


def test_protected_environment_keeps_an_off_host_copy(at_v2: Deployment) -> None:
    envdir = at_v2.variant("protected-copy", {}, protected=True)
    res = at_v2.fab(
        "local", "upgradedb", "--ref", "v2", "--mode", "maintenance", "--yes", envdir=envdir
    )
    assert res.returncode == 0, res.stderr
    report = at_v2.last_report()
    copy = Path(report["backup"]["copy"])
    assert copy.read_bytes() == Path(report["backup"]["path"]).read_bytes()
    names = [s["name"] for s in report["steps"]]
    assert names.index("backup copy") > names.index("maintenance off")  # never in the window


def test_directory_format_with_parallel_jobs(at_v2: Deployment) -> None:
    """-Fd -j 2: per-file sha256 in the manifest, a damaged file refused, a round trip."""
    envdir = at_v2.variant("fd", {"backup.format": "directory", "backup.jobs": 2})
    res = at_v2.fab("local", "backup", "--verify-restore", envdir=envdir)
    assert res.returncode == 0, res.stderr
    listed = json.loads(at_v2.fab("local", "backups", "--json", envdir=envdir).stdout)
    manifest = listed[-1]
    assert manifest["format"] == "directory" and manifest["path"].endswith(".dir")
    assert len(manifest["files"]) > 2 and all(len(f["sha256"]) == 64 for f in manifest["files"])
    before = at_v2.figures()
    res = at_v2.fab("local", "restore", "--discard-writes", envdir=envdir)
    assert res.returncode == 0, res.stderr
    assert at_v2.figures() == before
    data_file = next(Path(manifest["path"]).glob("*.dat.gz"))
    data_file.write_bytes(data_file.read_bytes()[:-3])
    res = at_v2.fab("local", "restore", "--backup", manifest["id"], envdir=envdir)
    assert res.returncode == 4 and "sha256 mismatch" in res.stderr


def test_restore_of_another_migration_set_asks_first(at_v2: Deployment) -> None:
    """The served code expects the live migration set: a backup with another one is named
    and needs a confirmation; without a terminal that is --yes (exit 2, nothing changed)."""
    manifest = take(at_v2)
    with at_v2.admin("shop") as conn:
        conn.execute(
            "insert into django_migrations (app, name, applied) "
            "values ('shop', '9999_applied_by_hand', now())"
        )
    before = at_v2.figures()
    refused = at_v2.fab("local", "restore", "--backup", manifest["id"], "--discard-writes")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "only in the live database: shop.9999_applied_by_hand" in refused.stderr
    assert "pass --yes" in refused.stderr.strip().splitlines()[-1]
    assert at_v2.figures() == before
    res = at_v2.fab("local", "restore", "--backup", manifest["id"], "--discard-writes", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning: backup " in res.stderr + res.stdout
    assert at_v2.scalar("select count(*) from django_migrations where name like '9999%'") == 0
