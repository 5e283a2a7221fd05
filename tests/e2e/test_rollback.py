"""Automatic rollback and `fab local rollback`, end to end (DESIGN: Rollback).

"Back" is checked against everything the issue names: every table's count and
checksum, the django_migrations set, the database's owner/ACL/settings/comment,
`has_schema_privilege(app, 'public', 'CREATE')`, the release `current` points at,
and the app actually serving the previous version.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from seed.backup.restore import comparable_properties, database_properties
from tests.e2e.conftest import Deployment

PROPERTIES_SQL = [
    "alter database shop set work_mem = '8MB'",
    "alter role shop in database shop set statement_timeout = '45s'",
    # list-valued settings (issue 18): each element is stored quoted on its own
    'alter database shop set search_path to "$user", public',
    'alter role shop in database shop set search_path to "$user", public, "we""ird, one"',
    "revoke connect on database shop from public",
    "grant connect on database shop to shop",
    "comment on database shop is 'the shop''s data'",
]


def app_reads(dep: Deployment) -> dict[str, Any]:
    """`select count(*) from shop_customer`, unqualified, as the app role (its role-in-database
    search_path) and as the admin (the database's search_path): what a corrupted search_path
    breaks. A count, or the error's text."""
    found: dict[str, Any] = {}
    for who, conninfo in (
        ("app", dep.sandbox.app_conninfo()),
        ("admin", dep.sandbox.admin_conninfo("shop")),
    ):
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                row = conn.execute("select count(*) from shop_customer").fetchone()
                found[who] = row[0] if row else None
        except psycopg.Error as exc:
            found[who] = f"{type(exc).__name__}: {exc}"
    return found


def whole_state(dep: Deployment) -> dict[str, Any]:
    with dep.admin() as conn:
        props = comparable_properties(database_properties(conn, "shop"))
    with dep.admin("shop") as conn:
        migrations = conn.execute("select app, name from django_migrations order by 1, 2")
        applied = [tuple(r) for r in migrations.fetchall()]
        can_create = conn.execute(
            "select has_schema_privilege('shop', 'public', 'CREATE')"
        ).fetchone()
    return {
        "figures": dep.figures(),
        "migrations": applied,
        "properties": props,
        "public_create": can_create,
        "current": dep.current(),
        "releases": dep.releases(),
        "serving": dep.http("/version/"),
        "app_reads": app_reads(dep),
    }


def bring_to_v2(dep: Deployment) -> None:
    """From nothing: v1 then v2 deployed, with database-level properties a restore must
    carry over."""
    dep.reset()
    dep.deploy("v1", "v2")
    with dep.admin() as conn:
        for statement in PROPERTIES_SQL:
            conn.execute(statement)


@pytest.fixture(scope="module")
def at_v2(deployment: Deployment) -> Iterator[Deployment]:
    bring_to_v2(deployment)
    yield deployment


def test_bad_data_is_rolled_back_to_the_exact_before_state(at_v2: Deployment) -> None:
    before = whole_state(at_v2)
    assert before["app_reads"] == {"app": 20000, "admin": 20000}
    res = at_v2.fab("local", "upgradedb", "--ref", "bad-data")
    assert res.returncode == 5, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert (
        "deploy of bad-data failed at post check 'customers unchanged' "
        "(expected 20000, got 19000)" in last
    )
    assert last.endswith("rolled back; verified identical")
    assert whole_state(at_v2) == before
    report = at_v2.last_report()
    assert report["exit_code"] == 5 and report["rollback"]["verification"]["identical"]
    replaced = report["rollback"]["replaced_database"]
    assert (
        at_v2.scalar(
            f"select datallowconn from pg_database where datname = '{replaced}'", "postgres"
        )
        is False
    )
    assert (
        at_v2.scalar(f"select count(*) from pg_database where datname = '{replaced}'", "postgres")
        == 1
    )


def test_bad_crash_is_rolled_back_to_the_exact_before_state(at_v2: Deployment) -> None:
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "bad-crash")
    assert res.returncode == 5, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "failed at migrate" in last and "backfill_loyalty_points" in last
    assert last.endswith("rolled back; verified identical")
    assert whole_state(at_v2) == before
    report = at_v2.last_report()
    # the first migration had committed: only a restore could undo it
    assert report["migrations"]["applied"] == ["shop.0005_customer_loyalty_points"]


