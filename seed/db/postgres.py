"""PostgreSQL sessions from the control machine: connecting, table snapshots (DESIGN: Checksums).

Hashing happens inside PostgreSQL, never by pulling rows. Every session sets
`application_name=seed-<env>-<deploy id>` so it can be found in pg_stat_activity.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from seed.config.environment import Environment, Secret
from seed.errors import PreflightFailed

# Session settings that make ROW(...)::text deterministic (DESIGN: Checksums).
CHECKSUM_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


@dataclass(frozen=True)
class Endpoint:
    """Where the control machine reaches the database (direct, or a tunnel's local port)."""

    host: str
    port: int


# How a row is hashed (recorded with every figure; figures only compare within one):
# - "row-hash" (PostgreSQL >= 14, the default):
#   hashint8extended(hash_record_extended(ROW(pk, cols), 0), 0), each column hashed by
#   its type's own extended hash function (columns of types without one, e.g. json or
#   point, as ::text). No text formatting: ~2.5x faster than row-text on a 3M-row
#   table, and independent of any session setting by construction. Values are compared
#   as their type compares them (numeric 1.5 = 1.50).
# - "row-text" (DESIGN's first definition, and servers < 14):
#   hashtextextended(ROW(pk, cols)::text, 0) under CHECKSUM_SETTINGS.
# Both: count(*) and the sum of the 64-bit hashes as exact numeric (never bigint, never
# XOR); the pk is in the row, so values swapped between rows change the sum.
ROW_HASH = "row-hash"
ROW_TEXT = "row-text"


@dataclass(frozen=True)
class TableFigures:
    rows: int
    checksum: str  # numeric as text: exact, never cast to bigint
    algorithm: str = ROW_TEXT

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "checksum": self.checksum, "algorithm": self.algorithm}


