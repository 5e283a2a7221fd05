"""seed.undo.reverse: which deploys a rollback may undo by reversing their migrations."""

from __future__ import annotations

from typing import Any

import pytest

from seed.undo.reverse import ReversePlan, assess, choose, compared, touched


def op(kind: str, tables: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "reversible": True, "reverse_noop": False, "tables": tables, **extra}


def migration(name: str, *ops: dict[str, Any], atomic: bool = True) -> dict[str, Any]:
    return {"app": "shop", "name": name, "atomic": atomic, "replaces": [], "operations": list(ops)}


TARGETS = {"targets": {"shop": "0002_demo_data"}, "problem": None}
V2 = [
    migration(
        "0003_first_last", op("AddField", ["shop_customer"]), op("AddField", ["shop_customer"])
    ),
    migration("0004_fill", op("RunPython")),
]


def test_additive_with_a_real_reverse_is_reversed_automatically() -> None:
    rp = assess(V2, TARGETS)
    assert (rp.possible, rp.automatic) == (True, True)
    assert rp.targets == {"shop": "0002_demo_data"}
    assert rp.tables == ["shop_customer"] and rp.apps_unknown == ["shop"]
    assert choose("auto", rp) == ("reverse", "additive, with reversible data migrations")


@pytest.mark.parametrize(
    ("ops", "reason"),
    [
        ([op("RemoveField", ["shop_customer"])], "RemoveField in shop.0005 destroys data"),
        ([op("DeleteModel", ["shop_order"])], "DeleteModel in shop.0005 destroys data"),
        ([op("RunPython", reverse_noop=True)], "has a no-op reverse"),
        ([op("RunPython", reversible=False)], "RunPython in shop.0005 is irreversible"),
    ],
)
def test_destructive_noop_and_irreversible_always_restore(
    ops: list[dict[str, Any]], reason: str
) -> None:
    rp = assess([*V2, migration("0005", *ops)], TARGETS)
    assert not rp.possible and reason in rp.reason
    for method in ("auto", "reverse"):
        assert choose(method, rp)[0] == "restore"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("AlterField", "may be lossy"),
        ("RunSQL", "cannot be reviewed"),
        ("SeparateDatabaseAndState", "not known"),
    ],
)
def test_other_reversible_operations_only_with_method_reverse(kind: str, reason: str) -> None:
    rp = assess([*V2, migration("0005", op(kind))], TARGETS)
    assert rp.possible and not rp.automatic and reason in rp.reason
    assert choose("auto", rp)[0] == "restore"
    assert choose("reverse", rp)[0] == "reverse"
    assert choose("restore", rp) == ("restore", "rollback.method is restore")


def test_merges_squashes_and_failed_non_atomic_migrations_restore() -> None:
    merged = assess(V2, {"targets": {}, "problem": "shop: applied migrations end in 2 leaves"})
    assert not merged.possible and "2 leaves" in merged.reason
    squashed = [{**V2[0], "replaces": [["shop", "0003_a"], ["shop", "0003_b"]]}]
    assert (
        "squashed"
        in assess(
            squashed, {"targets": {"shop": "x"}, "problem": "the plan applies a squashed migration"}
        ).reason
    )
    rp = assess(V2, TARGETS)
    assert choose("auto", rp, failed_non_atomic="shop.0004_fill") == (
        "restore",
        "non-atomic migration shop.0004_fill failed half way",
    )
    assert choose("auto", None)[0] == "restore"
    assert not assess([], TARGETS).possible


def test_round_trip_and_touched_tables() -> None:
    rp = assess(V2, TARGETS)
    assert ReversePlan.from_json(rp.to_json()) == rp
    tables = [
        "public.shop_customer",
        "public.shop_order",
        "public.auth_user",
        "public.django_content_type",
        "public.auth_permission",
    ]
    # RunPython may change any table of its app; other apps' tables are untouched
    assert touched(rp, tables) == {"public.shop_customer", "public.shop_order"}
    assert compared(tables) == ["public.shop_customer", "public.shop_order", "public.auth_user"]
