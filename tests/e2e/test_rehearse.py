"""`fab local rehearse`: release `rewrite` (numeric(10,2) -> numeric(12,3) on shop_order)
rehearsed on a restored copy with shop_order grown past 1M rows, extrapolated to a
`prodlike` environment twice that size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from sandbox.servers import SandboxSpec, _read_pgpass, sandbox_up
from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import bring_to_v2

GROWN = 1_000_000


@pytest.fixture(scope="module")
def big(deployment: Deployment) -> Iterator[tuple[Deployment, Path]]:
    dep = deployment
    bring_to_v2(dep)
    with dep.admin("shop") as conn:
        conn.execute(
            "insert into shop_order (customer_id, total, status, placed_at) "
            "select 1 + g %% 20000, (g %% 50000) / 100.0, 'paid', "
            "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' "
            "from generate_series(1, %s) g",
            (GROWN,),
        )
    # analyzed from another session, after this one's statistics are flushed at its end:
    # a backend reports its inserts up to a second late, and counted after ANALYZE they
    # double n_live_tup (which the row estimate takes when larger than reltuples)
    with dep.admin("shop") as conn:
        conn.execute("vacuum analyze shop_order")
    res = dep.fab("local", "backup")
    assert res.returncode == 0, res.stderr
    # prodlike: a database whose shop_order has about twice as many rows
    with dep.admin() as conn:
        conn.execute("drop database if exists shop_prodlike")
        conn.execute("create database shop_prodlike owner shop")
    with dep.admin("shop_prodlike") as conn:
        conn.execute(
            "create table shop_order as select g as id from generate_series(1, %s) g",
            (2 * (GROWN + 50_000),),
        )
        conn.execute(
            "create table shop_customer as select g as id from generate_series(1, 20000) g"
        )
    with dep.admin("shop_prodlike") as conn:  # as above
        conn.execute("analyze")
    envdir = dep.variant("rehearse")
    (envdir / "prodlike.yml").write_text(
        yaml.safe_dump({"extends": "local", "db": {"name": "shop_prodlike"}})
    )
    yield dep, envdir


def rehearsal(dep: Deployment, envdir: Path, *args: str) -> Any:
    return dep.fab("local", "rehearse", "--ref", "rewrite", *args, envdir=envdir)


def test_a_rewrite_is_timed_its_lock_seen_and_extrapolated(big: Any) -> None:
    dep, envdir = big
    before = (dep.figures(), dep.current(), dep.releases())
    res = rehearsal(dep, envdir, "--scale-from", "prodlike", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    section = report["rehearsal"]
    assert section["scale_from"] == "prodlike"
    (item,) = section["migrations"]
    assert item["migration"] == "shop.0005_order_total_precision"
    assert item["rewrites"] == ["shop_order"]
    lock = item["locks"][0]
    assert lock["table"] == "shop_order" and lock["mode"] == "AccessExclusiveLock"
    assert lock["blocks_writes"] and 0.1 < lock["seconds"] <= item["seconds"] + 0.1
    assert item["rows"]["shop_order"] == GROWN + 50_000
    assert 1.9 < item["scale"] < 2.1  # prodlike holds about twice the rows
    assert item["predicted_seconds"] == pytest.approx(item["seconds"] * item["scale"], rel=0.01)
    predicted = item["predicted_locks"][0]
    assert predicted["seconds"] == pytest.approx(lock["seconds"] * item["scale"], rel=0.01)
    assert "AccessExclusiveLock on shop_order" in res.stderr
    # the post checks ran on the rehearsed copy
    assert {c["name"] for c in report["checks"]} >= {"customers unchanged", "orders unchanged"}
    assert all(c["passed"] for c in report["checks"])
    # the real database and code are untouched, the scratch database gone
    assert (dep.figures(), dep.current(), dep.releases()) == before
    assert (
        dep.scalar(
            "select count(*) from pg_database where datname like 'shop_rehearse_%'", "postgres"
        )
        == 0
    )
    assert (
        dep.scalar(
            "select count(*) from django_migrations where app = 'shop' and name like '0005%'"
        )
        == 0
    )


def test_the_budget_gate_blocks_it(big: Any) -> None:
    dep, envdir = big
    gated = dep.variant("rehearse-budget", {"rehearse.max_lock_seconds": 0.01})
    (gated / "prodlike.yml").write_text((envdir / "prodlike.yml").read_text())
    res = rehearsal(dep, gated, "--scale-from", "prodlike")
    assert res.returncode == 7, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert (
        "over budget: shop.0005_order_total_precision holds AccessExclusiveLock on shop_order"
        in last
    )
    assert "max_lock_seconds 0.01" in last


def test_upgradedb_rehearses_first_and_refuses_over_budget(big: Any) -> None:
    dep, _ = big
    envdir = dep.variant(
        "rehearse-upgradedb",
        {
            "rehearse.max_total_seconds": 0.01,
            "rehearse.before_upgradedb": True,
            # lint blocks the rewrite of a 1M-row table; waived, the rehearsal still gates
            "lint.waivers": [
                {
                    "migration": "shop.0005_order_total_precision",
                    "rule": "changing-column-type",
                    "reason": "measured by the rehearsal instead",
                }
            ],
        },
    )
    before = (dep.figures(), dep.current(), dep.releases(), dep.backups())
    res = dep.fab("local", "upgradedb", "--ref", "rewrite", envdir=envdir)
    assert res.returncode == 4, res.stderr
    assert "rehearsal over budget: all migrations" in res.stderr.strip().splitlines()[-1]
    assert (dep.figures(), dep.current(), dep.releases(), dep.backups()) == before


def test_a_separate_cluster_holds_the_scratch_database(
    big: Any, sandbox_spec_factory: Callable[[], SandboxSpec]
) -> None:
    """rehearse.cluster: the copy is restored, migrated and dropped on another PostgreSQL
    (same roles and passwords); the environment's own cluster never sees it."""
    dep, _ = big
    spec = sandbox_spec_factory()
    other_info = sandbox_up(spec)
    passwords = _read_pgpass(dep.root / "pgpass")  # the same roles and passwords as db:
    with psycopg.connect(other_info.admin_conninfo(), autocommit=True) as other:
        for user, password in passwords.items():
            other.execute(
                psycopg.sql.SQL("alter role {} password {}").format(
                    psycopg.sql.Identifier(user), psycopg.sql.Literal(password)
                )
            )
    envdir = dep.variant(
        "rehearse-cluster", {"rehearse.cluster": {"host": "127.0.0.1", "port": spec.pg_port}}
    )
    res = rehearsal(dep, envdir, "--json")
    assert res.returncode == 0, res.stderr
    section = json.loads(res.stdout)["rehearsal"]
    assert section["cluster"] == f"127.0.0.1:{spec.pg_port}"
    assert section["migrations"][0]["rewrites"] == ["shop_order"]
    assert f"127.0.0.1:{spec.pg_port} (rehearse.cluster)" in res.stderr
    # the scratch database lived on the other cluster, and is gone from it too
    scratch = section["scratch"]
    assert f"restored into {scratch}" in res.stderr
    with psycopg.connect(
        f"host=127.0.0.1 port={spec.pg_port} user=postgres dbname=postgres "
        f"password={passwords['postgres']}",
        autocommit=True,
    ) as other:
        assert other.execute(
            "select count(*) from pg_database where datname = %s", (scratch,)
        ).fetchone() == (0,)
