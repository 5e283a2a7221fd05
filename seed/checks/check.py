"""Checks: run read-only with a statement timeout (fail closed), judged against an expectation.

`explain` proves a check's queries parse and plan without running them; `measure`
runs them and returns the check's value; `satisfied` compares a value with the
expectation (and with the before-state when the expectation needs one).

Every query runs in a read-only transaction with the checksum session settings
(DESIGN: Checksums) set locally, so a session's TimeZone or DateStyle never changes
a value. Checksum and sample checks build their SQL from the catalog: a checksum
over the primary key and the chosen columns; a sample reads `size` random rows
before and the same keys after, through the before→after column mapping.

Values read from the app's rows never reach a report or the journal as they are: a
sample keeps its rows' values as keyed digests (seed/run/digests.py; same value, same
digest, under the same key) and says which key; the text a custom SQL check returns is
shown and recorded as a digest too (numbers as they are). Sample keys are kept (the rows
are found again by them), so a sample's key must be an integer or uuid column.
"""

from __future__ import annotations

import decimal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from seed.checks.spec import Check, Expectation
from seed.db.postgres import (
    CHECKSUM_SETTINGS,
    HASHABLE_SQL,
    ROW_TEXT,
    default_algorithm,
    row_hash_sql,
    same_figures,
)
from seed.run.digests import Digester, is_digest