def test_health_failure_after_switch_rolls_back_code_and_database(at_v2: Deployment) -> None:
    """The v3 app answers 'ok v3' where 'ok v2' is required: after the switch and restart."""
    envdir = at_v2.variant("health-v2", {"app.health.text": "ok v2", "app.health.timeout": 6})
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 5, res.stderr
    assert "failed at health" in res.stderr
    report = at_v2.last_report()
    steps = {s["name"]: s["outcome"] for s in report["steps"]}
    assert steps["switch"] == "ok" and steps["restart"] == "ok" and steps["health"] == "failed"
    assert steps["rollback: stop app"] == "ok"
    assert whole_state(at_v2) == before


def as_an_older_seed_wrote_it(record: dict[str, Any]) -> dict[str, Any]:
    """A journal record in version 1 (Seed before the typed record): no record_version,
    the write counters after the migrate in `after_migrate.write_counters`."""
    old = {k: v for k, v in record.items() if k not in ("record_version", "counter_readings")}
    handovers = [r for r in record.get("counter_readings", []) if r["event"] == "handover"]
    if record.get("kind") == "upgradedb" and handovers:
        old["after_migrate"] = {"write_counters": handovers[-1]["counters"]}
    return old


def test_rollback_of_v2_restores_the_v1_state(at_v2: Deployment) -> None:
    """From a fresh CI runner (no local journal copies), on a journal an older Seed wrote
    (version 1 records): rollback, history and the record it rewrites."""
    v2 = next(
        json.loads(p.read_text())
        for p in sorted((at_v2.home / "local" / "reports").glob("*.json"), reverse=True)
        if json.loads(p.read_text()).get("ref") == "v2"
        and json.loads(p.read_text()).get("outcome") == "succeeded"
    )
    journal = at_v2.state_dir / "journal"
    for path in journal.glob("*.json"):
        path.write_text(json.dumps(as_an_older_seed_wrote_it(json.loads(path.read_text()))))
    old = json.loads((journal / f"{v2['deploy_id']}.json").read_text())
    assert "after_migrate" in old and "record_version" not in old
    fresh = {"SEED_HOME": str(at_v2.home / "fresh-runner")}
    history = at_v2.fab("local", "history", "--json", extra_env=fresh)
    assert history.returncode == 0, history.stderr
    assert v2["deploy_id"] in [r["deploy_id"] for r in json.loads(history.stdout)]
    res = at_v2.fab(
        "local", "rollback", "--report", str(at_v2.home / "rollback.json"), extra_env=fresh
    )
    assert res.returncode == 0, res.stderr
    rewritten = json.loads((journal / f"{v2['deploy_id']}.json").read_text())
    assert (
        rewritten["rolled_back_by"]
        == json.loads((at_v2.home / "rollback.json").read_text())["deploy_id"]
    )
    assert rewritten["after_migrate"] == old["after_migrate"]  # a key it does not know, kept
    for key in ("backup", "before", "migrations", "previous_releases", "steps", "checks"):
        assert rewritten[key] == old[key], key
    assert at_v2.figures() == v2["before"]["tables"]
    assert at_v2.current() == f"releases/{v2['release_before']}"
    assert at_v2.http("/version/") == (200, "v1")
    report = json.loads((at_v2.home / "rollback.json").read_text())
    assert report["target"] == v2["deploy_id"] and report["verification"]["identical"]
    # a second plain rollback does not silently go further back
    again = at_v2.fab("local", "rollback")
    assert again.returncode == 4
    assert "already rolled back" in again.stderr and "--to" in again.stderr


