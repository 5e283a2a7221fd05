"""seed.db.postgres: table figures (DESIGN: Checksums) and sessions, on real PostgreSQL
databases."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sandbox.servers import SandboxInfo
from seed.config.environment import Environment, Secret
from seed.db.postgres import (
    CHECKSUM_SETTINGS,
    ROW_HASH,
    ROW_TEXT,
    Endpoint,
    applied_migrations,
    connect,
    database_size,
    drain_sessions,
    exported_snapshot,
    list_tables,
    parallel_figures,
    recorded_algorithm,
    same_cluster,
    same_figures,
    server_version,
    snapshot_figures,
)
from seed.errors import PreflightFailed

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]

SCHEMA = """
create schema sales;
create table customer (
    id bigint primary key, name text, email text, joined timestamptz,
    balance numeric(12, 2), score double precision, avatar bytea, tags text[],
    since date, wait interval
);
create table sales.line (note text, qty int, order_id int, line_no int,
                         primary key (order_id, line_no));
create table log (at timestamp, message text);
insert into customer values
  (1, 'Ann', 'ann@example.com', '2024-03-01 12:00:00+00', 10.50, 0.1, '\\x00ff',
   '{a,b}', '2024-03-01', '1 day 02:00:00'),
  (2, 'Bob', '', '2024-06-30 23:59:59.123456+00', -3.00, 1e-7, null, '{}', null, null),
  (3, null, 'c@example.com', null, 0, 'NaN', '\\x', null, '1999-12-31', '-1 mon');
insert into sales.line values ('first', 2, 10, 1), ('second', 1, 10, 2), (null, 5, 11, 1);
insert into log values ('2024-01-01 00:00:00', 'start'), ('2024-01-01 00:00:00', 'start'),
                       (null, null);
