"""Masking rules: parse them, gate them against a schema, turn them into set-based SQL.

A rules file classifies every table as holding personal data or not; in a personal
table every column is masked or explicitly kept. `gate()` compares the rules with a
database's catalog: a table or a personal column the rules do not name (added by a
migration since they were written) is *unclassified* and blocks the copy.

Masking runs inside PostgreSQL, one UPDATE per table. `fake` and `hash` values are
chosen by an HMAC-SHA256 of the original value under a secret key, computed with the
built-in `sha256()` (no extension): the same input masks to the same output in every
table and column with the same rule, so joins on masked values survive, and without
the key nobody can rebuild the mapping from a dictionary of likely inputs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from seed.config.environment import Environment, read_mapping
from seed.copy.fakedata import LOCALES, LOREM, Locale, ascii_word, vocabulary
from seed.errors import ConfigError

FAKE_KINDS = (
    "first_name",
    "last_name",
    "name",
    "email",
    "username",
    "phone",
    "address",
    "city",
    "text",
)
RULE_KINDS = ("keep", "null", "fixed", "hash", "fake", "date_shift")
STRING_TYPES = "S"  # pg_type.typcategory of text, varchar, char, citext
DATE_TYPES = "D"  # date, timestamp, timestamptz
SAMPLE_MIN_LENGTH = 4  # shorter originals ("Al", "NY") are searched in their own column only


@dataclass(frozen=True)
class ColumnRule:
    kind: str  # one of RULE_KINDS
    fake: str = ""  # for kind "fake": one of FAKE_KINDS
    locale: str = ""  # for kind "fake": overrides the file's locale
    value: str | None = None  # for kind "fixed"
    days: int = 0  # for kind "date_shift": at most this many days, never 0
    length: int = 0  # for kind "hash": hex digits kept (0: all 64)

    def describe(self) -> str:
        if self.kind == "fake":
            return f"fake {self.fake} ({self.locale})"
        if self.kind == "fixed":
            return "fixed value"
        if self.kind == "date_shift":
            return f"date shift ±1..{self.days} days"
        if self.kind == "hash":
            return f"keyed hash (HMAC-SHA256, {self.length or 64} hex)"
        return self.kind

    @property
    def masks(self) -> bool:
        return self.kind != "keep"


@dataclass(frozen=True)
class TableRule:
    name: str  # schema.table
    personal: bool
    truncate: bool = False
    columns: Mapping[str, ColumnRule] = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    path: Path
    locale: str
    tables: Mapping[str, TableRule]


def qualified(name: str) -> str:
    """`shop_customer` → `public.shop_customer`."""
    return name if "." in name else f"public.{name}"


# -- parsing ----------------------------------------------------------------------------------


class _RuleParser:
    def __init__(self, path: Path, raw: Any) -> None:
        self.path = path
        self.raw = raw
        self.errors: list[str] = []

    def where(self, *keys: str) -> str:
        """`line N: tables.x.columns.y` for an error message."""
        node, line = self.raw, None
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            line = getattr(node, "lines", {}).get(key, line)
            node = node[key]
        label = ".".join(keys)
        return f"line {line}: {label}" if line else label

    def rules(self) -> Rules:
        raw = self.raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.path}: expected a mapping with `tables:` at the top level")
        for key in raw:
            if key not in ("locale", "tables"):
                self.errors.append(f"{self.where(key)}: unknown key (expected locale, tables)")
        locale = raw.get("locale", "en_US")
        if locale not in LOCALES:
            self.errors.append(
                f"{self.where('locale')}: unknown locale {locale!r} (one of {', '.join(LOCALES)})"
            )
            locale = "en_US"
        tables_raw = raw.get("tables")
        tables: dict[str, TableRule] = {}
        if not isinstance(tables_raw, dict) or not tables_raw:
            self.errors.append("tables: required, a mapping of table name to its rules")
        else:
            for name, spec in tables_raw.items():
                rule = self.table(str(name), spec, locale)
                if rule is not None:
                    if rule.name in tables:
                        self.errors.append(f"{self.where('tables', name)}: listed twice")
                    tables[rule.name] = rule
        if self.errors:
            listing = "; ".join(self.errors)
            count = f"{len(self.errors)} problems: " if len(self.errors) > 1 else ""
            raise ConfigError(f"{self.path}: {count}{listing}")
        return Rules(self.path, str(locale), tables)

    def table(self, name: str, spec: Any, locale: str) -> TableRule | None:
        at = self.where("tables", name)
        if spec == "truncate":
            return TableRule(qualified(name), personal=True, truncate=True)
        if not isinstance(spec, dict):
            self.errors.append(
                f"{at}: expected `truncate` or a mapping with personal: true|false "
                "(and columns: for a personal table)"
            )
            return None
        for key in spec:
            if key not in ("personal", "columns", "truncate"):
                self.errors.append(
                    f"{self.where('tables', name, key)}: unknown key "
                    "(expected personal, columns, truncate)"
                )
        if spec.get("truncate") is True:
            return TableRule(qualified(name), personal=True, truncate=True)
        personal = spec.get("personal")
        if not isinstance(personal, bool):
            self.errors.append(f"{at}: personal: required, true or false")
            return None
        columns_raw = spec.get("columns") or {}
        if not isinstance(columns_raw, dict):
            self.errors.append(f"{self.where('tables', name, 'columns')}: expected a mapping")
            return None
        columns = {}
        for column, rule_raw in columns_raw.items():
            rule = self.column(rule_raw, locale, ("tables", name, "columns", str(column)))
            if rule is not None:
                columns[str(column)] = rule
        if not personal and any(r.masks for r in columns.values()):
            self.errors.append(f"{at}: masks columns but says personal: false (say personal: true)")
        return TableRule(qualified(name), personal=personal, columns=columns)

    def column(self, raw: Any, locale: str, keys: tuple[str, ...]) -> ColumnRule | None:
        at = self.where(*keys)
        if raw is None:  # `col: null` in YAML (and `col:` left empty) is the null rule
            return ColumnRule(kind="null")
        if raw in ("keep", "null", "hash"):
            return ColumnRule(kind=str(raw))
        if isinstance(raw, str) and raw.startswith("fake "):
            raw = {"fake": raw[5:].strip()}
        if not isinstance(raw, dict) or len(set(raw) & set(RULE_KINDS)) != 1:
            self.errors.append(
                f"{at}: expected keep, null, hash, `fake <kind>`, or a mapping with one of "
                "fake, hash, fixed, date_shift"
            )
            return None
        (kind,) = set(raw) & set(RULE_KINDS)
        extra = set(raw) - {kind, "locale", "length"}
        if extra:
            self.errors.append(f"{at}: unknown key {', '.join(sorted(extra))}")
            return None
        arg = raw[kind]
        if kind == "fake":
            if arg not in FAKE_KINDS:
                self.errors.append(f"{at}: fake: expected one of {', '.join(FAKE_KINDS)}")
                return None
            loc = raw.get("locale", locale)
            if loc not in LOCALES:
                self.errors.append(f"{at}: unknown locale {loc!r}")
                return None
            return ColumnRule(kind="fake", fake=str(arg), locale=str(loc))
        if kind == "hash":
            # {hash: 16}, {hash: {length: 16}} or {hash: null, length: 16}
            nested = arg.get("length", 0) if isinstance(arg, dict) else arg
            length = raw.get("length", nested if nested is not None else 0)
            if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= 64:
                self.errors.append(f"{at}: hash length: expected 8..64 hex digits")
                return None
            if 0 < length < 8:
                self.errors.append(f"{at}: hash length: at least 8 hex digits")
                return None
            return ColumnRule(kind="hash", length=length)
        if kind == "fixed":
            if arg is not None and (
                isinstance(arg, bool) or not isinstance(arg, str | int | float)
            ):
                self.errors.append(f"{at}: fixed: expected a value (string or number)")
                return None
            return ColumnRule(kind="fixed", value=None if arg is None else str(arg))
        if kind == "date_shift":
            if isinstance(arg, bool) or not isinstance(arg, int) or not 1 <= arg <= 36500:
                self.errors.append(f"{at}: date_shift: expected days, 1..36500")
                return None
            return ColumnRule(kind="date_shift", days=int(arg))
        self.errors.append(f"{at}: {kind}: takes no argument (write `{kind}`)")
        return None


def load_rules(path: Path) -> Rules:
    """Read and validate a rules file; ConfigError names the file, line and key."""
    raw = read_mapping(path, "masking rules file (copy.rules in the source environment)")
    return _RuleParser(path, raw).rules()


# -- the schema the rules meet ------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): `character varying(254)`
    category: str  # pg_type.typcategory
    not_null: bool
    max_length: int | None  # varchar(n) / char(n)


def catalog(conn: psycopg.Connection[Any]) -> dict[str, list[Column]]:
    """Every ordinary or partitioned table outside the system schemas (partitions are
    covered by their parent), with its columns in order."""
    rows = conn.execute(
        """
        select n.nspname || '.' || c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               t.typcategory, a.attnotnull,
               case when t.typname in ('varchar', 'bpchar') and a.atttypmod > 4
                    then a.atttypmod - 4 end
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        join pg_type t on t.oid = coalesce(nullif(
            (select typbasetype from pg_type where oid = a.atttypid), 0), a.atttypid)
        where c.relkind in ('r', 'p') and not c.relispartition
          and n.nspname not in ('pg_catalog', 'information_schema')
          and n.nspname not like 'pg\\_toast%%' and n.nspname not like 'pg\\_temp%%'
        order by 1, a.attnum
        """
    ).fetchall()
    tables: dict[str, list[Column]] = {}
    for table, name, typ, category, not_null, max_length in rows:
        tables.setdefault(str(table), []).append(
            Column(str(name), str(typ), str(category), bool(not_null), max_length)
        )
    return tables


@dataclass
class Gate:
    """What the rules say about a schema. `blocking` empty: the copy may go on."""

    unclassified_tables: list[str] = field(default_factory=list)
    unclassified_columns: list[str] = field(default_factory=list)  # table.column (type)
    misfits: list[str] = field(default_factory=list)  # a rule the column's type cannot take
    stale: list[str] = field(default_factory=list)  # rules for tables/columns not there

    @property
    def blocking(self) -> list[str]:
        found = []
        if self.unclassified_tables:
            found.append("unclassified tables: " + ", ".join(self.unclassified_tables))
        if self.unclassified_columns:
            found.append(
                "unclassified columns in personal-data tables: "
                + ", ".join(self.unclassified_columns)
            )
        found += self.misfits
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "unclassified_tables": self.unclassified_tables,
            "unclassified_columns": self.unclassified_columns,
            "misfits": self.misfits,
            "stale": self.stale,
            "passed": not self.blocking,
        }


def gate(rules: Rules, tables: Mapping[str, list[Column]]) -> Gate:
    """Compare `rules` with a schema (catalog()): every table classified, every column of a
    personal table masked or kept, every rule fitting its column's type."""
    result = Gate()
    for table, columns in tables.items():
        rule = rules.tables.get(table)
        if rule is None:
            result.unclassified_tables.append(table)
            continue
        if not rule.personal or rule.truncate:
            continue
        for column in columns:
            col_rule = rule.columns.get(column.name)
            if col_rule is None:
                result.unclassified_columns.append(f"{table}.{column.name} ({column.type})")
                continue
            problem = misfit(col_rule, column)
            if problem:
                result.misfits.append(f"{table}.{column.name}: {problem}")
    for name, rule in rules.tables.items():
        if name not in tables:
            result.stale.append(name)
            continue
        present = {c.name for c in tables[name]}
        result.stale += [f"{name}.{c}" for c in rule.columns if c not in present]
    return result


