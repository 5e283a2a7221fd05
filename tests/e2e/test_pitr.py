"""backup.strategy pitr end to end: `fab` against a sandbox whose cluster archives its WAL over
TLS into an encrypted pgBackRest repository on a host of its own (127.0.0.3), a writer
placing orders through the site while the deploy prepares."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.load import Load, missing_orders


@pytest.fixture(scope="module")
def shop(pitr_deployment: Deployment) -> Iterator[Deployment]:
    """v1 and v2 deployed (the tests go on from where the one before left the shop)."""
    dep = pitr_deployment
    dep.reset()
    dep.deploy("v1", "v2")
    yield dep


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


def schema(dep: Deployment) -> list[tuple[str, str, str]]:
    with dep.admin("shop") as conn:
        rows = conn.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = 'public' order by 1, 2"
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_a_failing_deploy_is_restored_to_its_restore_point_with_every_acknowledged_order(
    shop: Deployment,
) -> None:
    dep = shop
    before = schema(dep)
    # a write path through the one app host: orders acknowledged while the deploy prepares
    # land after the serving fingerprint and before the freeze (fingerprinted again there)
    with Load(dep.app_port, paths=("POST /orders/", "/health/"), threads=2) as load:
        res = dep.fab("local", "upgradedb", "--ref", "bad-data")
    assert res.returncode == 5, res.stdout + res.stderr
    report = dep.last_report()
    done = steps(report)
    for name in ("physical backup", "before-state (serving)", "before-state", "restore point"):
        assert done[name]["outcome"] == "ok", name
    assert "WAL archive works" in done["physical backup"]["detail"]
    assert done["backup pre-flight"]["detail"].startswith("pgBackRest ")  # same on both hosts
    again = re.search(r"\((\d+) written since", done["before-state"]["detail"])
    assert again and int(again[1]) >= 1, done["before-state"]["detail"]  # shop_order at least
    assert report["backup"]["kind"] == "pitr"
    point = report["backup"]["restore_point"]
    assert point["name"] == f"seed-{report['deploy_id']}"
    assert "archived in" in done["restore point"]["detail"]
    rollback = report["rollback"]
    assert set(rollback["point_in_time"]) >= {"backup", "stop", "restore", "start", "replay"}
    assert "verified identical" in report["message"]
    # no dump was taken: the window held a restore point
    assert not list(dep.backup_dir.glob("*.dump"))
    assert schema(dep) == before
    assert load.orders(), load.summary()
    with dep.admin("shop") as conn:
        assert missing_orders(conn, load.orders()) == 0, load.summary()
    # the site serves v2 again
    status, text = dep.http("/health/")
    assert status == 200 and "v2" in text


def test_rollback_of_a_good_deploy_restores_the_cluster_to_its_point(shop: Deployment) -> None:
    dep = shop
    before = schema(dep)
    with dep.admin("shop") as conn:
        orders = conn.execute("select count(*) from shop_order").fetchone()
    res = dep.fab("local", "upgradedb", "--ref", "v3")  # drops a column: undone by a restore
    assert res.returncode == 0, res.stdout + res.stderr
    assert schema(dep) != before
    res = dep.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    report = dep.last_report()
    done = steps(report)
    assert (
        "backup" in done["verify backup"]["detail"]
        and "WAL archived" in done["verify backup"]["detail"]
    )
    assert report["point_in_time"]["point"].startswith("seed-")
    assert "restored to seed-" in done["database"]["detail"]
    assert schema(dep) == before
    with dep.admin("shop") as conn:
        assert conn.execute("select count(*) from shop_order").fetchone() == orders
    # the writes baseline starts again after the restore: a later deploy is not refused
    res = dep.fab("local", "upgradedb", "--ref", "v3")
    assert res.returncode == 0, res.stdout + res.stderr


def test_an_unreachable_repository_host_refuses_the_deploy(shop: Deployment) -> None:
    dep = shop
    releases = dep.releases()
    envdir = dep.variant(
        "pitr-no-repo", {"backup.strategy": "pitr", "backup.pgbackrest.repo_host": "127.0.0.9"}
    )
    res = dep.fab("local", "upgradedb", "--ref", "v4", envdir=envdir)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "127.0.0.9" in res.stderr
    assert dep.releases() == releases


def test_a_broken_wal_archive_and_a_shared_cluster_are_refused_at_preflight(
    shop: Deployment,
) -> None:
    dep = shop
    releases = dep.releases()
    with dep.admin() as conn:
        conn.execute("alter system set archive_command = 'false'")
        conn.execute("select pg_reload_conf()")
        try:
            failed = conn.execute("select failed_count from pg_stat_archiver").fetchone()
            conn.execute("select pg_switch_wal()")
            for _ in range(100):  # the archiver tries (and fails) at once
                now = conn.execute("select failed_count from pg_stat_archiver").fetchone()
                if now != failed:
                    break
                conn.execute("select pg_sleep(0.1)")
            res = dep.fab("local", "upgradedb", "--ref", "v4", "--mode", "maintenance")
        finally:
            conn.execute("alter system reset archive_command")
            conn.execute("select pg_reload_conf()")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "does not archive its WAL (archiving is failing" in res.stderr
    with dep.admin() as conn:
        conn.execute("create database billing")
        try:
            res = dep.fab("local", "upgradedb", "--ref", "v4", "--mode", "maintenance")
        finally:
            conn.execute("drop database billing")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "also holds billing" in res.stderr and "backup.pgbackrest.rewind" in res.stderr
    assert dep.releases() == releases
    report = json.loads(json.dumps(dep.last_report()))
    assert report["exit_code"] == 4


def test_a_backup_is_restored_into_a_scratch_cluster_and_listed_with_the_points(
    shop: Deployment,
) -> None:
    dep = shop
    res = dep.fab("local", "backup", "--verify-restore", "--label", "nightly")
    assert res.returncode == 0, res.stdout + res.stderr
    report = dep.last_report("local")
    done = steps(report)
    assert "tables equal to the snapshot" in done["verify restore"]["detail"]
    assert report["backup"]["kind"] == "pitr" and report["backup"]["backup_label"]
    # the scratch cluster is gone, and it pushed nothing into the stanza (archiving off)
    assert not list((dep.root / "pg").glob("seed-verify-*"))
    res = dep.fab("local", "backups", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    listed = json.loads(res.stdout)
    kinds = {m["kind"] for m in listed}
    assert {"full", "point"} <= kinds, kinds
    points = [m for m in listed if m["kind"] == "point"]
    assert all(m["present"] for m in points), points  # every deploy's point still restorable
    res = dep.fab("local", "backups")
    assert "restore point before" in res.stdout
    res = dep.fab("local", "backup", "--download")
    assert res.returncode == 4 and "physical backups" in res.stderr, res.stdout + res.stderr
    # `restore` to the backup's restore point: refused while rows written since would be
    # lost, then done with --discard-writes and verified against what the backup recorded
    point = report["backup"]["id"]
    with dep.admin("shop") as conn:
        conn.execute("update shop_order set total = total + 1 where id in (1, 2, 3)")
    res = dep.fab("local", "restore", "--backup", point)
    assert res.returncode == 4 and "public.shop_order" in res.stderr, res.stdout + res.stderr
    res = dep.fab("local", "restore", "--backup", point, "--discard-writes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"restored the cluster to {point}" in res.stdout + res.stderr
    assert dep.last_report()["verification"]["identical"]


def test_a_deploy_killed_after_its_migrate_is_put_back_by_rollback(shop: Deployment) -> None:
    """SIGKILL of fab after a migrate (v4's new columns, in maintenance mode): `rollback`
    finds the dead run, sees the database differs from its before-state, and restores the
    cluster to the run's restore point."""
    dep = shop
    before = schema(dep)
    serving = dep.http("/version/")[1]
    with dep.admin("shop") as conn:
        figures_before = conn.execute("select count(*), sum(total) from shop_order").fetchone()
    res = dep.fab(
        "local",
        "upgradedb",
        "--ref",
        "v4",
        "--mode",
        "maintenance",
        extra_env={"SEED_FAULT": "kill@after migrate"},
    )
    assert res.returncode == -9, res.stdout + res.stderr
    assert schema(dep) != before
    res = dep.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recovered interrupted deploy" in res.stdout + res.stderr
    report = dep.last_report()
    assert report["point_in_time"]["point"].startswith("seed-")
    assert schema(dep) == before
    with dep.admin("shop") as conn:
        assert conn.execute("select count(*), sum(total) from shop_order").fetchone() == (
            figures_before
        )
    assert dep.http("/version/")[1] == serving
