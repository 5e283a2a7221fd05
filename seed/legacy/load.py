"""The verified load of an import (seed/commands/import_legacy.py): the valid records
`COPY`ed into a temporary staging table with the target's column types, then one transaction that
updates the existing rows (only the columns an update may change, only where a value
differs), inserts the new ones, and compares count, checksum and a sample of the
target rows with the staging rows before it commits. Any failure: ImportFailed, the
transaction rolled back, the staging table gone, the target as it was.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg import sql

from seed.db import postgres as dblib
from seed.errors import PreflightFailed, RolledBack, SeedError, StepFailed
from seed.legacy.mapping import Mapping


class ImportFailed(RolledBack):
    """The load failed; its transaction rolled back, the target table is as it was (exit 5)."""


def load_rows(
    conn: psycopg.Connection[Any],
    mapping: Mapping,
    staging: str,
    values: list[dict[str, Any]],
    update_columns: list[str] | None = None,
) -> dict[str, int]:
    """COPY `values` (column → text) into the table `staging`, upsert them into the
    mapping's table in one verified transaction (upsert()), drop `staging`. A failure
    raises ImportFailed with nothing written to the target. An existing row gets only
    `update_columns` (default: every column but the key) changed; a new row all.

    `staging` has the target's column types, so COPY converts each text once (a text the
    type refuses, or one too long for a varchar(n), fails the load here: the old
    explicit casts cut such texts silently). The rows go as COPY text built in bulk
    (_copy_text), not row by row."""
    types = column_types(conn, mapping.table)
    columns = [c for c in (values[0] if values else {}) if c in types]
    try:
        try:
            # a temporary table: no WAL, gone with the session whatever happens
            conn.execute(
                sql.SQL("create temporary table {} ({})").format(
                    sql.Identifier(staging),
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c]))
                        for c in columns
                    ),
                )
            )
            copy_sql = sql.SQL("copy {} ({}) from stdin").format(
                sql.Identifier(staging), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            rows = _row_tuples(values, columns)
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for start in range(0, len(rows), _COPY_CHUNK):
                    chunk = rows[start : start + _COPY_CHUNK]
                    text = _copy_text(chunk)
                    if text is None:  # a value that is neither text nor None: psycopg's dumpers
                        for row in chunk:
                            copy.write_row(row)
                    else:
                        copy.write(text)
            changed = [
                c
                for c in (columns if update_columns is None else update_columns)
                if c in columns and c not in mapping.key
            ]
            return upsert(conn, mapping, staging, columns, changed)
        except psycopg.Error as exc:
            raise ImportFailed(
                f"import into {mapping.table} FAILED and was rolled back: "
                f"{dblib.error_text(exc)}; nothing was written (a backup was taken before)"
            ) from None
        except SeedError as exc:
            raise ImportFailed(f"import into {mapping.table} FAILED: {exc}") from None
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(staging)))


_COPY_CHUNK = 10_000  # rows per COPY text block: bounded memory, few large writes
_COPY_SPECIAL = ("\\", "\t", "\n", "\r")  # what COPY's text format escapes


def _row_tuples(values: list[dict[str, Any]], columns: list[str]) -> list[tuple[Any, ...]]:
    """The records as tuples in `columns` order (a missing column: None)."""
    from operator import itemgetter

    if not columns:
        return [() for _ in values]
    get = itemgetter(*columns)
    try:
        if len(columns) == 1:
            return [(get(r),) for r in values]
        return [get(r) for r in values]
    except KeyError:
        return [tuple(r.get(c) for c in columns) for r in values]


def _copy_escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _copy_text(rows: list[tuple[Any, ...]]) -> str | None:
    """`rows` (each value a str or None) as one block of COPY text format: tab between
    columns, newline after each row, None as \\N, backslash, tab, newline and carriage
    return escaped. None when a value is neither str nor None (the caller then has
    psycopg dump the rows)."""
    if not rows:
        return ""
    try:  # the usual case: all text and nothing to escape, checked on the joined block
        text = "\n".join(map("\t".join, rows))
    except TypeError:  # a None (or something else) among the values
        pass
    else:
        width = len(rows[0])
        if (
            text.count("\t") == len(rows) * (width - 1)
            and text.count("\n") == len(rows) - 1
            and "\\" not in text
            and "\r" not in text
        ):
            return text + "\n"
    columns: list[tuple[Any, ...] | list[str]] = []
    for column in zip(*rows, strict=True):
        if not set(map(type, column)) <= {str, type(None)}:
            return None
        present = [v for v in column if v is not None]
        joined = "".join(present)
        escape = any(ch in joined for ch in _COPY_SPECIAL)
        if escape or len(present) < len(column):
            # escaped first, so that a text "\N" stays text and only None becomes \N
            columns.append(
                ["\\N" if v is None else (_copy_escape(v) if escape else v) for v in column]
            )
        else:
            columns.append(column)
    return "".join(map("{}\n".format, map("\t".join, zip(*columns, strict=True))))


def column_types(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute "
        "where attrelid = %s::regclass and attnum > 0 and not attisdropped",
        (table,),
    ).fetchall()
    if not rows:
        raise PreflightFailed(f"target table {table} does not exist")
    return {str(a): str(t) for a, t in rows}


def upsert(
    conn: psycopg.Connection[Any],
    mapping: Mapping,
    staging: str,
    columns: list[str],
    changed: list[str],
) -> dict[str, int]:
    """One transaction: update the rows whose key is already there (their `changed`
    columns, and only where a value differs: an unchanged row is not rewritten), insert
    the others (every column), then compare count, checksum and a sample of the target
    rows with the staging rows (which load_rows created with the target's types) over
    the key and `changed` columns; a difference rolls it all back.

    An UPDATE and an INSERT of the rest, not INSERT .. ON CONFLICT DO UPDATE: the same
    rows end up written, without the speculative insertion ON CONFLICT pays per row
    (0.2 s for bench/import.py's 44,000 new rows). The key must still be unique (a
    unique index, as ON CONFLICT requires), and a key the staging rows repeat fails the
    load, as it did. A row another session inserts with one of the new keys meanwhile
    fails the load (unique violation, all rolled back) where ON CONFLICT would have
    overwritten it."""
    target = sql.Identifier(mapping.table)
    stage = sql.Identifier(staging)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    checked = [*mapping.key, *changed]  # what the load is answerable for on every row

    def values_of(alias: str, cols: list[str]) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL(f"{alias}.{{}}").format(sql.Identifier(c)) for c in cols)

    updates = sql.SQL(", ").join(
        sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in changed
    )
    join = sql.SQL(" and ").join(
        sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in mapping.key
    )
    matched = sql.SQL(" and ").join(
        sql.SQL("t.{} is not null").format(sql.Identifier(c)) for c in mapping.key
    )

    def row_text(alias: str) -> sql.Composable:
        return sql.SQL("row({})::text").format(values_of(alias, checked))

    with conn.transaction():
        _require_unique_key(conn, mapping)
        dblib.set_checksum_settings(conn)
        repeated = conn.execute(
            sql.SQL("select exists (select from {} s group by {} having count(*) > 1)").format(
                stage, values_of("s", list(mapping.key))
            )
        ).fetchone()
        if repeated and repeated[0]:
            raise StepFailed(f"a key ({', '.join(mapping.key)}) repeats among the staging rows")
        updated = 0
        if changed:
            updated = conn.execute(
                sql.SQL(
                    "update {target} t set {updates} from {stage} s where {join} "
                    "and ({old}) is distinct from ({new})"
                ).format(
                    target=target,
                    updates=updates,
                    stage=stage,
                    join=join,
                    old=values_of("t", changed),
                    new=values_of("s", changed),
                )
            ).rowcount
        inserted = conn.execute(
            sql.SQL(
                "insert into {target} ({names}) select {names} from {stage} s "
                "where not exists (select from {target} t where {join})"
            ).format(target=target, names=names, stage=stage, join=join)
        ).rowcount
        # one pass: count and checksum of the staging rows and of their target rows
        sums = conn.execute(
            sql.SQL(
                "select count(*), sum(hashtextextended({staged}, 0)), "
                "count(*) filter (where {matched}), "
                "sum(hashtextextended({loaded}, 0)) filter (where {matched}) "
                "from {stage} s left join {target} t on {join}"
            ).format(
                staged=row_text("s"),
                loaded=row_text("t"),
                matched=matched,
                stage=stage,
                target=target,
                join=join,
            )
        ).fetchone()
        want, got = (sums[:2], sums[2:]) if sums else ((0, None), (0, None))
        total = int(want[0])
        if want != got:
            raise StepFailed(
                f"the loaded rows differ from the staging table (count, checksum: {got} vs {want})"
            )
        sample = conn.execute(
            sql.SQL(
                "select count(*) from (select * from {} s order by random() limit 25) s "
                "join {} t on {} where {} is distinct from {}"
            ).format(stage, target, join, row_text("t"), row_text("s"))
        ).fetchone()
        if sample and sample[0]:
            raise StepFailed(f"{sample[0]} sampled row(s) differ between staging and target")
    return {
        "inserted": inserted,
        "updated": updated,
        "unchanged": total - inserted - updated,
        "sampled": min(25, total),
    }


def _require_unique_key(conn: psycopg.Connection[Any], mapping: Mapping) -> None:
    """The mapping's key is the key columns of a valid, immediate, non-partial unique
    index of the target table (what ON CONFLICT (key) would have inferred)."""
    row = conn.execute(
        "select exists (select from pg_index i where i.indrelid = %s::regclass "
        "and i.indisunique and i.indisvalid and i.indimmediate and i.indpred is null "
        "and i.indexprs is null and i.indnkeyatts = cardinality(%s::text[]) "
        "and (select array_agg(a.attname::text order by a.attname) "
        "     from unnest(i.indkey) with ordinality k(attnum, n) "
        "     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum "
        "     where k.n <= i.indnkeyatts) = %s::text[])",
        (mapping.table, list(mapping.key), sorted(mapping.key)),
    ).fetchone()
    if not (row and row[0]):
        raise StepFailed(
            f"the key ({', '.join(mapping.key)}) is not a unique index of {mapping.table}"
        )