def misfit(rule: ColumnRule, column: Column) -> str:
    """Why `rule` cannot apply to `column`, or ""."""
    if rule.kind in ("fake", "hash") and column.category != STRING_TYPES:
        return f"{rule.kind} needs a text column, this one is {column.type}"
    if rule.kind == "date_shift" and column.category != DATE_TYPES:
        return f"date_shift needs a date or timestamp column, this one is {column.type}"
    if rule.kind == "null" and column.not_null:
        return "null on a NOT NULL column (use fixed, fake or hash)"
    if rule.kind == "fixed" and rule.value is None and column.not_null:
        return "fixed: null on a NOT NULL column"
    return ""


# -- SQL ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """HMAC-SHA256 key pads (RFC 2104) for SQL, and a seed for date shifts."""

    inner: bytes
    outer: bytes
    shift_seed: int

    @classmethod
    def from_secret(cls, secret: str) -> Key:
        key = secret.encode()
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        seed = hmac.new(secret.encode(), b"seed date_shift", hashlib.sha256).digest()
        return cls(
            inner=bytes(b ^ 0x36 for b in key),
            outer=bytes(b ^ 0x5C for b in key),
            shift_seed=int.from_bytes(seed[:8], "big", signed=True),
        )

    def __repr__(self) -> str:
        return "Key(***)"


