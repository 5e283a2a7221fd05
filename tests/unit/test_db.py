"""seed.db: table figures (DESIGN: Checksums) and sessions, on real PostgreSQL databases."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from seed.config import Environment, Secret
from seed.db import (
    CHECKSUM_SETTINGS,
    Endpoint,
    Table,
    applied_migrations,
    connect,
    database_size,
    exported_snapshot,
    list_tables,
    parallel_figures,
    server_version,
    snapshot_figures,
    write_counters,
    writes_since,
)
from seed.errors import PreflightFailed
from seed.sandbox import SandboxInfo

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


def test_identical_data_gives_identical_figures(pair: Pair) -> None:
    a, b = pair
    figures = snapshot_figures(a)
    assert set(figures) == {"public.customer", "public.log", "sales.line"}
    assert {k: v.rows for k, v in figures.items()} == {
        "public.customer": 3,
        "public.log": 3,
        "sales.line": 3,
    }
    for value in figures.values():
        int(value.checksum)  # an exact integer as text, not a float or a cast bigint
    assert snapshot_figures(b) == figures
    assert snapshot_figures(a) == figures  # deterministic
    assert figures["public.customer"].to_json() == {
        "rows": 3,
        "checksum": figures["public.customer"].checksum,
    }


def test_swapping_values_between_rows_changes_the_checksum(pair: Pair) -> None:
    a, b = pair
    before = snapshot_figures(b)["public.customer"]
    b.execute(
        "update customer set name = case id when 1 then 'Bob' when 2 then 'Ann' end"
        " where id in (1, 2)"
    )
    swapped = snapshot_figures(b)["public.customer"]
    assert swapped.rows == before.rows
    assert swapped.checksum != before.checksum
    # values swapped between rows of a composite-key table are caught too
    b.execute("update sales.line set note = case line_no when 1 then 'second' else 'first' end")
    assert snapshot_figures(b)["sales.line"] != snapshot_figures(a)["sales.line"]
    # and swapping back restores the figures exactly
    b.execute(
        "update customer set name = case id when 1 then 'Ann' when 2 then 'Bob' end"
        " where id in (1, 2)"
    )
    assert snapshot_figures(b)["public.customer"] == snapshot_figures(a)["public.customer"]


def test_null_and_empty_string_differ(pair: Pair) -> None:
    a, b = pair
    b.execute("update customer set email = null where id = 2")  # was ''
    fa, fb = snapshot_figures(a), snapshot_figures(b)
    assert fb["public.customer"].rows == fa["public.customer"].rows
    assert fb["public.customer"].checksum != fa["public.customer"].checksum
    # column boundaries matter: ('ab', 'c') is not ('a', 'bc')
    a.execute("create table pair_t (x text, y text); insert into pair_t values ('ab', 'c')")
    b.execute("create table pair_t (x text, y text); insert into pair_t values ('a', 'bc')")
    assert snapshot_figures(a)["public.pair_t"] != snapshot_figures(b)["public.pair_t"]


def test_table_without_primary_key(pair: Pair) -> None:
    a, b = pair
    log = snapshot_figures(a)["public.log"]
    assert log.rows == 3  # duplicate rows and an all-null row are counted
    b.execute("delete from log where ctid = (select min(ctid) from log where message = 'start')")
    assert snapshot_figures(b)["public.log"].rows == 2
    assert snapshot_figures(b)["public.log"].checksum != log.checksum
    a.execute("create table empty_t (v text)")
    assert snapshot_figures(a)["public.empty_t"].to_json() == {"rows": 0, "checksum": "0"}


def test_primary_key_columns_come_first(pair: Pair) -> None:
    a, _ = pair
    a.execute("alter table customer drop column avatar")  # dropped columns are left out
    tables = {t.qualified: t for t in list_tables(a)}
    assert tables["sales.line"] == Table("sales", "line", ("order_id", "line_no", "note", "qty"))
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


def test_session_settings_do_not_change_the_figures(pair: Pair) -> None:
    a, b = pair
    a.execute("set timezone = 'America/New_York'")
    a.execute("set datestyle = 'SQL, DMY'")
    a.execute("set intervalstyle = 'iso_8601'")
    a.execute("set extra_float_digits = 0")
    a.execute("set bytea_output = 'escape'")
    b.execute("set timezone = 'Asia/Tokyo'")
    b.execute("set datestyle = 'German'")
    assert snapshot_figures(a) == snapshot_figures(b)
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


def test_writes_since() -> None:
    before = {"public.a": 10, "public.b": 5, "public.gone": 3, "public.reset": 100}
    now = {"public.a": 10, "public.b": 8, "public.new": 2, "public.reset": 4}
    assert writes_since(before, now) == {
        "public.b": 3,
        "public.gone": None,  # counters went backwards: unknown, so treated as written
        "public.new": 2,
        "public.reset": None,
    }
    assert writes_since(now, now) == {}


def test_write_counters_count_committed_writes(sandbox: SandboxInfo, scratch_db: Scratch) -> None:
    name, admin = scratch_db()
    admin.execute("create table w (id int primary key, v int)")
    baseline = write_counters(admin)
    assert baseline["public.w"] == 0
    # a writer that has disconnected has flushed its statistics (a live idle session may
    # hold them back for up to PGSTAT_IDLE_INTERVAL, 10 s, in PostgreSQL 15)
    with psycopg.connect(sandbox.admin_conninfo(name), autocommit=True) as writer:
        writer.execute("insert into w select g, g from generate_series(1, 5) g")
        writer.execute("update w set v = 0 where id <= 2")
        writer.execute("delete from w where id = 5")
        with writer.transaction(force_rollback=True):
            writer.execute("insert into w values (99, 99)")  # rolled back: still a write
    deadline = time.monotonic() + 5
    while (moved := writes_since(baseline, write_counters(admin))) != {"public.w": 9}:
        assert time.monotonic() < deadline, moved
        time.sleep(0.05)