def test_rollback_refuses_after_writes_unless_discarded(at_v2: Deployment) -> None:
    """A restore would lose rows written since the deploy (v2 could be reversed instead,
    keeping them: tests/e2e/test_reverse.py; here the restore is asked for)."""
    res = at_v2.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stderr
    with at_v2.admin("shop") as conn:
        conn.execute(
            "insert into shop_customer (name, email, created_at, first_name, last_name) "
            "values ('New Person', 'new@example.com', now(), 'New', 'Person')"
        )
    before = whole_state(at_v2)
    refused = at_v2.fab("local", "rollback", "--method", "restore")
    assert refused.returncode == 4, refused.stderr
    assert "public.shop_customer 1" in refused.stderr and "--discard-writes" in refused.stderr
    assert whole_state(at_v2) == before
    done = at_v2.fab("local", "rollback", "--method", "restore", "--discard-writes")
    assert done.returncode == 0, done.stderr
    assert at_v2.scalar("select count(*) from shop_customer where email = 'new@example.com'") == 0
    assert at_v2.http("/version/") == (200, "v1")


def test_snapshot_strategy_rolls_back_by_a_rename_swap(at_v2: Deployment) -> None:
    """backup.strategy snapshot+dump: a TEMPLATE copy in the maintenance window, swapped in
    on failure (no pg_restore), and dropped after a good deploy."""
    envdir = at_v2.variant("snapshot", {"backup.strategy": "snapshot+dump"})
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "bad-data", envdir=envdir)
    assert res.returncode == 5, res.stderr
    report = at_v2.last_report()
    assert report["rollback"]["method"] == "snapshot swap"
    assert report["snapshot"]["seconds"] >= 0 and report["rollback"]["verification"]["identical"]
    assert whole_state(at_v2) == before
    res = at_v2.fab("local", "upgradedb", "--ref", "v2", "--mode", "maintenance", envdir=envdir)
    assert res.returncode == 0, res.stderr
    snapshot = at_v2.last_report()["snapshot"]["database"]
    assert (
        at_v2.scalar(f"select count(*) from pg_database where datname = '{snapshot}'", "postgres")
        == 0
    )


def test_lost_connection_mid_deploy_rolls_back(at_v2: Deployment) -> None:
    """Every SSH connection of the deploy is cut (the sandbox sshd's session processes are
    killed) while the restart hook runs: Seed reconnects, takes its lock back and rolls back."""
    res = at_v2.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stderr
    sshd_pid = at_v2.sandbox.sshd_pidfile.read_text().strip()
    cut = f"current/deploy/appctl restart; pkill -KILL -P {sshd_pid}"
    envdir = at_v2.variant("cut", {"app.restart": cut})
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 5, res.stdout + res.stderr
    # which step sees the loss first depends on whether the hook's exit status got out
    # before its connection died (as root it does not; without privilege separation, as a
    # normal user, it does and the health check meets the dead connection)
    assert re.search(r"failed at (restart|health: ssh \S+: connection lost)", res.stderr)
    assert "rolled back; verified identical" in res.stderr
    steps = {s["name"]: s["outcome"] for s in at_v2.last_report()["steps"]}
    assert steps["rollback: reconnect"] == "ok"
    assert whole_state(at_v2) == before


def test_restore_failure_during_rollback_exits_6_with_an_accurate_report(
    at_v2: Deployment,
) -> None:
    """The restart hook damages the backups, then health fails: the restore must refuse the
    damaged file and say exactly where things stand."""
    res = at_v2.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stderr
    damage = (
        f"current/deploy/appctl restart && for f in {at_v2.backup_dir}/*.dump; "
        'do truncate -s 2000 "$f"; done'
    )
    envdir = at_v2.variant(
        "damaged", {"app.health.text": "ok v2", "app.health.timeout": 6, "app.restart": damage}
    )
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 6, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "ROLLBACK FAILED" in last and "sha256 mismatch" in last
    report = at_v2.last_report()
    state = report["rollback"]["state"]
    assert state["database"] == "NOT restored: still the migrated database"
    assert state["code"].startswith("current is ")
    # and that is the truth: the live database is the migrated v3 one, current the v2 release
    assert (
        at_v2.scalar(
            "select count(*) from django_migrations where name = '0005_remove_customer_name'"
        )
        == 1
    )
    assert at_v2.current() == f"releases/{state['code'].removeprefix('current is ')}"