# The key reaches the session by COPY into a temporary table, never as a literal or a bind
# parameter: statements (with their literals) are visible in pg_stat_activity to monitoring
# roles and written to the server log on an error or with log_min_duration_statement,
# bind parameters too; COPY's data is in neither. The pads give the key back (pad XOR
# 0x36/0x5c), so they are as secret as the key.
KEY_TABLE = sql.SQL("pg_temp.seed_mask_key")


def load_key(conn: psycopg.Connection[Any], key: Key) -> None:
    """The key into this session's temporary table (what the masking SQL reads)."""
    conn.execute(
        sql.SQL(
            "create temporary table if not exists seed_mask_key "
            "(inner_pad bytea, outer_pad bytea, shift_seed bigint)"
        )
    )
    conn.execute(sql.SQL("truncate {}").format(KEY_TABLE))
    with conn.cursor().copy(sql.SQL("copy {} from stdin").format(KEY_TABLE)) as copy:
        copy.write_row((key.inner, key.outer, key.shift_seed))


def _key_part(name: str) -> sql.Composable:
    return sql.SQL("(select {} from {})").format(sql.Identifier(name), KEY_TABLE)


def hmac_sql(value: sql.Composable) -> sql.Composable:
    """HMAC-SHA256(key, utf8(value)) as a bytea expression (the key: load_key's table)."""
    return sql.SQL("sha256({} || sha256({} || convert_to({}, 'UTF8')))").format(
        _key_part("outer_pad"), _key_part("inner_pad"), value
    )


