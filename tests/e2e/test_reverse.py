"""Reverse-migration rollback (DESIGN: Rollback, "Reverse"; issue: faults).

v2 is additive (two AddField) with a reversible data migration: from v1, a failed
deploy of it is undone by `migrate shop 0002` with v2's own code, verified exactly
(migration set, `pg_dump -s` schema, every table's count + checksum) — no restore,
no replaced database. A manual rollback reverses too, keeping rows written since.
`bad-reverse` is "reversible" but its reverse is no inverse: the verification sees
it and the backup is restored instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import whole_state
from tests.faults.test_writes import app_write, written


@pytest.fixture(scope="module")
def at_v1(deployment: Deployment) -> Iterator[Deployment]:
    deployment.reset()
    res = deployment.fab("local", "upgradedb", "--ref", "v1")
    assert res.returncode == 0, res.stderr
    yield deployment


def replaced_databases(dep: Deployment) -> int:
    return int(
        dep.scalar(
            "select count(*) from pg_database where datname like 'shop_replaced%'", "postgres"
        )
    )


def test_plan_says_how_a_rollback_would_go(at_v1: Deployment) -> None:
    res = at_v1.fab("local", "plan", "--ref", "v2")
    assert res.returncode == 0, res.stderr
    assert "rollback after this deploy: reverse the migrations" in res.stdout
    res = at_v1.fab("local", "plan", "--ref", "bad-data")
    assert "rollback after this deploy: restore from the backup" in res.stdout
    assert "no-op reverse" in res.stdout


def test_a_failed_additive_deploy_is_reversed_not_restored(at_v1: Deployment) -> None:
    # v2 answers "ok v2": the health check fails (after 6 s, not local.yml's 20)
    envdir = at_v1.variant("health-v1", {"app.health.text": "ok v1", "app.health.timeout": 6})
    before = whole_state(at_v1)
    replaced = replaced_databases(at_v1)
    res = at_v1.fab("local", "upgradedb", "--ref", "v2", envdir=envdir)
    assert res.returncode == 5, res.stdout + res.stderr
    assert "failed at health" in res.stderr and "rolled back; verified identical" in res.stderr
    report = at_v1.last_report()
    assert report["rollback"]["method"] == "reverse"
    assert report["rollback"]["verification"]["identical"]
    steps = {s["name"]: s["outcome"] for s in report["steps"]}
    assert steps["rollback: reverse migrations"] == "ok"
    assert steps["rollback: verify reverse"] == "ok"
    assert "rollback: database" not in steps
    assert replaced_databases(at_v1) == replaced  # no restore happened
    assert whole_state(at_v1) == before


def test_a_reverse_that_is_no_inverse_falls_back_to_the_backup(at_v1: Deployment) -> None:
    before = whole_state(at_v1)
    res = at_v1.fab("local", "upgradedb", "--ref", "bad-reverse")
    assert res.returncode == 5, res.stdout + res.stderr
    report = at_v1.last_report()
    assert report["rollback"]["method"] == "restore"
    assert "public.shop_customer" in report["rollback"]["reverse_failed"]
    steps = {s["name"]: s["outcome"] for s in report["steps"]}
    assert steps["rollback: verify reverse"] == "failed"
    assert steps["rollback: database"] == "ok" and steps["rollback: verify"] == "ok"
    assert whole_state(at_v1) == before


def test_manual_rollback_by_reverse_keeps_rows_written_since(at_v1: Deployment) -> None:
    res = at_v1.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stderr
    # users keep working on v2: a new customer, a new order
    with at_v1.admin("shop") as conn:
        conn.execute(
            "insert into shop_customer (name, email, created_at, first_name, last_name) "
            "values ('Ada Lovelace', 'ada@example.com', now(), 'Ada', 'Lovelace')"
        )
        conn.execute(
            "insert into shop_order (customer_id, total, status, placed_at) "
            "values (1, 12.34, 'new', now())"
        )
    res = at_v1.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "migrations reversed with its code (rows written since kept)" in res.stderr
    assert at_v1.scalar("select name from shop_customer where email = 'ada@example.com'") == (
        "Ada Lovelace"
    )
    assert at_v1.scalar("select count(*) from shop_customer") == 20001
    assert at_v1.scalar("select count(*) from shop_order") == 50001
    assert (
        at_v1.scalar(
            "select count(*) from information_schema.columns where table_name = 'shop_customer' "
            "and column_name in ('first_name', 'last_name')"
        )
        == 0
    )
    assert at_v1.http("/version/") == (200, "v1")
    report = at_v1.last_report()
    assert report["rollback"]["method"] == "reverse" and report["verification"]["identical"]


def test_an_automatic_rollback_after_the_app_wrote_reverses_and_keeps_the_rows(
    at_v1: Deployment,
) -> None:
    """Issue 18, defect 2c: v2 serves, the app writes, then v2's health check fails. A
    restore would drop the row; v2's migrations reverse exactly, so the rollback reverses
    (the row stays) and verifies every table the app did not write against the before-state."""
    hook = {"run": app_write(at_v1), "on": "local"}
    envdir = at_v1.variant(
        "health-v1-writes",
        {
            "app.health.text": "ok v1",
            "app.health.timeout": 4,
            "hooks": {"restart": {"after": hook}},
        },
    )
    res = at_v1.fab("local", "upgradedb", "--ref", "v2", envdir=envdir)
    assert res.returncode == 5, res.stdout + res.stderr
    report = at_v1.last_report()
    assert report["writes_since"]["tables"] == {"public.shop_customer": 1}
    assert report["rollback"]["method"] == "reverse"
    assert report["rollback"]["verification"]["written_since"] == ["public.shop_customer"]
    assert "rollback: database" not in {s["name"] for s in report["steps"]}
    assert written(at_v1)  # the app's row is kept
    assert at_v1.scalar("select count(*) from django_migrations where app = 'shop'") == 2
    assert at_v1.http("/version/") == (200, "v1")
