"""Lint rules (seed/rehearse/lint.py) on migration plans shaped like the migrate host's output,
and squawk (the real binary) on Django's SQL."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from seed.config.environment import LintConfig, Waiver
from seed.errors import ConfigError, PreflightFailed
from seed.rehearse import lint


def op(kind: str, tables: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "describe": f"{kind} op",
        "reversible": True,
        "reverse_noop": False,
        "tables": tables,
        **more,
    }


def migration(name: str, *ops: dict[str, Any], sql: str = "", app: str = "shop") -> Any:
    return {
        "app": app,
        "name": name,
        "atomic": True,
        "operations": list(ops),
        "sql": sql,
        "file": f"{app}/migrations/{name}.py",
        "op_lines": [10 + i for i in range(len(ops))],
    }


def rules(result: lint.LintResult) -> dict[str, str]:
    return {f.rule: f.level for f in result.findings}


def test_expand_and_contract_in_one_deploy_blocks() -> None:
    plan = [
        migration("0003_add_first", op("AddField", ["shop_customer"])),
        migration("0004_fill", op("RunPython")),
        migration("0005_remove_name", op("RemoveField", ["shop_customer"])),
    ]
    result = lint.lint(plan, {}, LintConfig(), [])
    (finding,) = result.blocking
    assert finding.rule == "contract-with-expand"
    assert finding.where == "shop/migrations/0005_remove_name.py:10"
    assert "shop.0003_add_first" in finding.message
    # the contract alone (its expand deployed before) passes
    assert not lint.lint(plan[2:], {}, LintConfig(), []).blocking
    # a first deploy has no release running during it: nothing to keep compatible
    assert lint.lint(plan, {}, LintConfig(), [], first_deploy=True).findings == []


def test_an_earlier_data_migration_of_the_app_only_warns_about_a_contract() -> None:
    """Its tables are unknown: it may well not touch the table a later RemoveField
    contracts (a real project has data migrations in most apps)."""
    plan = [
        migration("0004_fill_orders", op("RunPython")),
        migration("0005_remove_name", op("RemoveField", ["shop_customer"])),
    ]
    result = lint.lint(plan, {}, LintConfig(), [])
    assert rules(result) == {"contract-with-expand": "warn"} and not result.blocking


def test_tables_created_in_the_deploy_stay_created_when_renamed_or_moved() -> None:
    plan = [
        migration("0001_initial", op("CreateModel", ["shop_cart"])),
        migration("0002_rename", op("RenameModel", ["shop_basket", "shop_cart"])),
        migration("0003_table", op("AlterModelTable", ["shop_basket", "shop_baskets"])),
        migration(
            "0004_move",
            op("SeparateDatabaseAndState", ["orders_basket", "shop_baskets"]),
        ),
        migration("0005_add", op("AddField", ["orders_basket"])),
        migration("0006_drop", op("RemoveField", ["orders_basket"])),
    ]
    assert lint.lint(plan, {}, LintConfig(), []).findings == []
    # the same carries of a table that existed before: renames warn, the contract blocks
    existing = [m for m in plan if m["name"] != "0001_initial"]
    found = rules(lint.lint(existing, {}, LintConfig(), []))
    assert found == {"rename": "warn", "contract-with-expand": "block"}


def test_tables_created_in_the_same_deploy_may_be_changed_freely() -> None:
    # Django's own contenttypes 0001 + 0002 on a first deploy
    plan = [
        migration("0001_initial", op("CreateModel", ["django_content_type"]), app="contenttypes"),
        migration(
            "0002_remove_content_type_name",
            op("AlterField", ["django_content_type"]),
            op("RunPython", reverse_noop=True),
            op("RemoveField", ["django_content_type"]),
            app="contenttypes",
        ),
    ]
    result = lint.lint(plan, {}, LintConfig(), [])
    assert not result.blocking
    assert rules(result) == {"noop-reverse": "warn"}


def test_irreversible_code_means_a_restore_and_blocks_only_where_a_reverse_is_needed() -> None:
    plan = [
        migration("0006_backfill", op("RunPython", reversible=False)),
        migration("0007_sql", op("RunSQL", reversible=False)),
    ]
    result = lint.lint(plan, {}, LintConfig(), [])
    assert rules(result) == {"irreversible-data-migration": "warn", "irreversible-sql": "warn"}
    assert "a rollback of this deploy restores the backup" in result.findings[0].message
    needs = lint.lint(plan, {}, LintConfig(), [], rollback_method="reverse")
    assert rules(needs) == {"irreversible-data-migration": "block", "irreversible-sql": "block"}
    assert "rollback.method is reverse, which needs one" in needs.findings[0].message
    waived = lint.lint(
        plan,
        {},
        LintConfig(),
        [
            Waiver("shop.0006_backfill", "irreversible-data-migration", "one-off"),
            Waiver("shop.0007_other", "*", "wrong migration"),
        ],
        rollback_method="reverse",
    )
    assert [f.rule for f in waived.blocking] == ["irreversible-sql"]
    assert waived.findings[0].waived == "one-off"


def test_schema_and_data_in_one_migration_warns_on_a_big_table_only() -> None:
    plan = [migration("0005_mixed", op("AddField", ["shop_order"]), op("RunPython"))]
    config = LintConfig(big_table_rows=1000)
    assert rules(lint.lint(plan, {"shop_order": 999}, config, [])) == {}
    found = rules(lint.lint(plan, {"shop_order": 5000}, config, []))
    assert found == {"schema-and-data-on-big-table": "warn"}


def test_squawk_blocks_lock_taking_sql_on_a_big_table_only() -> None:
    sql = (
        "--\n-- Create index shop_order_status_idx on field(s) status of model order\n--\n"
        'CREATE INDEX "shop_order_status_idx" ON "shop_order" ("status");'
    )
    plan = [migration("0005_index", op("AddIndex", ["shop_order"]), sql=sql)]
    config = LintConfig(big_table_rows=1000)
    small = lint.lint(plan, {"shop_order": 10}, config, [])
    assert rules(small) == {"require-concurrent-index-creation": "warn"}
    big = lint.lint(plan, {"shop_order": 10_000}, config, [])
    (finding,) = big.blocking
    assert finding.table == "shop_order" and "(10,000 rows)" in finding.message
    assert finding.where == "shop/migrations/0005_index.py:10, SQL line 4"
    # Seed's Django exclusions: no lock_timeout / statement_timeout / robust-stmts noise
    assert not {f.rule for f in big.findings} & set(lint.DJANGO_EXCLUDES)
    # configured: excluded, or always blocking
    assert (
        lint.lint(plan, {}, LintConfig(exclude=("require-concurrent-index-creation",)), []).findings
        == []
    )
    forced = lint.lint(plan, {}, LintConfig(block=("require-concurrent-index-creation",)), [])
    assert forced.blocking


def test_sql_lines_map_to_their_operation() -> None:
    lines = ["--", "-- Add field a", "--", "ALTER 1;", "--", "-- Add field b", "--", "ALTER 2;"]
    assert lint._op_of_line(lines) == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"waivers: [{migration: shop.0005_x, rule: r}]", "needs migration, rule and a reason"),
        (b"waivers: {}", "expected `waivers:` with a list"),
        (b"waivers: [", "deploy/lint.yml"),
    ],
)
def test_bad_repo_waivers_name_the_file(text: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=r"deploy/lint\.yml") as err:
        lint.repo_waivers(text, "deploy/lint.yml")
    assert message in str(err.value)


def test_repo_waivers_read() -> None:
    text = b"waivers:\n  - {migration: shop.0005_x, rule: '*', reason: reviewed by dba}\n"
    assert lint.repo_waivers(text, "f") == [Waiver("shop.0005_x", "*", "reviewed by dba")]


def test_squawk_is_found_wherever_pip_put_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not only beside sys.executable (a venv): an interpreter whose scripts are elsewhere
    (a system Python with `pip install --user`, pipx) finds squawk on PATH; none at all is
    one clear line (exit 4), not a FileNotFoundError."""
    real = lint.squawk_binary()
    elsewhere = tmp_path / "python" / "bin"
    elsewhere.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(elsewhere / "python3"))
    monkeypatch.setattr(sysconfig, "get_path", lambda *a, **k: str(tmp_path / "nowhere"))
    on_path = tmp_path / "user-bin"
    on_path.mkdir()
    (on_path / "squawk").symlink_to(real)
    monkeypatch.setenv("PATH", f"{on_path}:/usr/bin:/bin")
    assert lint.squawk_binary() == on_path / "squawk"
    assert lint.squawk("alter table t add column c int;", atomic=True) == []
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(PreflightFailed, match=r"squawk is not installed.*pip install squawk-cli"):
        lint.squawk_binary()


