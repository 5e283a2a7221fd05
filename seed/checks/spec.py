"""What a check is, parsed from YAML: the environment file's `checks:` and `invariants:`,
and `deploy/checks.yml` in the app repository (checks travel with their migration).

Kinds (one per check):
- `sql:` + `expect:` — custom SQL with an expectation (a value, ==, !=, >=, <=, >, <,
  between, equals_before (± tolerance_pct), delta, rows, zero_rows, exact_rows);
- `count: {table: T, where: ...}` or `count: {sql: ...}` + `expect:` — row counts;
- `checksum: {table: T, columns: [...] | except: [...]}` — DESIGN checksum over the
  primary key and the named columns (or every column but `except`), equal to before;
- `sample: {table: T, key: id, size: 100, compare: {before_col: after_expr, ...}}` —
  `size` keys sampled before, the same rows compared after (renamed/split columns map).

Parsing collects every error as one line (`checks[name].field: what to do`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from seed.config import schema

_MISSING = object()
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

# expect keys; the operator spellings are aliases
OPERATORS = {"==": "equals", "!=": "not_equals", ">=": "min", "<=": "max", ">": "gt", "<": "lt"}
NUMBER_KINDS = ("delta", "rows", "min", "max", "gt", "lt")
BEFORE_KINDS = ("equals_before", "delta", "checksum", "sample")
ON_ERROR = ("warn", "fail")  # invariants.on_error


@dataclass(frozen=True)
class Expectation:
    """What a check's value must be. Exactly one kind is set."""

    kind: str  # equals not_equals min max gt lt between equals_before delta rows zero_rows
    #            exact_rows | same (checksum/sample: equal to the before-state)
    value: Any = None
    tolerance_pct: float = 0.0

    @property
    def needs_before(self) -> bool:
        return self.kind in ("equals_before", "delta", "same")

    @property
    def on_rows(self) -> bool:
        """Judged on the whole result set, not on its first value."""
        return self.kind in ("rows", "zero_rows", "exact_rows")

    def describe(self) -> str:
        if self.kind == "equals_before":
            tol = f" ±{self.tolerance_pct:g}%" if self.tolerance_pct else ""
            return f"equal to before{tol}"
        if self.kind == "same":
            return "same as before"
        if self.kind == "delta":
            return f"before {self.value:+}"
        if self.kind == "between":
            return f"between {self.value[0]} and {self.value[1]}"
        if self.kind == "rows":
            return f"{self.value} rows"
        if self.kind == "zero_rows":
            return "no rows"
        if self.kind == "exact_rows":
            return f"exactly {self.value}"
        words = {"equals": "=", "not_equals": "!=", "min": ">=", "max": "<=", "gt": ">", "lt": "<"}
        return f"{words[self.kind]} {self.value}"


@dataclass(frozen=True)
class Check:
    name: str
    when: str  # pre | post
    sql: str  # sql/count: the query measured; checksum/sample: "" (built from the catalog)
    expect: Expectation
    kind: str = "sql"  # sql | count | checksum | sample
    table: str | None = None
    columns: tuple[str, ...] = ()  # checksum: these (after the pk); empty: all but `exclude`
    exclude: tuple[str, ...] = ()
    key: str | None = None  # sample: the key column (default: the single-column pk)
    size: int = 0  # sample: how many rows
    compare: tuple[tuple[str, str], ...] = ()  # sample: (before column, after expression)
    source: str = ""  # the file it came from
    required: bool = False  # a deploy may not skip it (online: makes the deploy maintenance)

    @property
    def holds_online(self) -> bool:
        """Whether the check's verdict holds while the app writes (an online deploy): a
        check of the database as it is (a value, rows, an invariant) does; one that compares
        with the before-state (equals_before, delta, checksum, sample) does not, the app's
        own writes would fail it (or hide what it looks for)."""
        return not self.expect.needs_before

    @property
    def label(self) -> str:
        return f"{self.kind} {self.table}" if self.table else self.kind