def same_figures(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two figures (as JSON) describe the same table content: rows and checksum equal,
    computed the same way (records written before the algorithm was recorded: row-text)."""
    if a is None or b is None:
        return False
    how = (a.get("algorithm", ROW_TEXT), b.get("algorithm", ROW_TEXT))
    return how[0] == how[1] and (a["rows"], a["checksum"]) == (b["rows"], b["checksum"])


def recorded_algorithm(tables: dict[str, dict[str, Any]]) -> str:
    """The algorithm figures recorded in a manifest or before-state were computed with."""
    for figures in tables.values():
        return str(figures.get("algorithm", ROW_TEXT))
    return ROW_HASH


def default_algorithm(conn: psycopg.Connection[Any]) -> str:
    return ROW_HASH if conn.info.server_version >= 140000 else ROW_TEXT


def row_hash_sql(
    columns: list[str] | tuple[str, ...], hashable: list[bool] | tuple[bool, ...], algorithm: str
) -> sql.Composable:
    """The 64-bit hash of one row over `columns`, per `algorithm` (see ROW_HASH)."""
    if algorithm == ROW_TEXT:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        return sql.SQL("hashtextextended(ROW({})::text, 0)").format(cols)
    if algorithm != ROW_HASH:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    parts = [
        sql.Identifier(c) if ok else sql.SQL("{}::text").format(sql.Identifier(c))
        for c, ok in zip(columns, hashable, strict=True)
    ]
    # hash_record_extended combines its columns linearly (h = 31*h + column hash): summed
    # over rows, values swapped between rows would cancel out. hashint8extended mixes the
    # row's hash non-linearly first, so the sum sees which values sit in which row.
    return sql.SQL("hashint8extended(hash_record_extended(ROW({}), 0), 0)").format(
        sql.SQL(", ").join(parts)
    )


# the column's type (a domain: its base type) has a default hash operator class of its
# own, or is an enum: hash_record_extended hashes it directly; anything else (arrays,
# ranges, composites, json, geometric types) is hashed through its text form
HASHABLE_SQL = """
    exists (select 1 from pg_type bt
              join pg_opclass oc on oc.opcdefault and oc.opcmethod =
                   (select oid from pg_am where amname = 'hash')
             where bt.oid = case when t.typtype = 'd' then t.typbasetype else t.oid end
               and (oc.opcintype = bt.oid
                    or (bt.typtype = 'e' and oc.opcintype = 'anyenum'::regtype)))
"""


def connect(
    env: Environment,
    endpoint: Endpoint,
    *,
    admin: bool,
    dbname: str | None = None,
    app_name: str = "seed",
    autocommit: bool = True,
    timeout: int = 10,
    options: str = "",
) -> psycopg.Connection[Any]:
    """Open a session as the admin or the app role; failures are one PreflightFailed line.
    `options`: server settings for the session (`-c name=value ...`)."""
    user = env.db.admin_user if admin else env.db.user
    secret: Secret | None = env.db.admin_password if admin else env.db.password
    name = dbname or env.db.name
    kwargs: dict[str, Any] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "dbname": name,
        "user": user,
        "application_name": app_name[:63],
        "connect_timeout": timeout,
        "autocommit": autocommit,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if options:
        kwargs["options"] = options
    if secret is not None:
        kwargs["password"] = secret.reveal()
    try:
        return psycopg.connect(**kwargs)
    except psycopg.OperationalError as exc:
        reason = _first_line(str(exc))
        role = "db.admin_user" if admin else "db.user"
        raise PreflightFailed(
            f"database {user}@{env.db.host}:{env.db.port}/{name} ({role}): {reason}"
        ) from None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # libpq prefixes "connection to server at ... failed:"; keep the reason
    for line in lines:
        if "FATAL:" in line:
            return line.split("FATAL:", 1)[1].strip()
    return lines[-1] if lines else "connection failed"


def error_text(exc: BaseException) -> str:
    """One line for a failed statement: PostgreSQL's primary message, never its DETAIL
    (which can quote a row's values: personal data in an import or a masked copy)."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return str(exc.diag.message_primary)
    return _first_line(str(exc)) if str(exc).strip() else type(exc).__name__


def set_checksum_settings(conn: psycopg.Connection[Any]) -> None:
    for name, value in CHECKSUM_SETTINGS.items():
        conn.execute("select set_config(%s, %s, false)", (name, value))


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[str, ...]  # primary key columns first, then the rest by position
    hashable: tuple[bool, ...] = ()  # per column: hashed by its type (else via ::text)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def list_tables(conn: psycopg.Connection[Any]) -> list[Table]:
    """Ordinary and partitioned-leaf tables outside the system schemas, with checksum columns."""
    rows = conn.execute(
        f"""
        select n.nspname, c.relname,
               array_agg(a.attname order by (i.indkey is null), a.attnum) as cols,
               array_agg({HASHABLE_SQL} order by (i.indkey is null), a.attnum) as hashable
          from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
          join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
          join pg_type t on t.oid = a.atttypid
          left join pg_index i on i.indrelid = c.oid and i.indisprimary
                              and a.attnum = any(i.indkey)
         where c.relkind = 'r'
           and n.nspname not in ('pg_catalog', 'information_schema')
           and n.nspname not like 'pg_toast%'
           and n.nspname not like 'pg_temp%'
         group by n.nspname, c.relname
         order by n.nspname, c.relname
        """
    ).fetchall()
    return [Table(r[0], r[1], tuple(r[2]), tuple(r[3])) for r in rows]


def table_figures(
    conn: psycopg.Connection[Any], table: Table, algorithm: str | None = None
) -> TableFigures:
    """count(*) and the sum of the rows' 64-bit hashes as exact numeric (see ROW_HASH)."""
    algorithm = algorithm or default_algorithm(conn)
    query = sql.SQL("select count(*), coalesce(sum({h}), 0) from {schema}.{table}").format(
        h=row_hash_sql(table.columns, table.hashable, algorithm),
        schema=sql.Identifier(table.schema),
        table=sql.Identifier(table.name),
    )
    row = conn.execute(query).fetchone()
    assert row is not None
    return TableFigures(int(row[0]), str(row[1]), algorithm)


def snapshot_figures(
    conn: psycopg.Connection[Any], algorithm: str | None = None, only: set[str] | None = None
) -> dict[str, TableFigures]:
    """Figures for every table (or those in `only`), in the session's current snapshot."""
    set_checksum_settings(conn)
    algorithm = algorithm or default_algorithm(conn)
    return {
        t.qualified: table_figures(conn, t, algorithm)
        for t in list_tables(conn)
        if only is None or t.qualified in only
    }


ConnFactory = Callable[[], "psycopg.Connection[Any]"]


def parallel_figures(
    conn: psycopg.Connection[Any],
    open_conn: ConnFactory,
    sessions: int,
    snapshot: str | None = None,
    algorithm: str | None = None,
    only: set[str] | None = None,
) -> dict[str, TableFigures]:
    """`snapshot_figures` over `sessions` sessions sharing one snapshot, biggest tables first
    (only the tables named in `only`, when given).

    `conn` lists the tables (and, without `snapshot`, exports one for the others:
    then it must be idle in autocommit). Each session imports the snapshot, so the
    figures are exactly those of one consistent moment, as if computed serially.
    """
    algorithm = algorithm or default_algorithm(conn)
    if snapshot is None:
        with exported_snapshot(conn) as exported:
            return parallel_figures(conn, open_conn, sessions, exported, algorithm, only)
    tables = [t for t in list_tables(conn) if only is None or t.qualified in only]
    if sessions <= 1 or len(tables) <= 1:
        return snapshot_figures(conn, algorithm, only)
    sizes = dict(
        conn.execute(
            "select n.nspname || '.' || c.relname, pg_relation_size(c.oid) from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r'"
        ).fetchall()
    )
    queue = sorted(tables, key=lambda t: -int(sizes.get(t.qualified, 0)))
    lock = threading.Lock()
    found: dict[str, TableFigures] = {}

    def work() -> None:
        worker = open_conn()
        try:
            worker.execute("begin isolation level repeatable read read only")
            worker.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
            for name, value in CHECKSUM_SETTINGS.items():
                worker.execute("select set_config(%s, %s, true)", (name, value))
            while True:
                with lock:
                    if not queue:
                        return
                    table = queue.pop(0)
                figures = table_figures(worker, table, algorithm)
                with lock:
                    found[table.qualified] = figures
        finally:
            worker.close()

    n = min(sessions, len(tables))
    with ThreadPoolExecutor(max_workers=n) as pool:
        for future in [pool.submit(work) for _ in range(n)]:
            future.result()
    return {t.qualified: found[t.qualified] for t in tables}


@contextmanager
def exported_snapshot(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A REPEATABLE READ read-only transaction whose snapshot id others can import.

    The transaction stays open while the block runs, so pg_dump --snapshot and the
    checks see exactly the same data as the before-state figures.
    """
    assert conn.autocommit, "the snapshot transaction is managed here, explicitly"
    conn.execute("begin isolation level repeatable read read only")
    try:
        row = conn.execute("select pg_export_snapshot()").fetchone()
        assert row is not None
        yield str(row[0])
    finally:
        # a connection lost meanwhile took its transaction with it
        with contextlib.suppress(psycopg.Error):
            conn.execute("rollback")


def server_version(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version)


def database_size(conn: psycopg.Connection[Any], dbname: str) -> int:
    row = conn.execute("select pg_database_size(%s)", (dbname,)).fetchone()
    assert row is not None
    return int(row[0])


def applied_migrations(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """The applied (app, name) set from django_migrations; empty when the table is absent."""
    exists = conn.execute("select to_regclass('django_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute("select app, name from django_migrations order by app, name").fetchall()
    return [(str(a), str(n)) for a, n in rows]


_OTHER_SESSIONS = (
    "select pid from pg_stat_activity where usename = %(user)s and datname = %(db)s "
    "and pid <> pg_backend_pid() and application_name <> left(%(own)s, 63) "
    "and not starts_with(application_name, %(own)s || '-')"
)


def same_cluster(a: psycopg.Connection[Any], b: psycopg.Connection[Any]) -> bool:
    """Whether two sessions are on one PostgreSQL cluster, whatever names reached them:
    its system identifier (pg_control_system: superusers and pg_read_all_settings), else
    whether `b` sees `a`'s own backend (its pid and start time) in pg_stat_activity."""
    query = "select system_identifier from pg_control_system()"
    try:
        ids = [c.execute(query).fetchone() for c in (a, b)]
        return ids[0] == ids[1]
    except psycopg.errors.InsufficientPrivilege:
        pass
    me = a.execute(
        "select pid, backend_start from pg_stat_activity where pid = pg_backend_pid()"
    ).fetchone()
    seen = b.execute(
        "select 1 from pg_stat_activity where pid = %s and backend_start = %s", me
    ).fetchone()
    return seen is not None


def drain_sessions(
    conn: psycopg.Connection[Any], user: str, dbname: str, timeout: float, own: str
) -> int:
    """Wait up to `timeout` s for `user`'s sessions on `dbname` to end, terminate the rest
    and wait until they are gone (so their statistics are flushed). Only this run's own
    sessions stay (application_name `own`, or `own-…`: its migrate job, its watcher);
    another Seed run's are the app's writers like any other. Returns how many had to be
    terminated."""
    args = {"user": user, "db": dbname, "own": own}
    deadline = time.monotonic() + timeout
    while True:
        pids = [r[0] for r in conn.execute(_OTHER_SESSIONS, args)]
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in pids:
        conn.execute("select pg_terminate_backend(%s)", (pid,))
    gone_by = time.monotonic() + 10
    while pids and time.monotonic() < gone_by:
        if not conn.execute(_OTHER_SESSIONS, args).fetchall():
            break
        time.sleep(0.05)
    return len(pids)
