"""What only an online deploy's undo needs (seed.undo.online), on a real PostgreSQL: the
INVALID indexes a failed concurrent build leaves, and the values a reverse would drop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from seed.undo.online import Added, added_figures, drop_new_invalid, invalid_indexes, written_into

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]


def test_what_the_app_wrote_into_added_columns_and_tables_is_told_from_the_migrations(
    scratch_db: Scratch,
) -> None:
    _, conn = scratch_db()
    conn.execute("create table o (id int primary key, total int)")
    conn.execute("insert into o select g, g from generate_series(1, 50) g")
    # the migrations: a nullable column, one with a constant default, a new table
    conn.execute("alter table o add column note text, add column flag text default '' not null")
    conn.execute("create table tag (id int primary key, name text)")
    added = Added.from_json(
        {"new_tables": ["tag", "missing"], "new_columns": [["o", "note"], ["o", "flag"]]}
    )
    after_migrate = added_figures(conn, added)
    assert after_migrate["o.note"][0] == after_migrate["o.flag"][0] == 0  # NULLs, defaults
    assert after_migrate["tag"][0] == 0 and "missing" not in after_migrate
    # the old release inserts rows (NULL note, the default flag), updates old columns
    conn.execute("insert into o (id, total) values (51, 1)")
    conn.execute("update o set total = total + 1 where id < 10")
    assert written_into(after_migrate, added_figures(conn, added)) == {}
    # the new release writes into what a reverse would drop
    conn.execute("update o set note = 'gift' where id = 3")
    conn.execute("update o set flag = 'x' where id = 4")
    conn.execute("insert into tag values (1, 'a')")
    found = written_into(after_migrate, added_figures(conn, added))
    assert found == {"o.flag": 1, "o.note": 1, "tag": 1}
    # a value changed in place (same count) is seen too
    now = added_figures(conn, added)
    conn.execute("update o set note = 'wrap' where id = 3")
    assert written_into(now, added_figures(conn, added)) == {"o.note": 1}


def test_only_the_indexes_left_invalid_since_the_deploy_are_dropped(
    scratch_db: Scratch, sandbox: Any
) -> None:
    name, conn = scratch_db()
    conn.execute("create table o (id int primary key, v int)")
    conn.execute("insert into o select g, g % 3 from generate_series(1, 100) g")
    # an index already invalid before the deploy (a failed unique build): not Seed's to drop
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("create unique index concurrently old_idx on o (v)")
    before = invalid_indexes(conn)
    assert before == ["public.old_idx"]
    # the deploy's build waits for an older snapshot and times out: left INVALID
    other = psycopg.connect(sandbox.admin_conninfo(name), autocommit=True)
    other.execute("begin isolation level repeatable read")
    other.execute("select 1").fetchone()
    conn.execute("set lock_timeout = '500ms'")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        conn.execute("create index concurrently new_idx on o (v)")
    other.execute("rollback")
    other.close()
    assert invalid_indexes(conn) == ["public.new_idx", "public.old_idx"]
    assert drop_new_invalid(conn, before) == ["public.new_idx"]
    assert invalid_indexes(conn) == ["public.old_idx"]