"""


@pytest.fixture
def pair(scratch_db: Scratch) -> tuple[psycopg.Connection[Any], psycopg.Connection[Any]]:
    """Two databases loaded with the same schema and data."""
    conns = []
    for _ in range(2):
        _, conn = scratch_db()
        conn.execute(SCHEMA)
        conns.append(conn)
    return conns[0], conns[1]


Pair = tuple[psycopg.Connection[Any], psycopg.Connection[Any]]


@pytest.fixture(params=[ROW_HASH, ROW_TEXT])
def algorithm(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_identical_data_gives_identical_figures(pair: Pair, algorithm: str) -> None:
    a, b = pair
    figures = snapshot_figures(a, algorithm)
    assert set(figures) == {"public.customer", "public.log", "sales.line"}
    assert {k: v.rows for k, v in figures.items()} == {
        "public.customer": 3,
        "public.log": 3,
        "sales.line": 3,
    }
    for value in figures.values():
        int(value.checksum)  # an exact integer as text, not a float or a cast bigint
    assert snapshot_figures(b, algorithm) == figures
    assert snapshot_figures(a, algorithm) == figures  # deterministic
    assert figures["public.customer"].to_json() == {
        "rows": 3,
        "checksum": figures["public.customer"].checksum,
        "algorithm": algorithm,
    }


def test_swapping_values_between_rows_changes_the_checksum(pair: Pair, algorithm: str) -> None:
    a, b = pair
    before = snapshot_figures(b, algorithm)["public.customer"]
    b.execute(
        "update customer set name = case id when 1 then 'Bob' when 2 then 'Ann' end"
        " where id in (1, 2)"
    )
    swapped = snapshot_figures(b, algorithm)["public.customer"]
    assert swapped.rows == before.rows
    assert swapped.checksum != before.checksum
    # values swapped between rows of a composite-key table are caught too
    b.execute("update sales.line set note = case line_no when 1 then 'second' else 'first' end")
    assert (
        snapshot_figures(b, algorithm)["sales.line"] != snapshot_figures(a, algorithm)["sales.line"]
    )
    # and swapping back restores the figures exactly
    b.execute(
        "update customer set name = case id when 1 then 'Ann' when 2 then 'Bob' end"
        " where id in (1, 2)"
    )
    assert (
        snapshot_figures(b, algorithm)["public.customer"]
        == snapshot_figures(a, algorithm)["public.customer"]
    )


def test_null_and_empty_string_differ(pair: Pair, algorithm: str) -> None:
    a, b = pair
    b.execute("update customer set email = null where id = 2")  # was ''
    fa, fb = snapshot_figures(a, algorithm), snapshot_figures(b, algorithm)
    assert fb["public.customer"].rows == fa["public.customer"].rows
    assert fb["public.customer"].checksum != fa["public.customer"].checksum
    # column boundaries matter: ('ab', 'c') is not ('a', 'bc')
    a.execute("create table pair_t (x text, y text); insert into pair_t values ('ab', 'c')")
    b.execute("create table pair_t (x text, y text); insert into pair_t values ('a', 'bc')")
    assert (
        snapshot_figures(a, algorithm)["public.pair_t"]
        != snapshot_figures(b, algorithm)["public.pair_t"]
    )


def test_table_without_primary_key(pair: Pair, algorithm: str) -> None:
    a, b = pair
    log = snapshot_figures(a, algorithm)["public.log"]
    assert log.rows == 3  # duplicate rows and an all-null row are counted
    b.execute("delete from log where ctid = (select min(ctid) from log where message = 'start')")
    assert snapshot_figures(b, algorithm)["public.log"].rows == 2
    assert snapshot_figures(b, algorithm)["public.log"].checksum != log.checksum
    a.execute("create table empty_t (v text)")
    empty = snapshot_figures(a, algorithm)["public.empty_t"].to_json()
    assert empty == {"rows": 0, "checksum": "0", "algorithm": algorithm}


def test_every_column_type_hashes_by_value(scratch_db: Scratch) -> None:
    """row-hash uses each type's hash function; types without one go through ::text."""
    _, conn = scratch_db()
    conn.execute(
        "create type mood as enum ('sad', 'ok', 'happy');"
        "create domain email as text check (value like '%@%');"
        "create table odd (id int primary key, doc json, docb jsonb, pos point, "
        "ids int[], span int4range, feel mood, mail email, at timestamptz, n numeric);"
        "insert into odd values (1, '{\"a\": 1}', '{\"a\": 1}', '(1,2)', '{1,2}',"
        " '[1,5)', 'ok', 'x@y', '2024-01-01 00:00+00', 1.50)"
    )
    (odd,) = [t for t in list_tables(conn) if t.name == "odd"]
    hashed = dict(zip(odd.columns, odd.hashable, strict=True))
    assert hashed == {
        "id": True,
        "doc": False,  # json has no equality, let alone a hash
        "docb": True,
        "pos": False,
        "ids": False,
        "span": False,
        "feel": True,
        "mail": True,
        "at": True,
        "n": True,
    }
    first = snapshot_figures(conn, ROW_HASH)["public.odd"]
    for change in (
        "update odd set doc = '{\"a\": 2}'",
        "update odd set pos = '(2,1)'",
        "update odd set ids = '{2,1}'",
        "update odd set feel = 'happy'",
        "update odd set at = at + interval '1 microsecond'",
    ):
        conn.execute("begin")
        conn.execute(change)
        assert snapshot_figures(conn, ROW_HASH)["public.odd"] != first, change
        conn.execute("rollback")
    assert snapshot_figures(conn, ROW_HASH)["public.odd"] == first


def test_figures_compare_only_within_one_algorithm(pair: Pair) -> None:
    a, _ = pair
    text = snapshot_figures(a, ROW_TEXT)["public.customer"].to_json()
    hashed = snapshot_figures(a, ROW_HASH)["public.customer"].to_json()
    assert text["checksum"] != hashed["checksum"]
    assert same_figures(text, dict(text)) and same_figures(hashed, dict(hashed))
    assert not same_figures(text, {**hashed, "checksum": text["checksum"]})
    assert not same_figures(text, None)
    # a record written before the algorithm was recorded is row-text
    legacy = {"rows": text["rows"], "checksum": text["checksum"]}
    assert same_figures(legacy, text) and not same_figures(legacy, hashed)
    assert recorded_algorithm({"t": legacy}) == ROW_TEXT
    assert recorded_algorithm({"t": hashed}) == ROW_HASH
    assert recorded_algorithm({}) == ROW_HASH


