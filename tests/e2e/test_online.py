"""Online deploys (issue 23): expand-only migrations applied while the site serves.

The example shop's `expand` release (on v2) adds a nullable column and a concurrently
built index to `shop_order`, the table the clients write to; `contract` (on expand)
removes `Customer.name`. HTTP clients read and write through the balancer during every
deploy and undo: none may fail, and every order the site acknowledged must be in the
database afterwards.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import load as load_lib
from tests.e2e.conftest import Deployment
from tests.e2e.load import Load

READ_AND_WRITE = ("/health/", "/version/", "POST /orders/")
FAILING = {
    "name": "every order has a note (fails on purpose)",
    "sql": "select count(*) from shop_order where note is null",
    "expect": 0,
}


@pytest.fixture(scope="module")
def at_v2(deployment: Deployment) -> Iterator[Deployment]:
    """v2 on both app hosts of environments/local.yml, behind the sandbox's HAProxy."""
    deployment.reset()
    deployment.hosts = 2
    try:
        deployment.deploy("v1", "v2")
        yield deployment
    finally:
        deployment.hosts = 1


def steps_of(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["outcome"] for s in report["steps"]}


def missing_orders(dep: Deployment, load: Load) -> int:
    assert load.orders(), load.summary()
    with dep.admin("shop") as conn:
        return load_lib.missing_orders(conn, load.orders())