@dataclass(frozen=True)
class DjangoCheck:
    fail_level: str = "ERROR"  # DEBUG INFO WARNING ERROR CRITICAL
    silence: tuple[str, ...] = ()  # check ids, e.g. security.W004


@dataclass(frozen=True)
class Invariants:
    """Built-in post checks (all on by default)."""

    invalid_indexes: bool = True
    sequences: bool = True
    not_valid_constraints: bool = True
    django_check: DjangoCheck | None = field(default_factory=DjangoCheck)
    migrate_check: bool = True
    # an invariant that cannot run (its query errors, times out; the Django script fails):
    # `warn` reports it as `error` and goes on, `fail` fails the run like a broken invariant
    on_error: str = "warn"  # one of ON_ERROR


class CheckParser:
    """Parses check lists; every problem is appended to `errors` (nothing raises)."""

    def __init__(self, errors: list[str], prefix: str = "checks") -> None:
        self.errors = errors
        self.prefix = prefix

    # -- helpers -----------------------------------------------------------------------------

    def unknown(self, mapping: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in mapping:
            if key not in allowed:
                self.errors.append(
                    f"{where}.{key}: unknown key (expected one of {', '.join(sorted(allowed))})"
                )

    def _text(self, mapping: dict[str, Any], key: str, where: str) -> str | None:
        value = mapping.get(key)
        if value is None or isinstance(value, dict | list) or str(value).strip() == "":
            self.errors.append(f"{where}.{key}: required, a string")
            return None
        return str(value).strip()

    def _ident(self, mapping: dict[str, Any], key: str, where: str) -> str | None:
        value = self._text(mapping, key, where)
        if value is not None and not IDENT_RE.match(value):
            self.errors.append(f"{where}.{key}: {value!r} is not a table name (schema.table)")
            return None
        return value

    def _columns(self, raw: Any, where: str) -> tuple[str, ...]:
        if not isinstance(raw, list) or not raw:
            self.errors.append(f"{where}: expected a list of column names")
            return ()
        bad = [str(c) for c in raw if not isinstance(c, str) or not COLUMN_RE.match(c)]
        if bad:
            self.errors.append(f"{where}: not column names: {', '.join(bad)}")
            return ()
        return tuple(raw)

    # -- checks ------------------------------------------------------------------------------

    def checks(self, items: Any, source: str = "") -> tuple[Check, ...]:
        if items is None:
            return ()
        if not isinstance(items, list):
            self.errors.append(f"{self.prefix}: expected a list")
            return ()
        out: list[Check] = []
        names: set[str] = set()
        for i, item in enumerate(items):
            where = f"{self.prefix}[{i}]"
            if not isinstance(item, dict):
                self.errors.append(f"{where}: expected a mapping with name, sql, expect")
                continue
            name = self._text(item, "name", where) or ""
            if name in names:
                self.errors.append(f"{where}.name: duplicate check name {name!r}")
            names.add(name)
            check = self.check(item, f"{self.prefix}[{name or i}]", name, source)
            if check is not None:
                out.append(check)
        return tuple(out)

    def check(self, item: dict[str, Any], where: str, name: str, source: str) -> Check | None:
        kinds = [k for k in ("sql", "count", "checksum", "sample") if k in item]
        self.unknown(item, where, schema.check_keys())
        if len(kinds) != 1:
            self.errors.append(f"{where}: exactly one of sql, count, checksum, sample")
            return None
        kind = kinds[0]
        when = item.get("when", "post")
        if when not in ("pre", "post"):
            self.errors.append(f"{where}.when: expected pre or post, got {when!r}")
            when = "post"
        required = item.get("required", False)
        if not isinstance(required, bool):
            self.errors.append(f"{where}.required: expected true or false, got {required!r}")
            required = False
        if kind in ("checksum", "sample"):
            if "expect" in item:
                self.errors.append(f"{where}.expect: a {kind} check always compares with before")
            if when == "pre":
                self.errors.append(f"{where}: a {kind} check compares with before: when: post")
            spec = item[kind]
            if not isinstance(spec, dict):
                self.errors.append(f"{where}.{kind}: expected a mapping with table, ...")
                return None
            made = self.checksum(spec, where) if kind == "checksum" else self.sample(spec, where)
            if made is None or not name:
                return None
            return Check(
                name, when, "", Expectation("same"), kind=kind, source=source,
                required=required, **made,
            )  # fmt: skip
        expect = self.expectation(item.get("expect", _MISSING), f"{where}.expect")
        query, table = self.query(item, kind, where)
        if expect is None or query is None or not name:
            return None
        if when == "pre" and expect.needs_before:
            self.errors.append(f"{where}: a pre check cannot compare with before")
            return None
        if kind == "count" and expect.on_rows:
            self.errors.append(f"{where}.expect: a count check has one value, not rows")
            return None
        return Check(
            name, when, query, expect, kind=kind, table=table, source=source, required=required
        )

    def query(self, item: dict[str, Any], kind: str, where: str) -> tuple[str | None, str | None]:
        if kind == "sql":
            text = self._text(item, "sql", where)
            return (text.rstrip().rstrip(";").rstrip() if text else None), None
        spec = item["count"]
        if isinstance(spec, str):
            spec = {"table": spec}
        if not isinstance(spec, dict):
            self.errors.append(f"{where}.count: expected a table name or {{table, where}}/{{sql}}")
            return None, None
        w = f"{where}.count"
        self.unknown(spec, w, schema.check_keys("count"))
        if ("table" in spec) == ("sql" in spec):
            self.errors.append(f"{w}: exactly one of table, sql")
            return None, None
        if "sql" in spec:
            inner = self._text(spec, "sql", w)
            if inner is None:
                return None, None
            return f"select count(*) from ({inner.rstrip().rstrip(';')}) as counted", None
        table = self._ident(spec, "table", w)
        if table is None:
            return None, None
        query = f"select count(*) from {quote_name(table)}"
        if "where" in spec:
            cond = self._text(spec, "where", w)
            if cond is None:
                return None, None
            query += f" where {cond}"
        return query, table

    def checksum(self, spec: dict[str, Any], where: str) -> dict[str, Any] | None:
        w = f"{where}.checksum"
        self.unknown(spec, w, schema.check_keys("checksum"))
        table = self._ident(spec, "table", w)
        columns = self._columns(spec["columns"], f"{w}.columns") if "columns" in spec else ()
        exclude = self._columns(spec["except"], f"{w}.except") if "except" in spec else ()
        if "columns" in spec and "except" in spec:
            self.errors.append(f"{w}: columns or except, not both")
            return None
        if table is None:
            return None
        return {"table": table, "columns": columns, "exclude": exclude}

    def sample(self, spec: dict[str, Any], where: str) -> dict[str, Any] | None:
        w = f"{where}.sample"
        self.unknown(spec, w, schema.check_keys("sample"))
        table = self._ident(spec, "table", w)
        key = spec.get("key")
        if key is not None and (not isinstance(key, str) or not COLUMN_RE.match(key)):
            self.errors.append(f"{w}.key: expected a column name")
        size = spec.get("size", 100)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100_000:
            self.errors.append(f"{w}.size: expected a number of rows, 1-100000")
            size = 0
        compare = self.compare(spec.get("compare"), f"{w}.compare")
        if table is None or not size or not compare:
            return None
        return {"table": table, "key": key, "size": size, "compare": compare}

    def compare(self, raw: Any, where: str) -> tuple[tuple[str, str], ...]:
        """`[a, b]` (same column before and after) or `{before_column: after_expression}`."""
        if isinstance(raw, list):
            return tuple((c, quote_name(c)) for c in self._columns(raw, where))
        if not isinstance(raw, dict) or not raw:
            self.errors.append(f"{where}: expected columns, or a mapping before: after-expression")
            return ()
        pairs = []
        for before, after in raw.items():
            if not isinstance(before, str) or not COLUMN_RE.match(before):
                self.errors.append(f"{where}.{before}: the key is a column of the before-state")
                continue
            if after is None or isinstance(after, dict | list) or not str(after).strip():
                self.errors.append(f"{where}.{before}: expected an SQL expression over the row")
                continue
            pairs.append((before, str(after).strip()))
        return tuple(pairs)

    def expectation(self, raw: Any, where: str) -> Expectation | None:
        if raw is _MISSING:
            self.errors.append(f"{where}: required (a value, or one of equals, min, max, ...)")
            return None
        if not isinstance(raw, dict):
            if isinstance(raw, list):
                self.errors.append(f"{where}: expected a value or a mapping")
                return None
            return Expectation("equals", raw)
        kinds = {"equals", "not_equals", "min", "max", "gt", "lt", "between", "equals_before"}
        kinds |= {"delta", "rows", "zero_rows", "exact_rows"} | set(OPERATORS)
        self.unknown(raw, where, schema.expect_keys())
        chosen = [k for k in raw if k in kinds]
        if len(chosen) != 1:
            names = ", ".join(sorted(k for k in kinds if k not in OPERATORS))
            self.errors.append(f"{where}: exactly one of {names} (or ==, !=, >=, <=, >, <)")
            return None
        key = chosen[0]
        kind = OPERATORS.get(key, key)
        value = raw[key]
        tolerance = raw.get("tolerance_pct", 0.0)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
            self.errors.append(f"{where}.tolerance_pct: expected a number >= 0")
            tolerance = 0.0
        if tolerance and kind != "equals_before":
            self.errors.append(f"{where}.tolerance_pct: only with equals_before")
        if kind in ("equals_before", "zero_rows") and value is not True:
            self.errors.append(f"{where}.{key}: write `{key}: true`")
        if kind == "between" and not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and value[0] <= value[1]
        ):
            self.errors.append(f"{where}.between: expected [low, high], two numbers, low <= high")
            return None
        if kind in NUMBER_KINDS and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.errors.append(f"{where}.{key}: expected a number")
            return None
        if kind == "exact_rows":
            if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
                self.errors.append(f"{where}.exact_rows: expected a list of rows, each a list")
                return None
            value = [list(r) for r in value]
        return Expectation(kind, value, float(tolerance))

    # -- invariants --------------------------------------------------------------------------

    def invariants(self, raw: Any) -> Invariants:
        if raw is None:
            return Invariants()
        if not isinstance(raw, dict):
            self.errors.append("invariants: expected a mapping (invalid_indexes: true, ...)")
            return Invariants()
        flags = schema.keys("invariants") - {"django_check", "on_error"}
        self.unknown(raw, "invariants", schema.keys("invariants"))
        values: dict[str, Any] = {}
        for flag in flags:
            if flag in raw:
                if not isinstance(raw[flag], bool):
                    self.errors.append(f"invariants.{flag}: expected true or false")
                else:
                    values[flag] = raw[flag]
        on_error = raw.get("on_error")
        if on_error is not None:  # null: unset, like leaving the key out
            if on_error in ON_ERROR:
                values["on_error"] = on_error
            else:
                self.errors.append(
                    f"invariants.on_error: expected one of {', '.join(ON_ERROR)}, got {on_error!r}"
                )
        dj = raw.get("django_check", True)
        django: DjangoCheck | None = DjangoCheck()
        if dj is False:
            django = None
        elif isinstance(dj, dict):
            options = schema.INVARIANTS["properties"]["django_check"]["anyOf"][1]["properties"]
            self.unknown(dj, "invariants.django_check", set(options))
            level = str(dj.get("fail_level", "ERROR")).upper()
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                self.errors.append(
                    "invariants.django_check.fail_level: DEBUG, INFO, WARNING, ERROR or CRITICAL"
                )
            silence = dj.get("silence", [])
            if not isinstance(silence, list) or not all(isinstance(s, str) for s in silence):
                self.errors.append("invariants.django_check.silence: a list of check ids")
                silence = []
            django = DjangoCheck(level, tuple(silence))
        elif dj is not True:
            self.errors.append("invariants.django_check: true, false or {fail_level, silence}")
        return Invariants(django_check=django, **values)


def quote_name(name: str) -> str:
    """`schema.table` or `column` as quoted SQL identifiers."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))
