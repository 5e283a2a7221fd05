"""seed.checks.check: expectations in pure Python; queries against the sandbox PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from sandbox.servers import SandboxInfo
from seed.checks.check import (
    CheckQueryError,
    CheckResult,
    expected_text,
    explain,
    jsonable,
    measure,
    run_check,
    satisfied,
    skipped_check,
)
from seed.checks.spec import Check, Expectation
from seed.db.postgres import exported_snapshot

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]

E = Expectation


# --------------------------------------------------------------------------- satisfied


@pytest.mark.parametrize(
    ("expect", "actual", "before", "ok"),
    [
        # equals: numbers compare as exact decimals, whatever their Python type
        (E("equals", 3), Decimal("3"), None, True),
        (E("equals", 3), Decimal("3.000"), None, True),
        (E("equals", 3.5), Decimal("3.50"), None, True),
        (E("equals", 3), 4, None, False),
        (E("equals", 3), Decimal("3.0000001"), None, False),
        (E("equals", 0.3), 0.1 + 0.2, None, False),  # exact, no float fuzz
        (E("equals", 0), None, None, False),
        (E("equals", "abc"), "abc", None, True),
        (E("equals", "abc"), "abd", None, False),
        (E("equals", True), True, None, True),
        (E("equals", True), False, None, False),
        (E("not_equals", 3), Decimal("3"), None, False),
        (E("not_equals", 3), 2, None, True),
        (E("rows", 0), 0, None, True),
        (E("rows", 2), 3, None, False),
        # bounds
        (E("min", 5), Decimal("5"), None, True),
        (E("min", 5), 4.99, None, False),
        (E("min", 5), None, None, False),
        (E("min", 5), "not a number", None, False),
        (E("max", 2.5), Decimal("2.5"), None, True),
        (E("max", 2.5), Decimal("2.51"), None, False),
        (E("between", [1, 5]), 1, None, True),
        (E("between", [1, 5]), Decimal("5"), None, True),
        (E("between", [1, 5]), Decimal("5.0001"), None, False),
        (E("between", [1, 5]), 0, None, False),
        (E("between", [1, 5]), None, None, False),
        # against the before-state
        (E("equals_before", True), Decimal("10"), 10, True),
        (E("equals_before", True), Decimal("1.50"), 1.5, True),
        (E("equals_before", True), 11, 10, False),
        (E("equals_before", True), "a", "a", True),
        (E("equals_before", True, 10.0), Decimal("110"), Decimal("100"), True),
        (E("equals_before", True, 10.0), Decimal("110.01"), Decimal("100"), False),
        (E("equals_before", True, 10.0), 90, 100, True),
        (E("equals_before", True, 10.0), Decimal("89.99"), 100, False),
        (E("equals_before", True, 10.0), -109, -100, True),
        (E("equals_before", True, 10.0), 1, 0, False),
        (E("equals_before", True, 10.0), 100, None, False),
        (E("delta", 3), Decimal("13"), 10, True),
        (E("delta", 3), 12, 10, False),
        (E("delta", -2), 8, Decimal("10"), True),
        (E("delta", 3), 13, None, False),
    ],
)
def test_satisfied(expect: Expectation, actual: Any, before: Any, ok: bool) -> None:
    assert satisfied(expect, actual, before) is ok


def test_unknown_expectation_kind() -> None:
    with pytest.raises(ValueError, match="unknown expectation"):
        satisfied(E("roughly", 1), 1)


def test_expected_text_and_jsonable() -> None:
    assert expected_text(E("equals_before", True), Decimal("12.0")) == "12"
    assert expected_text(E("equals_before", True, 5.0), 12) == "equal to before ±5%"
    assert expected_text(E("delta", 3), Decimal("10")) == "13"
    assert expected_text(E("delta", 3), None) == "before +3"
    assert expected_text(E("min", 1), None) == ">= 1"
    assert jsonable(Decimal("7.000")) == 7
    assert jsonable(Decimal("7.25")) == "7.25"
    assert jsonable(None) is None
    assert jsonable(b"x") == "b'x'"


# --------------------------------------------------------------------------- against PostgreSQL


@pytest.fixture
def db(scratch_db: Scratch) -> psycopg.Connection[Any]:
    _, conn = scratch_db()
    conn.execute(
        "create table items (id int primary key, qty int not null, price numeric(10, 2));"
        "insert into items values (1, 1, 9.99), (2, 5, 20.00), (3, 7, null)"
    )
    return conn


def check(sql: str, expect: Expectation, when: str = "post") -> Check:
    return Check(name="probe", when=when, sql=sql, expect=expect)


def assert_clean(conn: psycopg.Connection[Any]) -> None:
    """The session is back to autocommit, idle, default timeout: checks leave nothing behind."""
    assert conn.autocommit
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert conn.execute("show statement_timeout").fetchone() == ("0",)
    assert conn.execute("show transaction_read_only").fetchone() == ("off",)


def test_passing_check(db: psycopg.Connection[Any]) -> None:
    result = run_check(db, check("select sum(price) from items", E("equals", 29.99)), "5s")
    assert result.passed is True
    assert result.actual == Decimal("29.99")
    assert result.error is None
    assert result.expected == "= 29.99"
    assert 0 <= result.seconds < 5
    assert result.to_json()["actual"] == "29.99"
    assert_clean(db)


def test_failing_check(db: psycopg.Connection[Any]) -> None:
    result = run_check(db, check("select count(*) from items", E("min", 4)), "5s")
    assert result.passed is False
    assert result.actual == 3
    assert result.error is None
    assert result.describe() == "check 'probe' (expected >= 4, got 3)"


def test_check_against_a_before_value(db: psycopg.Connection[Any]) -> None:
    same = run_check(db, check("select count(*) from items", E("equals_before", True)), "5s", 3)
    assert same.passed is True
    assert same.expected == "3"
    grew = run_check(db, check("select count(*) from items", E("delta", 1)), "5s", before=3)
    assert grew.passed is False
    assert grew.expected == "4"
    assert grew.describe() == "check 'probe' (expected 4, before 3, got 3)"


def test_sql_error_fails_the_check(db: psycopg.Connection[Any]) -> None:
    result = run_check(db, check("select count(*) from no_such_table", E("equals", 0)), "5s")
    assert result.passed is False
    assert result.actual is None
    assert result.error == 'relation "no_such_table" does not exist'
    assert "errored" in result.describe()
    assert result.to_json()["error"] == result.error
    assert_clean(db)


def test_statement_timeout_fails_the_check(db: psycopg.Connection[Any]) -> None:
    started = time.monotonic()
    result = run_check(db, check("select pg_sleep(2)", E("equals", "")), "200ms")
    assert time.monotonic() - started < 1.5
    assert result.passed is False
    assert result.error is not None
    assert "statement timeout" in result.error
    assert_clean(db)


def test_writes_are_refused_and_change_nothing(db: psycopg.Connection[Any]) -> None:
    for sql in (
        "delete from items",
        "update items set qty = 0 returning 1",
        "insert into items values (9, 9, 9) returning id",
        "select count(*) from (select nextval('s')) x",
        "create table sneaky as select 1 as id",
    ):
        db.execute("create sequence if not exists s")
        result = run_check(db, check(sql, E("min", 0)), "5s")
        assert result.passed is False, sql
        assert result.error is not None
        assert "read-only transaction" in result.error, result.error
    assert db.execute("select count(*), sum(qty) from items").fetchone() == (3, 13)
    assert db.execute("select to_regclass('sneaky'), nextval('s')").fetchone() == (None, 1)
    assert_clean(db)


def test_a_second_statement_cannot_escape_read_only(db: psycopg.Connection[Any]) -> None:
    db.execute("create table victims (id int primary key); insert into victims values (1), (2)")
    sql = "select count(*) from victims; commit; delete from victims"
    result = run_check(db, check(sql, E("equals", 2)), "5s")
    assert db.execute("select count(*) from victims").fetchone() == (2,)
    assert result.passed is False


def test_rows_expectation_counts_rows(db: psycopg.Connection[Any]) -> None:
    orphans = "select id from items where price is null"
    result = run_check(db, check(orphans, E("rows", 0)), "5s")
    assert (result.passed, result.actual) == (False, 1)
    assert result.expected == "0 rows"
    result = run_check(db, check("select id from items where qty > 1", E("rows", 2)), "5s")
    assert (result.passed, result.actual) == (True, 2)
    result = run_check(db, check("select id from items where false", E("rows", 0)), "5s")
    assert (result.passed, result.actual) == (True, 0)


def test_no_row_measures_none(db: psycopg.Connection[Any]) -> None:
    probe = check("select qty from items where false", E("equals", 0))
    assert measure(db, probe, "5s") is None
    assert run_check(db, probe, "5s").passed is False


def test_check_reads_the_exported_snapshot(
    db: psycopg.Connection[Any], sandbox: SandboxInfo
) -> None:
    dbname = db.execute("select current_database()").fetchone()
    assert dbname is not None
    with (
        psycopg.connect(sandbox.admin_conninfo(dbname[0]), autocommit=True) as holder,
        exported_snapshot(holder) as snap,
    ):
        db.execute("insert into items values (4, 1, 1)")
        probe = check("select count(*) from items", E("equals_before", True))
        at_snapshot = run_check(db, probe, "5s", before=3, snapshot=snap)
        assert (at_snapshot.passed, at_snapshot.actual) == (True, 3)
        now = run_check(db, probe, "5s", before=3)
        assert (now.passed, now.actual) == (False, 4)
    assert_clean(db)


def test_missing_object(db: psycopg.Connection[Any]) -> None:
    def error(sql: str) -> CheckQueryError:
        with pytest.raises(CheckQueryError) as info:
            measure(db, check(sql, E("equals", 0)), "5s")
        return info.value

    table = error("select count(*) from shop_missing")
    assert (table.sqlstate, table.missing_object) == ("42P01", True)
    column = error("select missing_column from items")
    assert (column.sqlstate, column.missing_object) == ("42703", True)
    assert 'column "missing_column" does not exist' in str(column)
    syntax = error("selec 1")
    assert (syntax.sqlstate, syntax.missing_object) == ("42601", False)
    division = error("select 1 / 0")
    assert (division.sqlstate, division.missing_object) == ("22012", False)
    with pytest.raises(CheckQueryError) as info:
        explain(db, check("select x from shop_missing", E("equals", 0)), "5s")
    assert info.value.missing_object
    assert_clean(db)


def test_explain_does_not_run_the_query(db: psycopg.Connection[Any]) -> None:
    started = time.monotonic()
    explain(db, check("select pg_sleep(5)", E("equals", "")), "5s")
    assert time.monotonic() - started < 2


def test_nan_fails_the_check_without_raising(db: psycopg.Connection[Any]) -> None:
    result = run_check(db, check("select 'NaN'::numeric", E("min", 0)), "5s")
    assert result.passed is False


def test_skipped_check() -> None:
    result = skipped_check(check("select 1", E("delta", 1)), "no baseline: table is new")
    assert isinstance(result, CheckResult)
    assert result.passed is True
    assert result.describe() == "check 'probe' skipped: no baseline: table is new"
    assert result.to_json()["skipped"] == "no baseline: table is new"