def _array(words: Iterable[str]) -> sql.Composable:
    return sql.SQL("{}::text[]").format(sql.Literal(list(words)))


def _pick(words: tuple[str, ...], h: sql.Composable, byte: int) -> sql.Composable:
    """words[1 + (two bytes of h at `byte`) % len(words)]."""
    return sql.SQL("({})[1 + ((get_byte({h}, {a}) << 8) | get_byte({h}, {b})) % {n}]").format(
        _array(words), h=h, a=sql.Literal(byte), b=sql.Literal(byte + 1), n=sql.Literal(len(words))
    )


def _hex(h: sql.Composable, start: int, length: int) -> sql.Composable:
    return sql.SQL("substr(encode({}, 'hex'), {}, {})").format(
        h, sql.Literal(start), sql.Literal(length)
    )


def _digits(template: str, h: sql.Composable, first_byte: int) -> sql.Composable:
    """`template` with each `#` replaced by a digit from successive bytes of h."""
    parts: list[sql.Composable] = []
    byte = first_byte
    for piece in re.split(r"(#)", template):
        if piece == "#":
            parts.append(sql.SQL("(get_byte({}, {}) % 10)::text").format(h, sql.Literal(byte)))
            byte += 1
        elif piece:
            parts.append(sql.Literal(piece))
    return sql.SQL("({})").format(sql.SQL(" || ").join(parts))