def test_a_third_party_apps_migrations_warn_with_its_name() -> None:
    """The user cannot edit an installed distribution's migrations: findings warn, naming
    it; they block only when they lock a big table or lint.block says so; a waiver may name
    the distribution."""
    sql = (
        "--\n-- Create index tokens_key_idx on field(s) key of model token\n--\n"
        'CREATE INDEX "authtoken_token_key_idx" ON "authtoken_token" ("key");'
    )
    third = [
        migration(
            "0003_tokenproxy",
            op("RunPython", reversible=False),
            op("AddIndex", ["authtoken_token"]),
            sql=sql,
            app="authtoken",
        )
    ]
    third[0]["distribution"] = "djangorestframework 3.15.2"
    result = lint.lint(third, {}, LintConfig(), [], rollback_method="reverse")
    assert rules(result) == {
        "irreversible-data-migration": "warn",
        "require-concurrent-index-creation": "warn",
    }
    assert all(f.distribution == "djangorestframework 3.15.2" for f in result.findings)
    assert result.findings[0].message.startswith(
        "(from the installed distribution djangorestframework 3.15.2) "
    )
    config = LintConfig(big_table_rows=1000)
    big = lint.lint(third, {"authtoken_token": 5000}, config, [])
    assert [f.rule for f in big.blocking] == ["require-concurrent-index-creation"]
    forced = lint.lint(third, {}, LintConfig(block=("irreversible-data-migration",)), [])
    assert [f.rule for f in forced.blocking] == ["irreversible-data-migration"]
    waiver = Waiver("djangorestframework", "*", "reviewed upstream")
    assert not lint.lint(third, {"authtoken_token": 5000}, config, [waiver]).blocking