def test_primary_key_columns_come_first(pair: Pair) -> None:
    a, _ = pair
    a.execute("alter table customer drop column avatar")  # dropped columns are left out
    tables = {t.qualified: t for t in list_tables(a)}
    line = tables["sales.line"]
    assert (line.schema, line.name) == ("sales", "line")
    assert line.columns == ("order_id", "line_no", "note", "qty")
    assert tables["public.log"].columns == ("at", "message")
    assert tables["public.customer"].columns == (
        "id",
        "name",
        "email",
        "joined",
        "balance",
        "score",
        "tags",
        "since",
        "wait",
    )
    a.execute("create view customer_v as select * from customer")
    a.execute("create temporary table scratch_t (id int)")
    assert "public.customer_v" not in {t.qualified for t in list_tables(a)}
    assert all(not t.schema.startswith("pg_") for t in list_tables(a))


def test_session_settings_do_not_change_the_figures(pair: Pair, algorithm: str) -> None:
    a, b = pair
    a.execute("set timezone = 'America/New_York'")
    a.execute("set datestyle = 'SQL, DMY'")
    a.execute("set intervalstyle = 'iso_8601'")
    a.execute("set extra_float_digits = 0")
    a.execute("set bytea_output = 'escape'")
    b.execute("set timezone = 'Asia/Tokyo'")
    b.execute("set datestyle = 'German'")
    assert snapshot_figures(a, algorithm) == snapshot_figures(b, algorithm)
    # the function set the checksum settings itself
    for name, value in CHECKSUM_SETTINGS.items():
        row = a.execute("select current_setting(%s)", (name,)).fetchone()
        assert row is not None
        assert row[0] == value or (name, row[0]) == ("DateStyle", "ISO, DMY")


def test_exported_snapshot_is_seen_by_another_session(
    sandbox: SandboxInfo, scratch_db: Scratch
) -> None:
    name, writer = scratch_db()
    writer.execute("create table t (id int primary key); insert into t values (1), (2)")
    with (
        psycopg.connect(sandbox.admin_conninfo(name), autocommit=True) as exporter,
        psycopg.connect(sandbox.admin_conninfo(name), autocommit=True) as reader,
    ):
        with exported_snapshot(exporter) as snap:
            assert isinstance(snap, str) and snap
            writer.execute("insert into t values (3)")  # commits at once (autocommit)
            reader.execute("begin isolation level repeatable read read only")
            reader.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snap)))
            assert reader.execute("select count(*) from t").fetchone() == (2,)
            reader.execute("rollback")
            # the exporting session itself stays on its snapshot, read-only
            assert snapshot_figures(exporter)["public.t"].rows == 2
            assert exporter.execute("show transaction_isolation").fetchone() == ("repeatable read",)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                exporter.execute("insert into t values (4)")
        assert exporter.autocommit
        assert exporter.execute("select count(*) from t").fetchone() == (3,)


def test_parallel_figures_equal_serial_ones_in_one_snapshot(
    sandbox: SandboxInfo, scratch_db: Scratch
) -> None:
    name, writer = scratch_db()
    writer.execute(SCHEMA)
    for i in range(6):
        writer.execute(
            f"create table t{i} as select g as id, md5(g::text)"
            f" from generate_series(1, {1000 * i}) g"
        )
    opened: list[psycopg.Connection[Any]] = []

    def open_conn() -> psycopg.Connection[Any]:
        conn = psycopg.connect(sandbox.admin_conninfo(name), autocommit=True)
        opened.append(conn)
        return conn

    with psycopg.connect(sandbox.admin_conninfo(name), autocommit=True) as lister:
        serial = snapshot_figures(lister)
        assert parallel_figures(lister, open_conn, 3) == serial
        assert list(parallel_figures(lister, open_conn, 3)) == list(serial)  # same order
        assert len(opened) == 6 and all(c.closed for c in opened)
        assert parallel_figures(lister, open_conn, 1) == serial  # no extra session
        assert len(opened) == 6
        with exported_snapshot(lister) as snap:
            writer.execute("insert into t5 values (-1, 'later'); delete from log")
            assert parallel_figures(lister, open_conn, 2, snap) == serial
        assert parallel_figures(lister, open_conn, 2) != serial