def fake_sql(kind: str, locale: Locale, h: sql.Composable, value: sql.Composable) -> sql.Composable:
    """A fake value of `kind` chosen by the bytes of `h` (the original's HMAC)."""
    first, last = _pick(locale.first, h, 0), _pick(locale.last, h, 2)
    if kind == "first_name":
        return first
    if kind == "last_name":
        return last
    if kind == "name":
        return sql.SQL("{} || ' ' || {}").format(first, last)
    ascii_first = tuple(ascii_word(w) for w in locale.first)
    ascii_last = tuple(ascii_word(w) for w in locale.last)
    if kind == "email":
        return sql.SQL("{} || '.' || {} || '.' || {} || '@' || {}").format(
            _pick(ascii_first, h, 0),
            _pick(ascii_last, h, 2),
            _hex(h, 9, 10),
            _pick(locale.domains, h, 4),
        )
    if kind == "username":
        return sql.SQL("{} || {}").format(_pick(ascii_first, h, 0), _hex(h, 9, 8))
    if kind == "phone":
        return _digits(locale.phone, h, 6)
    if kind == "city":
        return _pick(locale.cities, h, 16)
    if kind == "address":
        pieces = re.split(r"(\{\w+\})", locale.address)
        parts: list[sql.Composable] = []
        for piece in pieces:
            if piece == "{n}":
                parts.append(sql.SQL("(1 + get_byte({}, 12) % 199)::text").format(h))
            elif piece == "{street}":
                parts.append(_pick(locale.streets, h, 14))
            elif piece == "{city}":
                parts.append(_pick(locale.cities, h, 16))
            elif piece == "{postcode}":
                parts.append(_digits("#" * locale.postcode_digits, h, 18))
            elif piece:
                parts.append(sql.Literal(piece))
        return sql.SQL(" || ").join(parts)
    if kind == "text":
        # about as many words as the original (6 characters a word), at most 64
        return sql.SQL(
            "array_to_string(array(select ({words})[1 + (get_byte({h}, i % 32) + i * 7) % {n}] "
            "from generate_series(0, least(63, greatest(0, length({v}) / 6 - 1))) i), ' ')"
        ).format(words=_array(LOREM), h=h, n=sql.Literal(len(LOREM)), v=value)
    raise ValueError(f"unknown fake kind {kind}")


def column_sql(rule: ColumnRule, column: Column) -> sql.Composable:
    """The new value of `column` under `rule` (an expression over the row being updated)."""
    v = sql.Identifier(column.name)
    if rule.kind == "null":
        return sql.NULL
    if rule.kind == "fixed":
        if rule.value is None:
            return sql.NULL
        return sql.SQL("cast({} as {})").format(sql.Literal(rule.value), sql.SQL(column.type))
    if rule.kind == "date_shift":
        x = sql.SQL("hashtextextended({}::text || ctid::text, {})").format(
            v, _key_part("shift_seed")
        )
        span = 2 * rule.days
        # m in 0..2N-1 → -N..-1, 1..N: never 0, so every value moves
        shift = sql.SQL(
            "(case when abs({x} % {span}) < {n} then -(abs({x} % {span}) + 1) "
            "else abs({x} % {span}) - {n} + 1 end)"
        ).format(x=x, span=sql.Literal(span), n=sql.Literal(rule.days))
        return sql.SQL("{} + make_interval(days => {}::int)").format(v, shift)
    h = sql.Identifier("h")
    if rule.kind == "hash":
        expr: sql.Composable = sql.SQL("encode(h, 'hex')")
        if rule.length:
            expr = sql.SQL("left({}, {})").format(expr, sql.Literal(rule.length))
    elif rule.kind == "fake":
        expr = fake_sql(rule.fake, LOCALES[rule.locale], h, v)
    else:
        raise ValueError(f"rule {rule.kind} writes nothing")
    if column.max_length:
        expr = sql.SQL("left({}, {})").format(expr, sql.Literal(column.max_length))
    # the HMAC once per value: a sub-select kept apart (offset 0) so that the planner
    # does not paste the hash expression into every place `h` is used
    return sql.SQL(
        "case when {v} is null or {v}::text = '' then {v} "
        "else (select {expr} from (select {hm} as h offset 0) s) end"
    ).format(v=v, expr=expr, hm=hmac_sql(sql.SQL("{}::text").format(v)))


def update_sql(table: str, rule: TableRule, columns: list[Column]) -> sql.Composable | None:
    """One UPDATE for every masked column of `table`, or TRUNCATE; None: nothing to do.
    Run it in a session that load_key gave the key."""
    ident = sql.Identifier(*table.split(".", 1))
    if rule.truncate:
        return sql.SQL("truncate {}").format(ident)
    sets = [
        sql.SQL("{} = {}").format(sql.Identifier(c.name), column_sql(rule.columns[c.name], c))
        for c in columns
        if c.name in rule.columns and rule.columns[c.name].masks
    ]
    if not sets:
        return None
    return sql.SQL("update {} set {}").format(ident, sql.SQL(", ").join(sets))


# -- did it work -------------------------------------------------------------------------------


