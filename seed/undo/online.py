"""Undoing an online deploy (DESIGN: Deploy modes, "online"): what only this mode needs.

An online deploy migrates while the old release serves, so its undo can neither stop
the app nor restore the backup (the backup predates the migrate, and the app kept
writing). It puts the code back host by host, then reverses the migrations with the
deploy's own code (seed.undo.database.reverse). Three things are particular to it:

- **Indexes left INVALID.** A `CREATE INDEX CONCURRENTLY` that fails (a lock timeout
  while it waits for older transactions, a duplicate in a unique index) leaves its index
  in the catalog, INVALID: maintained on every write, used by no query, and in the way
  of a retry ("already exists"). Those that were not invalid before the deploy are
  dropped (CONCURRENTLY: no lock that blocks writes).
- **Values a reverse would drop.** Reversing `AddField` drops the column, reversing
  `CreateModel` drops the table. What the migrations put there is theirs to take back;
  what the app wrote since (the new release, once it served) is not. Right after migrate
  the added columns and tables are fingerprinted (per column: the rows whose value is
  neither NULL nor the column's default, counted and hashed with their key; per table:
  count and hash of its rows); before a reverse they are fingerprinted again, and a
  difference names the columns and tables: the reverse then needs `--discard-writes`.
- **"Verified" while the app writes.** The schema (`pg_dump -s`) and the migration set
  must equal the before-state's, and so must the database-level properties; a table's
  rows are compared (count and checksum, the before-state's) only when nobody wrote it
  since the before-state: its write counters (inserted + updated + deleted, and its file
  node) have not moved since the reading taken just before the before-state's snapshot.
  A table the app (or a data migration) wrote is listed as written and not compared:
  what a concurrent writer changes cannot be told from a loss. Counters are read after
  the figures; a table that differs is read again after PostgreSQL's publishing delay
  (an idle session publishes its counters up to 10 s late) before it counts as a
  difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from seed.journal.record import Reading
from seed.undo import database as undo
from seed.undo import reverse as reverselib

if TYPE_CHECKING:
    from seed.run.operation import Operation

PUBLISH_DELAY = 11.0  # seconds: PostgreSQL 15 publishes an idle session's counters ≤ 10 s late


def invalid_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Qualified names of the database's INVALID indexes (a failed CREATE INDEX
    CONCURRENTLY leaves one)."""
    rows = conn.execute(
        "select n.nspname || '.' || c.relname from pg_index i "
        "join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace "
        "where not i.indisvalid and n.nspname not in ('pg_catalog', 'information_schema') "
        "order by 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def drop_new_invalid(conn: psycopg.Connection[Any], before: list[str]) -> list[str]:
    """Drop the INVALID indexes that were not invalid before (`before`), CONCURRENTLY (no
    lock that blocks the app's writes); `conn` must be autocommit and own the tables (the
    app's role, which ran the migrations). Returns the names dropped."""
    dropped = []
    for name in invalid_indexes(conn):
        if name in before:
            continue
        schema, index = name.split(".", 1)
        conn.execute(
            sql.SQL("drop index concurrently if exists {}.{}").format(
                sql.Identifier(schema), sql.Identifier(index)
            )
        )
        dropped.append(name)
    return dropped


@dataclass
class Added:
    """What an online deploy adds (seed.deploy.online.Qualification, as recorded)."""

    tables: list[str] = field(default_factory=list)  # bare or qualified table names
    columns: list[tuple[str, str]] = field(default_factory=list)  # (table, column)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Added:
        data = data or {}
        return cls(
            [str(t) for t in data.get("new_tables") or []],
            [(str(t), str(c)) for t, c in data.get("new_columns") or []],
        )


def _relation(conn: psycopg.Connection[Any], table: str) -> tuple[str, str] | None:
    """(schema, table) of a table as the app's search_path finds it; None when absent."""
    row = conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n "
        "on n.oid = c.relnamespace where c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def _key(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
        "and a.attnum = any(i.indkey) where i.indrelid = %s::regclass and i.indisprimary "
        "order by array_position(i.indkey::int2[], a.attnum)",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _default(conn: psycopg.Connection[Any], schema: str, table: str, column: str) -> str | None:
    """The column's default as SQL (pg_get_expr), or None."""
    row = conn.execute(
        "select pg_get_expr(d.adbin, d.adrelid) from pg_attribute a join pg_attrdef d "
        "on d.adrelid = a.attrelid and d.adnum = a.attnum "
        "where a.attrelid = %s::regclass and a.attname = %s",
        (sql.Identifier(schema, table).as_string(conn), column),
    ).fetchone()
    return str(row[0]) if row and row[0] is not None else None


def added_figures(conn: psycopg.Connection[Any], added: Added) -> dict[str, list[int | str]]:
    """Per added table (`table`) and column (`table.column`): [rows, hash] of what it holds
    beyond NULLs and the column's default (a table: all its rows). Absent ones (a migration
    not applied) are left out. Hashes are of each row's text with its key, summed: any
    value changed, added or removed moves them."""
    out: dict[str, list[int | str]] = {}
    for table in added.tables:
        found = _relation(conn, table)
        if found is None:
            continue
        ident = sql.Identifier(*found)
        row = conn.execute(
            sql.SQL(
                "select count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text "
                "from {} t"
            ).format(ident)
        ).fetchone()
        assert row is not None
        out[table] = [int(row[0]), str(row[1])]
    for table, column in added.columns:
        found = _relation(conn, table)
        if found is None:
            continue
        exists = conn.execute(
            "select 1 from pg_attribute where attrelid = %s::regclass and attname = %s "
            "and not attisdropped",
            (sql.Identifier(*found).as_string(conn), column),
        ).fetchone()
        if not exists:
            continue
        col = sql.Identifier(column)
        key = [sql.Identifier(k) for k in _key(conn, *found)] or [sql.Identifier("ctid")]
        default = _default(conn, *found, column)
        condition = sql.SQL("{} is not null").format(col)
        if default is not None:  # the catalog's own expression for this column
            condition = sql.SQL("{} and {} is distinct from ({})").format(
                condition,
                col,
                sql.SQL(default),
            )
        row = conn.execute(
            sql.SQL(
                "select count(*), coalesce(sum(hashtextextended(row({}, {})::text, 0)::numeric),"
                " 0)::text from {} where {}"
            ).format(sql.SQL(", ").join(key), col, sql.Identifier(*found), condition)
        ).fetchone()
        assert row is not None
        out[f"{table}.{column}"] = [int(row[0]), str(row[1])]
    return out


def written_into(
    after_migrate: dict[str, list[int | str]], now: dict[str, list[int | str]]
) -> dict[str, int]:
    """Added columns and tables whose contents changed since right after the migrate, with
    how many values (rows) they hold now: what a reverse would drop that the migrations did
    not put there."""
    return {
        name: int(figures[0])
        for name, figures in sorted(now.items())
        if list(after_migrate.get(name, [0, "0"])) != list(figures)
    }


def listing(found: dict[str, int]) -> str:
    return ", ".join(f"{name} ({n} value(s))" for name, n in found.items())


def moved_since(start: Reading, conn: psycopg.Connection[Any]) -> set[str]:
    """Tables (`schema.table`) written since the reading `start`: counters moved, file node
    changed, or not comparable (all of them then)."""
    writes = undo.Writes()
    undo.between(start, undo.read_counters(conn, "now"), writes)
    return set(writes.tables)


def verify(
    op: Operation,
    before: dict[str, Any],
    reversal: undo.Reversal,
    since: Reading,
    wait: float = PUBLISH_DELAY,
    properties: bool = True,
) -> dict[str, Any]:
    """The online reverse's verification (the module's docstring): schema, migration set,
    database properties, and every table nobody wrote since `since`, as in `before`.
    Returns the verification (with `written_since`); undo.ReverseNotVerified otherwise."""
    written = moved_since(since, op.admin)
    for attempt in (1, 2, 3):
        untouched = undo.Reversal(
            reversal.output,
            {t: f for t, f in reversal.just_before.items() if t not in written},
        )
        try:
            found = undo.verify_reverse(op, before, untouched, written, properties)
        except undo.ReverseNotVerified:
            if attempt == 3:
                raise
            time.sleep(wait)  # a write's counters may not be published yet
            more = moved_since(since, op.admin)
            if more <= written:
                raise
            written |= more
            continue
        skipped = {t.split(".", 1)[-1] for t in written} | set(reverselib.NOT_COMPARED)
        found["compared"] = sum(1 for t in before["tables"] if t.split(".", 1)[-1] not in skipped)
        kept = ("django_migrations", *reverselib.NOT_COMPARED)  # compared as a set / Django's
        found["written_since"] = [t for t in written if t.split(".", 1)[-1] not in kept]
        found["written_since"].sort()
        found["verified_as"] = (
            "online: schema, migration set and database properties as before; tables nobody "
            "wrote since as before; tables written since not compared"
        )
        return found
    raise AssertionError("unreachable")
