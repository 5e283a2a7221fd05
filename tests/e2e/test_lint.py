"""`fab local lint` and the lint step of `upgradedb`, against the sandbox at v2.

Release `unsafe` (example/unsafe) adds a plain CREATE INDEX on shop_order (50,000 rows)
and a RunPython without reverse_code: lint blocks the index on a big table; the data
migration means a rollback restores the backup (a warning), and blocks where
`rollback.method: reverse` needs a reverse. Waivers let them through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import bring_to_v2


@pytest.fixture(scope="module")
def at_v2(deployment: Deployment) -> Iterator[Deployment]:
    bring_to_v2(deployment)
    yield deployment


def test_the_good_versions_pass(at_v2: Deployment) -> None:
    res = at_v2.fab("local", "lint", "--ref", "v3", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["pending"] == ["shop.0005_remove_customer_name"] and data["passed"]
    assert {f["rule"] for f in data["findings"]} == {"ban-drop-column"}  # a warning
    assert data["findings"][0]["level"] == "warn"
    assert data["findings"][0]["where"].startswith(
        "shop/migrations/0005_remove_customer_name.py:13, SQL line"
    )


def test_unsafe_index_blocks_and_irreversible_data_migration_warns(at_v2: Deployment) -> None:
    envdir = at_v2.variant("lint-small", {"lint.big_table_rows": 10000})
    res = at_v2.fab("local", "lint", "--ref", "unsafe", envdir=envdir)
    assert res.returncode == 7, res.stderr
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "seed: lint blocked shop.0005_order_status_index: require-concurrent-index-creation "
            "at shop/migrations/0005_order_status_index.py:14, SQL line 4"
        )
    )
    assert "(and 1 more)" not in res.stderr
    assert (
        "WARN   irreversible-data-migration in shop.0006_status_defaults "
        "(shop/migrations/0006_status_defaults.py:19): RunPython without reverse_code: Django "
        "cannot migrate back past it, so a rollback of this deploy restores the backup"
        in res.stdout
    )
    assert "on shop_order (50,000 rows)" in res.stdout
    # below lint.big_table_rows (default 100,000) the index is only a warning
    res = at_v2.fab("local", "lint", "--ref", "unsafe", "--json")
    assert res.returncode == 0, res.stderr
    levels = {f["rule"]: f["level"] for f in json.loads(res.stdout)["findings"]}
    assert levels["require-concurrent-index-creation"] == "warn"
    assert levels["irreversible-data-migration"] == "warn"
    # the plan says what it means: a rollback of this deploy restores the backup
    res = at_v2.fab("local", "plan", "--ref", "unsafe", "--json")
    assert res.returncode == 0, res.stderr
    rollback = json.loads(res.stdout)["migrations"]["rollback"]
    assert rollback["method"] == "restore" and "0006_status_defaults" in rollback["why"]
    # a rollback by reverse needs every data migration's reverse
    reverse = at_v2.variant("lint-reverse", {"rollback.method": "reverse"})
    res = at_v2.fab("local", "lint", "--ref", "unsafe", "--json", envdir=reverse)
    assert res.returncode == 7
    levels = {f["rule"]: f["level"] for f in json.loads(res.stdout)["findings"]}
    assert levels["irreversible-data-migration"] == "block"


def test_upgradedb_refuses_a_blocked_release_before_changing_anything(at_v2: Deployment) -> None:
    envdir = at_v2.variant("lint-small", {"lint.big_table_rows": 10000})
    before = (at_v2.figures(), at_v2.current(), at_v2.releases(), at_v2.backups())
    res = at_v2.fab("local", "upgradedb", "--ref", "unsafe", envdir=envdir)
    assert res.returncode == 4, res.stderr
    assert "lint blocked shop.0005_order_status_index" in res.stderr.strip().splitlines()[-1]
    assert (at_v2.figures(), at_v2.current(), at_v2.releases(), at_v2.backups()) == before
    report = at_v2.last_report()
    assert report["lint"]["blocking"] == 1 and not report["lint"]["passed"]


def test_waivers_let_it_through_and_are_reported(at_v2: Deployment) -> None:
    waivers = [
        {
            "migration": "shop.0005_order_status_index",
            "rule": "require-concurrent-index-creation",
            "reason": "orders are written only by the nightly import; built at 03:00",
        },
        {
            "migration": "shop.0006_status_defaults",
            "rule": "irreversible-data-migration",
            "reason": "changes no row; a rollback restores the backup",
        },
    ]
    envdir = at_v2.variant("lint-waived", {"lint.big_table_rows": 10000, "lint.waivers": waivers})
    res = at_v2.fab("local", "upgradedb", "--ref", "unsafe", envdir=envdir)
    assert res.returncode == 0, res.stderr
    assert "WAIVED require-concurrent-index-creation" in res.stderr
    report: dict[str, Any] = at_v2.last_report()
    waived = {f["rule"]: f["waived"] for f in report["lint"]["findings"] if f["waived"]}
    assert waived == {w["rule"]: w["reason"] for w in waivers}
    assert (
        at_v2.scalar("select count(*) from pg_indexes where indexname = 'shop_order_status_idx'")
        == 1
    )