def masked_columns(rules: Rules, tables: Mapping[str, list[Column]]) -> list[tuple[str, Column]]:
    """(table, column) of every column a rule changes (fake, hash, null, fixed)."""
    found = []
    for table, columns in tables.items():
        rule = rules.tables.get(table)
        if rule is None or rule.truncate:
            continue
        for column in columns:
            col_rule = rule.columns.get(column.name)
            if col_rule is not None and col_rule.kind in ("fake", "hash", "null", "fixed"):
                found.append((table, column))
    return found


def sample_originals(
    conn: psycopg.Connection[Any], table: str, column: str, rows: int, size: int
) -> list[str]:
    """Up to `size` distinct non-empty values of table.column, read before masking."""
    percent = 100.0 if rows <= size * 20 else max(0.01, 100.0 * size * 20 / rows)
    query = sql.SQL(
        "select distinct {c}::text from {t} tablesample bernoulli ({p}) "
        "where {c} is not null and {c}::text <> '' limit {n}"
    ).format(
        c=sql.Identifier(column),
        t=sql.Identifier(*table.split(".", 1)),
        p=sql.Literal(percent),
        n=sql.Literal(size),
    )
    return [str(r[0]) for r in conn.execute(query).fetchall()]


def searchable(samples: list[str], rule: ColumnRule) -> tuple[list[str], int]:
    """The samples worth searching for, and how many were set aside because the rule
    itself can produce them (a fake first name that is also a real one, the fixed value)."""
    own: frozenset[str] = frozenset()
    if rule.kind == "fake":
        own = vocabulary(LOCALES[rule.locale], rule.fake)
    elif rule.kind == "fixed" and rule.value is not None:
        own = frozenset({rule.value})
    kept = [s for s in samples if s not in own]
    return kept, len(samples) - len(kept)


def survivors(
    conn: psycopg.Connection[Any],
    samples: Mapping[tuple[str, str], list[str]],
    tables: Mapping[str, list[Column]],
) -> dict[str, int]:
    """How many sampled originals are still found, as whole values, in any text column of
    any table: {table.column: rows holding one}. Samples shorter than SAMPLE_MIN_LENGTH
    are searched in their own column only (short words occur legitimately elsewhere)."""
    conn.execute("create temp table if not exists seed_samples (v text, home text)")
    conn.execute("truncate seed_samples")
    with conn.cursor() as cur, cur.copy("copy seed_samples (v, home) from stdin") as copy:
        for (table, name), values in samples.items():
            for value in values:
                copy.write_row((value, f"{table}.{name}"))
    conn.execute("analyze seed_samples")
    found: dict[str, int] = {}
    for table, columns in tables.items():
        texts = [c for c in columns if c.category == STRING_TYPES]
        if not texts:
            continue
        # one scan per table; each column's test is a hashed sub-plan
        counts = [
            sql.SQL(
                "count(*) filter (where {c}::text in (select v from seed_samples "
                "where length(v) >= {m} or home = {h}))"
            ).format(
                c=sql.Identifier(c.name),
                m=sql.Literal(SAMPLE_MIN_LENGTH),
                h=sql.Literal(f"{table}.{c.name}"),
            )
            for c in texts
        ]
        query = sql.SQL("select {} from {}").format(
            sql.SQL(", ").join(counts), sql.Identifier(*table.split(".", 1))
        )
        row = conn.execute(query).fetchone() or ()
        for column, count in zip(texts, row, strict=False):
            if count:
                found[f"{table}.{column.name}"] = int(count)
    conn.execute("drop table seed_samples")
    return found


def copy_settings(source: Environment) -> tuple[Rules, Key]:
    """The source's masking rules and key, or ConfigError (exit 2) saying what to add."""
    where = f"{source.path}"
    if source.copy.rules is None:
        raise ConfigError(
            f"{where}: copy.rules is not set: name the masking rules file for copies of "
            f"{source.name} (see masking/shop.yml)"
        )
    if source.copy.secret is None:
        raise ConfigError(
            f"{where}: copy.secret is not set or empty: the key of the masking hash, e.g. "
            '"${SEED_MASK_KEY}" — export it (keep it out of the target\'s reach)'
        )
    rules = load_rules(source.copy.rules)
    return rules, Key.from_secret(source.copy.secret.reveal())