def test_applied_migrations(scratch_db: Scratch) -> None:
    _, conn = scratch_db()
    assert applied_migrations(conn) == []
    conn.execute(
        "create table django_migrations (id serial primary key, app text, name text,"
        " applied timestamptz default now());"
        "insert into django_migrations (app, name) values ('shop', '0002_b'),"
        " ('auth', '0001_initial'), ('shop', '0001_initial')"
    )
    assert applied_migrations(conn) == [
        ("auth", "0001_initial"),
        ("shop", "0001_initial"),
        ("shop", "0002_b"),
    ]


def test_connect_as_both_roles(sandbox: SandboxInfo, sandbox_env: Environment) -> None:
    endpoint = Endpoint("127.0.0.1", sandbox.spec.pg_port)
    with connect(sandbox_env, endpoint, admin=True, dbname="postgres", app_name="seed-t-1") as c:
        row = c.execute("select current_user, current_setting('application_name')").fetchone()
        assert row == (sandbox.spec.admin_user, "seed-t-1")
        assert c.autocommit
        assert server_version(c) >= 150000
        assert database_size(c, sandbox.spec.db_name) > 0
    with connect(sandbox_env, endpoint, admin=False, app_name="x" * 100) as c:
        row = c.execute("select current_user, current_database()").fetchone()
        assert row == (sandbox.spec.app_user, sandbox.spec.db_name)
        app_name = c.execute("show application_name").fetchone()
        assert app_name == ("x" * 63,)


def test_connect_failure_is_one_preflight_line(
    sandbox: SandboxInfo, sandbox_env: Environment
) -> None:
    wrong = dataclasses.replace(
        sandbox_env, db=dataclasses.replace(sandbox_env.db, password=Secret("wrong-password"))
    )
    endpoint = Endpoint("127.0.0.1", sandbox.spec.pg_port)
    with pytest.raises(PreflightFailed) as info:
        connect(wrong, endpoint, admin=False)
    message = str(info.value)
    assert message.startswith(f"database shop@127.0.0.1:{sandbox.spec.pg_port}/shop (db.user):")
    assert 'password authentication failed for user "shop"' in message
    assert "\n" not in message
    assert "wrong-password" not in message
    assert info.value.code == 4


def test_error_text_never_quotes_the_row(scratch_db: Any) -> None:
    """A failing statement's one line is its primary message, not the DETAIL with values."""
    from seed.db.postgres import error_text

    _, conn = scratch_db()
    conn.execute("create table p (email text check (email <> 'secret@example.com'))")
    with pytest.raises(psycopg.Error) as err:
        conn.execute("insert into p values ('secret@example.com')")
    assert "secret@example.com" in str(err.value)  # libpq's text quotes the row
    text = error_text(err.value)
    assert "violates check constraint" in text and "secret@example.com" not in text


def test_draining_spares_only_this_runs_own_sessions(
    sandbox: SandboxInfo, scratch_db: Scratch
) -> None:
    """The app's sessions and another Seed run's (`seed-…` is a prefix anyone can set) are
    ended; this run's own (its name, or its name with a suffix) stay."""
    name, control = scratch_db()
    own = "seed-sb-20261204T120000Z-ab12"
    names = ["gunicorn", "seed-sb-20261204T110000Z-ffff", own, f"{own}-rh"]
    conns = {n: psycopg.connect(sandbox.admin_conninfo(name), application_name=n) for n in names}
    try:
        ended = drain_sessions(control, sandbox.spec.admin_user, name, 0.3, own)
        assert ended == 2
        left = control.execute(
            "select application_name from pg_stat_activity where datname = %s "
            "and pid <> pg_backend_pid() order by 1",
            (name,),
        ).fetchall()
        assert [r[0] for r in left] == sorted([own, f"{own}-rh"])
    finally:
        for conn in conns.values():
            conn.close()


def test_same_cluster_whatever_the_role_or_database(sandbox: SandboxInfo) -> None:
    """The app role (no superuser: the pg_stat_activity way if pg_control_system is not
    granted) and the admin, on different databases of one cluster: the same cluster."""
    with (
        psycopg.connect(sandbox.app_conninfo(), autocommit=True) as app,
        psycopg.connect(sandbox.admin_conninfo("postgres"), autocommit=True) as admin,
    ):
        assert same_cluster(app, admin) and same_cluster(admin, app)