def columns(dep: Deployment, table: str) -> list[str]:
    with dep.admin("shop") as conn:
        rows = conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 "
            "and not attisdropped order by attnum",
            (table,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def indexes(dep: Deployment) -> dict[str, bool]:
    with dep.admin("shop") as conn:
        rows = conn.execute(
            "select indexrelid::regclass::text, indisvalid from pg_index "
            "where indrelid = 'shop_order'::regclass"
        ).fetchall()
    return {str(n): bool(v) for n, v in rows}


def test_the_plan_tells_online_from_maintenance_and_refuses_online_for_a_contract(
    at_v2: Deployment,
) -> None:
    expand = json.loads(at_v2.fab("local", "plan", "--ref", "expand", "--json").stdout)
    assert expand["mode"] == {
        "mode": "online",
        "why": "2 migration(s) pending, all expand-only",
    }
    online = expand["migrations"]["online"]
    assert online["new_columns"] == [["shop_order", "note"]]
    assert online["concurrent_indexes"] == ["shop_order_placed_at_idx"]
    # v2's checks.yml compares with the before-state: an online deploy skips those
    assert "customer rows unchanged" in online["skipped_checks"]
    contract = at_v2.fab("local", "plan", "--ref", "contract")
    assert "mode: maintenance" in contract.stdout
    assert "RemoveField Remove field name from customer: is not expand-only" in contract.stdout
    before = at_v2.current()
    refused = at_v2.fab("local", "upgradedb", "--ref", "contract", "--mode", "online")
    assert refused.returncode == 4, refused.stderr
    assert "--mode online refused" in refused.stderr
    assert "RemoveField Remove field name from customer: is not expand-only" in refused.stderr
    assert "nothing changed" in refused.stderr
    assert at_v2.current() == before


def test_a_failed_concurrent_index_build_leaves_no_invalid_index(at_v2: Deployment) -> None:
    """A transaction older than the build keeps CREATE INDEX CONCURRENTLY waiting until
    lock_timeout: the index stays behind, INVALID. Seed drops it before the retry and after
    the last attempt, then reverses the column: the schema is v2's again."""
    before = indexes(at_v2)
    envdir = at_v2.variant("cic", {"db.lock_timeout": "1s", "db.lock_retries": 1})
    with at_v2.admin("shop") as old:
        # a snapshot older than the build (a lock on shop_order would stop the AddField)
        old.execute("begin isolation level repeatable read")
        old.execute("select count(*) from shop_customer").fetchone()
        res = at_v2.fab("local", "upgradedb", "--ref", "expand", envdir=envdir)
        old.execute("rollback")
    assert res.returncode == 5, res.stdout[-3000:] + res.stderr
    report = at_v2.last_report()
    assert report["mode"] == "online" and report["migrations"]["attempts"] == 2
    assert "lock timeout" in report["message"]
    assert "public.shop_order_placed_at_idx" in report["online"]["invalid_dropped"]
    assert steps_of(report)["rollback: verify reverse"] == "ok"
    assert indexes(at_v2) == before
    assert "note" not in columns(at_v2, "shop_order")


def test_an_online_deploy_whose_check_fails_is_reversed_while_clients_write(
    at_v2: Deployment,
) -> None:
    old = at_v2.current()
    envdir = at_v2.variant("failing-check", checks=[FAILING])
    with Load(at_v2.lb_port, paths=READ_AND_WRITE) as load:
        res = at_v2.fab("local", "upgradedb", "--ref", "expand", envdir=envdir)
    assert res.returncode == 5, res.stdout[-3000:] + res.stderr
    report = at_v2.last_report()
    assert report["mode"] == "online" and report["rollback"]["method"] == "reverse"
    assert "undone while serving (downtime 0.0 s)" in report["message"]
    steps = steps_of(report)
    assert "maintenance on" not in steps and "rollback: database" not in steps
    verification = report["rollback"]["verification"]
    assert verification["identical"] and "public.shop_order" in verification["written_since"]
    assert report["downtime_seconds"] == 0
    assert load.failed == [], load.summary()
    assert missing_orders(at_v2, load) == 0
    assert "note" not in columns(at_v2, "shop_order")
    assert at_v2.current() == old


def test_an_expand_release_deploys_online_and_rolls_back_while_serving(
    at_v2: Deployment,
) -> None:
    old = at_v2.current()
    with Load(at_v2.lb_port, paths=READ_AND_WRITE) as load:
        res = at_v2.fab("local", "upgradedb", "--ref", "expand")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    report = at_v2.last_report()
    assert report["mode"] == "online" and report["downtime_seconds"] == 0
    assert "online, 2 migration(s) applied while serving" in report["message"]
    assert "downtime 0.0 s" in res.stderr
    steps = steps_of(report)
    assert "maintenance on" not in steps and steps["backup"] == steps["migrate"] == "ok"
    assert [r["event"] for r in report["counter_readings"]] == ["backup"]
    assert load.failed == [], load.summary()
    assert missing_orders(at_v2, load) == 0
    assert "note" in columns(at_v2, "shop_order")
    assert indexes(at_v2)["shop_order_placed_at_idx"] is True
    # a restore of an online deploy always needs --discard-writes (the app wrote meanwhile)
    restore = at_v2.fab("local", "rollback", "--method", "restore")
    assert restore.returncode == 4, restore.stderr
    assert "ran online" in restore.stderr and "--discard-writes" in restore.stderr
    # the new release wrote a note: a reverse would drop it, so it takes --discard-writes
    with at_v2.admin("shop") as conn:
        conn.execute("update shop_order set note = 'gift wrap' where id = 1")
    refused = at_v2.fab("local", "rollback")
    assert refused.returncode == 4, refused.stderr
    assert "shop_order.note (1 value(s))" in refused.stderr and "--discard-writes" in refused.stderr
    assert "note" in columns(at_v2, "shop_order")
    with Load(at_v2.lb_port, paths=READ_AND_WRITE) as load:
        res = at_v2.fab("local", "rollback", "--discard-writes")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    back = at_v2.last_report()
    assert back["downtime_seconds"] == 0 and "maintenance on" not in steps_of(back)
    assert back["verification"]["identical"]
    assert load.failed == [], load.summary()
    assert missing_orders(at_v2, load) == 0
    assert "note" not in columns(at_v2, "shop_order") and at_v2.current() == old


def test_values_the_new_release_wrote_stop_the_automatic_undo_before_the_reverse(
    at_v2: Deployment,
) -> None:
    """The first host serves `expand` and its users write a note; the second batch then
    fails (a switch hook). The undo puts the code back and stops before the reverse, which
    would drop the note: exit 6, the old release serving on the expanded schema. `rollback`
    refuses to drop it; `rollback --discard-writes` finishes, still serving."""
    old = at_v2.current()
    marker = at_v2.home / "second-batch-fails"
    marker.unlink(missing_ok=True)
    fail_second = f'[ "$SEED_DIRECTION" = rollback ] || test ! -e {marker}'
    envdir = at_v2.variant("second-fails", {"hooks": {"switch": {"before": fail_second}}})
    first = at_v2.deploy_tos[0] / "current"
    done: list[Any] = []
    deploy = threading.Thread(
        target=lambda: done.append(
            at_v2.fab(
                "local", "upgradedb", "--ref", "expand", envdir=envdir,
                extra_env={"SEED_FAULT": "stall@after switch 1/2", "SEED_FAULT_SECONDS": "5"},
            )
        )
    )  # fmt: skip
    deploy.start()
    deadline = time.monotonic() + 120
    while os.readlink(first) == old.split("/", 1)[-1] or os.readlink(first) == old:
        assert deploy.is_alive() and time.monotonic() < deadline, done
        time.sleep(0.2)
    with at_v2.admin("shop") as conn:  # a user of the new release leaves a note
        conn.execute("update shop_order set note = 'leave at the door' where id = 2")
    marker.touch()
    deploy.join()
    res = done[0]
    assert res.returncode == 6, res.stdout[-3000:] + res.stderr
    assert "shop_order.note (1 value(s))" in res.stderr and "--discard-writes" in res.stderr
    assert at_v2.current() == old and at_v2.http("/version/") == (200, "v2")
    assert "note" in columns(at_v2, "shop_order")  # expanded: v2 serves on it
    refused = at_v2.fab("local", "rollback")
    assert refused.returncode == 4 and "shop_order.note" in refused.stderr, refused.stderr
    with Load(at_v2.lb_port, paths=READ_AND_WRITE) as load:
        res = at_v2.fab("local", "rollback", "--discard-writes")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert "recovered interrupted online deploy" in res.stderr
    assert "maintenance on" not in res.stderr
    assert load.failed == [], load.summary()
    assert "note" not in columns(at_v2, "shop_order") and at_v2.current() == old


def test_the_contract_release_deploys_in_maintenance_mode(at_v2: Deployment) -> None:
    """From v2: expand's migrations and the contract step in one deploy (maintenance)."""
    assert at_v2.http("/version/") == (200, "v2")
    res = at_v2.fab("local", "upgradedb", "--ref", "contract")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    report = at_v2.last_report()
    assert report["mode"] == "maintenance" and "not online: " in report["mode_why"]
    assert "name" not in columns(at_v2, "shop_customer")
    assert "note" in columns(at_v2, "shop_order")
