"""Which pending migrations may run while the old release serves (seed.deploy.online)."""

from __future__ import annotations

from typing import Any

from seed.config.environment import Waiver
from seed.deploy.online import ONLINE_SAFE, qualify
from seed.undo.reverse import assess


def field(**facts: Any) -> dict[str, Any]:
    base = {"column": "note", "null": True, "db_default": "none", "index": False,
            "unique": False, "fk_constraint": False, "many_to_many": False}  # fmt: skip
    return {**base, **facts}


def op(kind: str, tables: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "describe": f"{kind} x", "reversible": True, "reverse_noop": False,
            "tables": tables if tables is not None else ["shop_order"], **extra}  # fmt: skip


def migration(name: str, *ops: dict[str, Any], atomic: bool = True) -> dict[str, Any]:
    lines = [10 + i for i in range(len(ops))]
    return {"app": "shop", "name": name, "atomic": atomic, "operations": list(ops),
            "file": f"shop/migrations/{name}.py", "op_lines": lines}  # fmt: skip


def test_expand_only_operations_qualify_and_say_what_they_add() -> None:
    plan = [
        migration("0005_note", op("AddField", field=field())),
        migration(
            "0006_flag",
            op("AddField", field=field(column="flag", null=False, db_default="constant")),
        ),
        migration("0007_idx", op("AddIndexConcurrently", index="ix_placed"), atomic=False),
        migration(
            "0008_tag",
            op("CreateModel", ["shop_tag"]),
            op("AddIndex", ["shop_tag"], index="ix_tag"),
            op("AddField", ["shop_tag"], field=field(column="x", null=False)),
        ),
        migration(
            "0009_chk",
            op("AddConstraintNotValid", constraint="c"),
            op("ValidateConstraint", constraint="c"),
            op("AlterModelOptions"),
        ),
    ]
    q = qualify(plan, [])
    assert q.ok and q.reasons == []
    assert q.new_tables == ["shop_tag"]
    assert q.new_columns == [("shop_order", "note"), ("shop_order", "flag")]
    assert q.concurrent_indexes == ["ix_placed"]
    # and a reverse undoes every one of them exactly (rollback.method auto reverses them)
    rp = assess(plan, {"targets": {"shop": "0004_x"}})
    assert rp.possible and rp.automatic, rp.reason


def test_each_trap_is_refused_with_one_line_naming_the_migration_and_what_to_do() -> None:
    cases = {
        "AddField NOT NULL": (op("AddField", field=field(null=False)), "inserts would fail"),
        "expression default": (
            op("AddField", field=field(db_default="expression")),
            "rewrites the table",
        ),
        "foreign key": (
            op("AddField", field=field(fk_constraint=True, index=True)),
            "AddConstraintNotValid",
        ),
        "indexed field": (op("AddField", field=field(index=True)), "AddIndexConcurrently"),
        "plain AddIndex": (op("AddIndex", index="ix"), "use AddIndexConcurrently"),
        "AddConstraint": (op("AddConstraint", constraint="c"), "AddConstraintNotValid"),
        "RemoveField": (op("RemoveField"), "not expand-only"),
        "AlterField": (op("AlterField"), "not expand-only"),
        "RunPython undeclared": (op("RunPython", None), f"rule: {ONLINE_SAFE}"),
        "SeparateDatabaseAndState": (
            op("SeparateDatabaseAndState", database_operations=1),
            "not reviewed",
        ),
        "unknown facts": (op("AddField", facts_error="AttributeError: x"), "could not read"),
    }
    for label, (operation, words) in cases.items():
        q = qualify([migration("0005_x", operation)], [])
        assert not q.ok, label
        assert len(q.reasons) == 1 and "\n" not in q.reasons[0], label
        assert q.reasons[0].startswith("shop.0005_x (shop/migrations/0005_x.py:10): "), label
        assert words in q.reasons[0], (label, q.reasons[0])


def test_data_migrations_need_a_named_declaration_and_a_real_reverse() -> None:
    plan = [migration("0005_fill", op("RunPython", None))]
    assert not qualify(plan, [Waiver("shop.0005_fill", "*", "all fine")]).ok  # * declares nothing
    declared = [Waiver("shop.0005_fill", ONLINE_SAFE, "fills the new column only")]
    q = qualify(plan, declared)
    assert q.ok and q.declared == {"shop.0005_fill": "fills the new column only"}
    noop = [migration("0005_fill", op("RunPython", None, reverse_noop=True))]
    q = qualify(noop, declared)
    assert not q.ok and "no real reverse" in q.reasons[0]


def test_non_atomic_migrations_only_with_concurrent_index_builds() -> None:
    plan = [migration("0005_x", op("AddIndexConcurrently", index="ix"),
                      op("AddField", field=field()), atomic=False)]  # fmt: skip
    q = qualify(plan, [])
    assert not q.ok and "non-atomic" in q.reasons[0] and "AddField" in q.reasons[0]


def test_an_empty_plan_is_not_an_online_deploy() -> None:
    q = qualify([], [])
    assert not q.ok and "code-only" in q.reasons[0]


def test_a_required_check_that_compares_with_before_keeps_a_deploy_out_of_online() -> None:
    from seed.checks.spec import Check, Expectation
    from seed.deploy.online import Qualification
    from seed.deploy.plan import online_obstacles
    from seed.undo.reverse import ReversePlan

    ok, rp = Qualification(ok=True), ReversePlan(True, True, "additive")
    same = Check("orders unchanged", "post", "", Expectation("same"), kind="checksum")
    absolute = Check("no orphans", "post", "select 1", Expectation("zero_rows"), required=True)
    assert not same.holds_online and absolute.holds_online
    assert online_obstacles(ok, rp, "auto", [same, absolute]) == []  # skipped, not required
    required = Check(
        "orders unchanged", "post", "", Expectation("same"), kind="checksum", required=True
    )
    found = online_obstacles(ok, rp, "auto", [required])
    assert len(found) == 1 and "check 'orders unchanged' is required" in found[0]
    assert "rollback.method is restore" in online_obstacles(ok, rp, "restore", [])[0]
    blocked = ReversePlan(False, False, "RemoveField in shop.0005 destroys data")
    assert "cannot be reversed exactly" in online_obstacles(ok, blocked, "auto", [])[0]