class CheckQueryError(Exception):
    """The check's SQL failed or timed out: a failed check, never a pass."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    @property
    def missing_object(self) -> bool:
        """The query names a table or column that does not exist (yet)."""
        return self.sqlstate in ("42P01", "42703")


# the digester of a run given none: digests compare within this process only
_THIS_PROCESS = Digester.ephemeral()
# sample keys are kept as they are (the after-state finds the rows by them): a surrogate
# key, never a name or an address
KEY_TYPES = ("smallint", "integer", "bigint", "uuid")

# one output mark per CheckResult.outcome
MARKS = {"passed": "ok   ", "failed": "FAIL ", "skipped": "skip ", "error": "ERROR "}


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
    value: Any = None  # the raw measured value (a later before-state: the journal keeps it)

    @property
    def outcome(self) -> str:
        """passed, failed, skipped, or error: the check could not run (`error`) and that
        does not fail the run (a built-in invariant with `invariants.on_error: warn`; it is
        also `skipped`, so it counts as neither passed nor failed)."""
        if self.error is not None and self.passed:
            return "error"
        if self.skipped:
            return "skipped"
        return "passed" if self.passed else "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "when": self.when,
            "sql": self.sql,
            "expected": self.expected,
            "actual": jsonable(self.actual),
            "before": jsonable(self.before),
            "passed": self.passed,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "skipped": self.skipped,
        }

    def describe(self) -> str:
        if self.outcome == "error":
            return f"check '{self.name}' {self.skipped or 'ERROR: ' + str(self.error)}"
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


def private(value: Any, digester: Digester | None) -> Any:
    """`value` (a custom SQL check's, read from the app's rows) as a report or record holds
    it: numbers, booleans and NULL as they are, any other text as its keyed digest."""
    if isinstance(value, dict):
        return {str(k): private(v, digester) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [private(v, digester) for v in value]
    shown = jsonable(value)
    if isinstance(shown, str) and _num(shown) is None and not is_digest(shown):
        return (digester or _THIS_PROCESS)(shown)
    return value


def recorded(check: Check, value: Any, digester: Digester | None) -> Any:
    """A measured value as the journal keeps it (a later run's baseline): checksums and
    samples are already free of row values; other checks' text becomes digests."""
    if check.kind in ("checksum", "sample"):
        return jsonable_deep(value)
    return jsonable_deep(private(value, digester))


def jsonable_deep(value: Any) -> Any:
    """`jsonable` through lists and dicts (checksum and sample values)."""
    if isinstance(value, dict):
        return {str(k): jsonable_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable_deep(v) for v in value]
    return jsonable(value)


@contextmanager
def read_only(
    conn: psycopg.Connection[Any], statement_timeout: str, snapshot: str | None = None
) -> Iterator[None]:
    """A read-only transaction (in `snapshot` if given) with the timeout and the checksum
    settings local to it; any database error becomes a CheckQueryError."""
    assert conn.autocommit, "checks manage their own read-only transactions"
    try:
        if snapshot:
            # the before-state: exactly the data the backup and the table figures saw
            conn.execute("begin isolation level repeatable read read only")
            conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
        else:
            conn.execute("begin read only")
        conn.execute("select set_config('statement_timeout', %s, true)", (statement_timeout,))
        for name, value in CHECKSUM_SETTINGS.items():
            conn.execute("select set_config(%s, %s, true)", (name, value))
        yield
    except psycopg.Error as exc:
        message = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
        raise CheckQueryError(message.splitlines()[0], exc.sqlstate) from None
    finally:
        conn.execute("rollback")


def _query(
    conn: psycopg.Connection[Any], query: str | sql.Composable, params: Any = None
) -> list[tuple[Any, ...]]:
    # extended protocol (prepare=True): exactly one statement, so `...; commit; delete ...`
    # cannot end the read-only transaction and write
    text = query.as_string(conn) if isinstance(query, sql.Composable) else query
    cur = conn.execute(text.encode(), params, prepare=True)
    return cur.fetchall() if cur.description else []


def explain(
    conn: psycopg.Connection[Any], check: Check, statement_timeout: str, before: Any = None
) -> None:
    """EXPLAIN the check's queries (no execution). Raises CheckQueryError on any failure."""
    with read_only(conn, statement_timeout):
        for query, params in _queries(conn, check, before):
            text = query.as_string(conn) if isinstance(query, sql.Composable) else query
            _query(conn, "explain " + text, params)


def measure(
    conn: psycopg.Connection[Any],
    check: Check,
    statement_timeout: str,
    snapshot: str | None = None,
    before: Any = None,
    digester: Digester | None = None,
) -> Any:
    """The check's value (see the kinds in seed.checks.spec); `before` is the before-state
    value of checksum and sample checks (None: this is the before-state). A sample's
    values are `digester`'s digests (default: a key of this process alone)."""
    with read_only(conn, statement_timeout, snapshot):
        if check.kind == "checksum":
            columns, hashable, algorithm = _checksum_plan(conn, check, before)
            row = _query(conn, _checksum_query(check, columns, hashable, algorithm))[0]
            return {
                "columns": columns,
                "rows": int(row[0]),
                "checksum": str(row[1]),
                "algorithm": algorithm,
            }
        if check.kind == "sample":
            ((query, params),) = _queries(conn, check, before)
            rows = _query(conn, query, params)
            side = "after" if before else "before"
            digest = digester or _THIS_PROCESS
            return {
                "side": side,
                "columns": [b for b, _ in check.compare],
                "digests": digest.key_id,
                "rows": {str(r[0]): [digest(v) for v in r[1:]] for r in rows},
            }
        rows = _query(conn, check.sql)
    if check.expect.kind == "rows":
        return len(rows)
    if check.expect.on_rows:
        return [[jsonable(v) for v in r] for r in rows]
    if not rows:
        return None
    return rows[0][0]


def _queries(
    conn: psycopg.Connection[Any], check: Check, before: Any
) -> list[tuple[str | sql.Composable, Any]]:
    """The SQL a check runs (inside the read-only transaction: it may read the catalog)."""
    if check.kind == "checksum":
        return [(_checksum_query(check, *_checksum_plan(conn, check, before)), None)]
    if check.kind == "sample":
        key = check.key or _primary_key(conn, check)
        key_type = _query(
            conn,
            "select format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = to_regclass(%s) and attname = %s and not attisdropped",
            [check.table, key],
        )
        if not key_type:
            raise CheckQueryError(f"column {key} of {check.table} does not exist", "42703")
        if before is None and key_type[0][0] not in KEY_TYPES:
            raise CheckQueryError(
                f"sample key {key} of {check.table} is {key_type[0][0]}: its values would be "
                "written to the report as they are; sample by an integer or uuid key "
                "(sample.key: the primary key)"
            )
        if before is None:
            # a random sample; TABLESAMPLE first when the table is much bigger than it
            cols = sql.SQL(", ").join(
                sql.SQL("({})::text").format(sql.Identifier(b)) for b, _ in check.compare
            )
            estimate = _query(
                conn, "select reltuples from pg_class where oid = to_regclass(%s)", [check.table]
            )
            pct = min(100.0, 100.0 * 20 * check.size / max(float(estimate[0][0] or 0), 1.0))
            sample = (
                sql.SQL(" tablesample system ({})").format(sql.Literal(pct))
                if pct < 5
                else sql.SQL("")
            )
            query = sql.SQL(
                "select ({key})::text, {cols} from {table}{sample} order by random() limit {n}"
            ).format(
                key=sql.Identifier(key),
                cols=cols,
                table=_table(check),
                sample=sample,
                n=sql.Literal(check.size),
            )
            return [(query, None)]
        cols = sql.SQL(", ").join(
            sql.SQL("({})::text").format(sql.SQL(a)) for _, a in check.compare
        )
        query = sql.SQL(
            "select ({key})::text, {cols} from {table} where {key} = any(%s::{type}[])"
        ).format(
            key=sql.Identifier(key), cols=cols, table=_table(check), type=sql.SQL(key_type[0][0])
        )
        return [(query, [list(before["rows"])])]
    return [(check.sql, None)]


def _checksum_query(
    check: Check, columns: list[str], hashable: list[bool], algorithm: str
) -> sql.Composable:
    return sql.SQL("select count(*), coalesce(sum({h}), 0) from {table}").format(
        h=row_hash_sql(columns, hashable, algorithm), table=_table(check)
    )


def _table(check: Check) -> sql.Composable:
    assert check.table
    return sql.SQL(".").join(sql.Identifier(p) for p in check.table.split("."))


def _table_columns(
    conn: psycopg.Connection[Any], check: Check
) -> tuple[list[str], list[str], dict[str, bool]]:
    """(primary key columns, the other columns by position, hashable per column)."""
    rows = _query(
        conn,
        f"""
        select a.attname, coalesce(a.attnum = any(i.indkey), false), {HASHABLE_SQL}
          from pg_attribute a
          join pg_type t on t.oid = a.atttypid
          left join pg_index i on i.indrelid = a.attrelid and i.indisprimary
         where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped
         order by array_position(i.indkey::int2[], a.attnum), a.attnum
        """,
        [check.table],
    )
    if not rows:
        raise CheckQueryError(f'relation "{check.table}" does not exist', "42P01")
    hashable = {r[0]: bool(r[2]) for r in rows}
    return [r[0] for r in rows if r[1]], [r[0] for r in rows if not r[1]], hashable


def _checksum_plan(
    conn: psycopg.Connection[Any], check: Check, before: Any
) -> tuple[list[str], list[bool], str]:
    """(columns, hashable per column, algorithm): the before-state's when there is one."""
    pk, rest, hashable = _table_columns(conn, check)
    if before:
        columns = list(before["columns"])
        algorithm = str(before.get("algorithm", ROW_TEXT))
    elif check.columns:
        columns = pk + [c for c in check.columns if c not in pk]
        algorithm = default_algorithm(conn)
    else:
        columns = pk + [c for c in rest if c not in check.exclude]
        algorithm = default_algorithm(conn)
    missing = [c for c in columns if c not in hashable]
    if missing:
        raise CheckQueryError(f'column "{missing[0]}" does not exist in {check.table}', "42703")
    return columns, [hashable[c] for c in columns], algorithm


def _primary_key(conn: psycopg.Connection[Any], check: Check) -> str:
    pk, _, _ = _table_columns(conn, check)
    if len(pk) != 1:
        raise CheckQueryError(f"{check.table} has no single-column primary key: set sample.key")
    return pk[0]


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
    if kind == "zero_rows":
        return isinstance(actual, list) and not actual
    if kind == "exact_rows":
        return (
            isinstance(actual, list)
            and len(actual) == len(value)
            and all(
                len(a) == len(v) and all(_equal(x, y) for x, y in zip(a, v, strict=True))
                for a, v in zip(actual, value, strict=True)
            )
        )
    if kind == "same":
        return before is not None and not differences(actual, before)
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
    if kind == "gt":
        return n > decimal.Decimal(str(value))
    if kind == "lt":
        return n < decimal.Decimal(str(value))
    if kind == "between":
        return decimal.Decimal(str(value[0])) <= n <= decimal.Decimal(str(value[1]))
    if kind == "delta":
        b = _num(before)
        return b is not None and n - b == decimal.Decimal(str(value))
    raise ValueError(f"unknown expectation {kind}")


def differences(actual: Any, before: Any) -> list[str]:
    """How a checksum or sample value differs from its before-state (empty: the same)."""
    if not isinstance(actual, dict) or not isinstance(before, dict):
        return ["no value"]
    if "checksum" in actual:
        if same_figures(actual, before):
            return []
        return [f"{actual['rows']} rows, checksum {actual['checksum']}"]
    out = []
    names = before.get("columns") or []
    for key, old in before["rows"].items():
        new = actual["rows"].get(key)
        if new is None:
            out.append(f"key {key}: row gone")
        elif [jsonable(v) for v in new] != [jsonable(v) for v in old]:
            # which columns, not their values (the record holds digests only)
            changed = [
                names[i] if i < len(names) else f"column {i + 1}"
                for i, (o, n) in enumerate(zip(old, new, strict=True))
                if jsonable(o) != jsonable(n)
            ]
            out.append(f"key {key}: {', '.join(changed)} differ{'s' if len(changed) == 1 else ''}")
    return out


def comparable(before: Any, digester: Digester | None) -> tuple[Any, str | None]:
    """A sample's baseline as this run can compare it: (baseline, None), or (None, why not).
    One recorded by an older Seed holds the values themselves: digested now (like with
    like); one under another key (digests.secret changed, another environment's key)
    cannot be compared."""
    if not isinstance(before, dict) or "rows" not in before:
        return before, None
    digest = digester or _THIS_PROCESS
    if "digests" not in before:
        rows = {k: [digest(v) for v in vals] for k, vals in before["rows"].items()}
        return {**before, "digests": digest.key_id, "rows": rows}, None
    if before["digests"] != digest.key_id:
        return None, (
            "no comparable baseline: its sampled rows were digested under another key "
            "(digests.secret changed since)"
        )
    return before, None


def shown(check: Check, value: Any, before: Any = None, digester: Digester | None = None) -> Any:
    """A value as the report shows it: checksum/sample values are summarised, other
    checks' text digested (private())."""
    if check.kind == "checksum" and isinstance(value, dict):
        return f"{value['rows']} rows, checksum {value['checksum']}"
    if check.kind == "sample" and isinstance(value, dict):
        if before is None:
            return f"{len(value['rows'])} rows sampled"
        diff = differences(value, before)
        if not diff:
            return f"{len(before['rows'])} sampled rows as before"
        more = f" (+{len(diff) - 3} more)" if len(diff) > 3 else ""
        return f"{len(diff)} of {len(before['rows'])} differ: " + "; ".join(diff[:3]) + more
    return private(value, digester)


def expected_text(expect: Expectation, before: Any, digester: Digester | None = None) -> str:
    if expect.kind == "same" and isinstance(before, dict):
        if "checksum" in before:
            return f"{before['rows']} rows, checksum {before['checksum']}"
        return f"{len(before['rows'])} sampled rows as before"
    if expect.kind == "equals_before" and before is not None and not expect.tolerance_pct:
        return str(jsonable(private(before, digester)))
    if expect.kind == "delta" and before is not None:
        b = _num(before)
        if b is not None:
            return str(jsonable(b + decimal.Decimal(str(expect.value))))
    return expect.describe()


def result_of(
    check: Check, expected: str, actual: Any, before: Any, passed: bool, seconds: float, **more: Any
) -> CheckResult:
    """`check`'s result: its name, phase and query as the report shows them."""
    return CheckResult(
        check.name, check.when, check.sql or check.label, expected, actual, before, passed,
        seconds, **more,
    )  # fmt: skip


def skipped_check(check: Check, reason: str) -> CheckResult:
    """A check that could not apply (e.g. no baseline: its table did not exist before)."""
    return result_of(check, check.expect.describe(), None, None, True, 0.0, skipped=reason)


def run_check(
    conn: psycopg.Connection[Any],
    check: Check,
    statement_timeout: str,
    before: Any = None,
    snapshot: str | None = None,
    digester: Digester | None = None,
) -> CheckResult:
    """Run one check (EXPLAIN first, then the query) and evaluate it; never raises.
    `digester` makes the digests the report shows (and a sample's, compared with
    `before`'s)."""
    started = time.monotonic()
    if check.kind == "sample":
        before, why_not = comparable(before, digester)
        if why_not:
            return skipped_check(check, why_not)
    if check.expect.needs_before and before is None:
        return skipped_check(check, "no baseline")
    try:
        explain(conn, check, statement_timeout, before)
        actual = measure(conn, check, statement_timeout, snapshot, before, digester)
    except CheckQueryError as exc:
        seconds = time.monotonic() - started
        expected = check.expect.describe()
        return result_of(
            check, expected, None, shown(check, before, None, digester), False, seconds,
            error=str(exc),
        )  # fmt: skip
    judged = actual
    if is_digest(before) and check.kind in ("sql", "count"):
        judged = private(actual, digester)  # a recorded baseline: compared as digests
    return result_of(
        check,
        expected_text(check.expect, before, digester),
        shown(check, actual, before, digester),
        shown(check, before, None, digester),
        satisfied(check.expect, judged, before),
        time.monotonic() - started,
        value=actual,
    )
