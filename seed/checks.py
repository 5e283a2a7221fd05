"""Checks: SQL with an expectation, run read-only with a statement timeout (fail closed).

Plan apart from run: `explain` proves a query parses and plans without running it;
`measure` runs it and returns its value; `evaluate` compares a value with the
expectation (and the before-state baseline when the expectation needs one).
"""

from __future__ import annotations

import decimal
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from seed.config import Check, Expectation


class CheckQueryError(Exception):
    """The check's SQL failed or timed out: a failed check, never a pass."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    @property
    def missing_object(self) -> bool:
        """The query names a table or column that does not exist (yet)."""
        return self.sqlstate in ("42P01", "42703")


@dataclass
class CheckResult:
    name: str
    when: str
    sql: str
    expected: str
    actual: Any
    before: Any
    passed: bool
    seconds: float
    error: str | None = None
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "when": self.when,
            "sql": self.sql,
            "expected": self.expected,
            "actual": jsonable(self.actual),
            "before": jsonable(self.before),
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "skipped": self.skipped,
        }

    def describe(self) -> str:
        if self.skipped:
            return f"check '{self.name}' skipped: {self.skipped}"
        if self.error:
            return f"check '{self.name}' errored: {self.error}"
        exp = self.expected
        if self.before is not None and exp != str(jsonable(self.before)):
            exp = f"{exp}, before {jsonable(self.before)}"
        return f"check '{self.name}' (expected {exp}, got {jsonable(self.actual)})"


def jsonable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _read_only(
    conn: psycopg.Connection[Any], statement_timeout: str, snapshot: str | None = None
) -> None:
    if snapshot:
        # the before-state: exactly the data the backup and the table figures saw
        conn.execute("begin isolation level repeatable read read only")
        conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
    else:
        conn.execute("begin read only")
    conn.execute("select set_config('statement_timeout', %s, true)", (statement_timeout,))


def explain(conn: psycopg.Connection[Any], check: Check, statement_timeout: str) -> None:
    """EXPLAIN the check's SQL (no execution). Raises CheckQueryError on any failure."""
    _run(conn, f"explain {check.sql}", statement_timeout)


def measure(
    conn: psycopg.Connection[Any],
    check: Check,
    statement_timeout: str,
    snapshot: str | None = None,
) -> Any:
    """The check's value: the row count for `rows` expectations, else the first column."""
    rows = _run(conn, check.sql, statement_timeout, snapshot)
    if check.expect.kind == "rows":
        return len(rows)
    if not rows:
        return None
    return rows[0][0]


def _run(
    conn: psycopg.Connection[Any],
    query: str,
    statement_timeout: str,
    snapshot: str | None = None,
) -> list[tuple[Any, ...]]:
    assert conn.autocommit, "checks manage their own read-only transactions"
    try:
        _read_only(conn, statement_timeout, snapshot)
        # extended protocol: exactly one statement, so `...; commit; delete ...` cannot
        # end the read-only transaction and write
        cur = conn.execute(query.encode(), prepare=True)
        rows = cur.fetchall() if cur.description else []
        return rows
    except psycopg.Error as exc:
        message = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
        raise CheckQueryError(message.splitlines()[0], exc.sqlstate) from None
    finally:
        conn.execute("rollback")


def _num(value: Any) -> decimal.Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | decimal.Decimal):
        return decimal.Decimal(str(value))
    if isinstance(value, str):
        try:
            return decimal.Decimal(value)
        except decimal.InvalidOperation:
            return None
    return None


def _equal(a: Any, b: Any) -> bool:
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return na == nb
    return bool(jsonable(a) == jsonable(b))


def satisfied(expect: Expectation, actual: Any, before: Any = None) -> bool:
    """Whether `actual` meets `expect`; numbers compare as exact decimals."""
    kind, value = expect.kind, expect.value
    if kind in ("equals", "rows"):
        return _equal(actual, value)
    if kind == "not_equals":
        return not _equal(actual, value)
    if kind == "equals_before":
        if expect.tolerance_pct:
            na, nb = _num(actual), _num(before)
            if na is None or nb is None:
                return False
            allowed = abs(nb) * decimal.Decimal(str(expect.tolerance_pct)) / 100
            return abs(na - nb) <= allowed
        return _equal(actual, before)
    n = _num(actual)
    if n is None or n.is_nan():
        return False
    if kind == "min":
        return n >= decimal.Decimal(str(value))
    if kind == "max":
        return n <= decimal.Decimal(str(value))
    if kind == "between":
        return decimal.Decimal(str(value[0])) <= n <= decimal.Decimal(str(value[1]))
    if kind == "delta":
        b = _num(before)
        return b is not None and n - b == decimal.Decimal(str(value))
    raise ValueError(f"unknown expectation {kind}")


def expected_text(expect: Expectation, before: Any) -> str:
    if expect.kind == "equals_before" and before is not None and not expect.tolerance_pct:
        return str(jsonable(before))
    if expect.kind == "delta" and before is not None:
        b = _num(before)
        if b is not None:
            return str(jsonable(b + decimal.Decimal(str(expect.value))))
    return expect.describe()


def skipped_check(check: Check, reason: str) -> CheckResult:
    """A check that could not apply (e.g. no baseline: its table did not exist before)."""
    return CheckResult(
        check.name,
        check.when,
        check.sql,
        check.expect.describe(),
        None,
        None,
        True,
        0.0,
        skipped=reason,
    )


def run_check(
    conn: psycopg.Connection[Any],
    check: Check,
    statement_timeout: str,
    before: Any = None,
    snapshot: str | None = None,
) -> CheckResult:
    """Run one check (EXPLAIN first, then the query) and evaluate it; never raises."""
    started = time.monotonic()
    try:
        explain(conn, check, statement_timeout)
        actual = measure(conn, check, statement_timeout, snapshot)
    except CheckQueryError as exc:
        return CheckResult(
            check.name,
            check.when,
            check.sql,
            check.expect.describe(),
            None,
            before,
            False,
            time.monotonic() - started,
            str(exc),
        )
    return CheckResult(
        check.name,
        check.when,
        check.sql,
        expected_text(check.expect, before),
        actual,
        before,
        satisfied(check.expect, actual, before),
        time.monotonic() - started,
    )
