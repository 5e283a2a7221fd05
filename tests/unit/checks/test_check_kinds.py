"""Count, checksum, sample and custom-SQL checks and the built-in invariants, on real PG.

Each "migration" here is the SQL a broken Django migration would run; the Django
migrations themselves are exercised end to end in tests/e2e/test_checks.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sandbox.servers import SandboxInfo
from seed.checks import invariants
from seed.checks.check import measure, run_check
from seed.checks.run import CheckRun, repo_checks
from seed.checks.spec import Check, CheckParser, Invariants
from seed.commands.validate import last_after_state
from seed.errors import PreflightFailed
from seed.journal.record import RunRecord
from seed.run.digests import Digester

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]
Connect = Callable[[], psycopg.Connection[Any]]


def parse(*items: dict[str, Any]) -> tuple[Check, ...]:
    errors: list[str] = []
    checks = CheckParser(errors).checks(list(items))
    assert not errors, errors
    return checks


@pytest.fixture
def shop(scratch_db: Scratch) -> psycopg.Connection[Any]:
    """A small customers/orders schema like the example shop's (v2: name split in two)."""
    _, conn = scratch_db()
    conn.execute(
        """
        create table customer (id serial primary key, name text not null,
                               first_name text not null default '',
                               last_name text not null default '',
                               email text not null unique, created_at timestamptz not null);
        insert into customer (name, email, created_at)
        select case when g % 10 = 7 then 'Solo' || g else 'First' || g || ' van Last' || g end,
               'c' || g || '@example.com',
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
          from generate_series(1, 500) g;
        create table orders (id serial primary key, customer_id int not null references customer,
                             total numeric(10, 2) not null, status text, placed date not null);
        insert into orders (customer_id, total, status, placed)
        select 1 + g % 500, (g * 37 % 1000) / 10.0, 'new', date '2024-01-01' + g % 300
          from generate_series(1, 2000) g;
        """
    )
    return conn


def before_after(
    conn: psycopg.Connection[Any], check: Check, migration: str
) -> tuple[bool, Any, Any]:
    """(passed, actual shown, before shown) of `check` around `migration`."""
    before = measure(conn, check, "10s")
    conn.execute(migration)
    result = run_check(conn, check, "10s", before=before)
    assert result.error is None, result.error
    return result.passed, result.actual, result.before


ORDERS_UNCHANGED = {"name": "orders unchanged", "checksum": {"table": "orders"}}


# --------------------------------------------------------------------------- checksum


def test_checksum_passes_when_nothing_changed(shop: psycopg.Connection[Any]) -> None:
    (check,) = parse(ORDERS_UNCHANGED)
    passed, actual, before = before_after(shop, check, "select 1")
    assert passed and actual == before and actual.startswith("2000 rows, checksum ")


@pytest.mark.parametrize(
    "migration",
    [
        # silently corrupts a column: totals rounded
        "update orders set total = round(total) where id % 7 = 0",
        # swaps values between rows: sum(total) and count(*) unchanged
        "update orders o set total = p.total from orders p"
        " where (o.id % 2 = 1 and p.id = o.id + 1) or (o.id % 2 = 0 and p.id = o.id - 1)",
        # nulls a value
        "update orders set status = null where id = 1234",
        # deletes a row
        "delete from orders where id = 99",
    ],
    ids=["corrupt", "swap", "null", "delete"],
)
def test_checksum_catches(shop: psycopg.Connection[Any], migration: str) -> None:
    (check,) = parse(ORDERS_UNCHANGED)
    sums = "select count(*), sum(total) from orders"
    counted = shop.execute(sums).fetchone()
    passed, actual, before = before_after(shop, check, migration)
    assert not passed and actual != before
    if "p.total" in migration:
        assert shop.execute(sums).fetchone() == counted  # a count or a sum would not see it


def test_checksum_of_named_columns_or_all_but_some(shop: psycopg.Connection[Any]) -> None:
    only, but = parse(
        {"name": "only", "checksum": {"table": "customer", "columns": ["email", "created_at"]}},
        {"name": "but", "checksum": {"table": "customer", "except": ["first_name", "last_name"]}},
    )
    assert measure(shop, only, "5s")["columns"] == ["id", "email", "created_at"]
    assert measure(shop, but, "5s")["columns"] == ["id", "name", "email", "created_at"]
    # the migration may change the excepted columns and add columns: both still pass
    split = (
        "update customer set first_name = split_part(name, ' ', 1);"
        "alter table customer add column if not exists points int default 0"
    )
    for check in (only, but):
        before = measure(shop, check, "5s")
        shop.execute(split)
        assert run_check(shop, check, "5s", before=before).passed, check.name
    # ...but not the others
    before = measure(shop, but, "5s")
    shop.execute("update customer set name = upper(name) where id = 3")
    assert not run_check(shop, but, "5s", before=before).passed


def test_checksum_fails_when_a_column_is_dropped(shop: psycopg.Connection[Any]) -> None:
    (check,) = parse({"name": "c", "checksum": {"table": "customer"}})
    before = measure(shop, check, "5s")
    shop.execute("alter table customer drop column last_name")
    result = run_check(shop, check, "5s", before=before)
    assert not result.passed and 'column "last_name" does not exist' in str(result.error)


def test_checksum_ignores_the_sessions_time_zone_and_date_style(
    shop: psycopg.Connection[Any],
) -> None:
    checks = parse(
        {"name": "customers", "checksum": {"table": "customer"}},
        {"name": "orders", "checksum": {"table": "orders"}},
        {"name": "latest", "sql": "select max(created_at)::text from customer", "expect": 1},
    )
    utc = [measure(shop, c, "5s") for c in checks]
    shop.execute("set timezone = 'America/New_York'; set datestyle = 'SQL, DMY'")
    shop.execute("set extra_float_digits = 0; set intervalstyle = 'sql_standard'")
    assert [measure(shop, c, "5s") for c in checks] == utc
    assert utc[2] == "2024-01-01 08:20:00+00"


# --------------------------------------------------------------------------- sample


def test_sample_with_a_column_mapping_passes_the_split(shop: psycopg.Connection[Any]) -> None:
    (check,) = parse(
        {
            "name": "names survive the split",
            "sample": {
                "table": "customer",
                "size": 500,  # every row, so the single-word names are in it
                "compare": {
                    "name": "concat_ws(' ', nullif(first_name, ''), nullif(last_name, ''))",
                    "email": "email",
                },
            },
        }
    )
    split = """
        update customer set first_name = split_part(name, ' ', 1),
               last_name = case when position(' ' in name) > 0
                                then substring(name from position(' ' in name) + 1) else '' end
    """
    passed, actual, _ = before_after(shop, check, split)
    assert passed, actual
    assert actual == "500 sampled rows as before"


def test_sample_shows_what_differs(shop: psycopg.Connection[Any]) -> None:
    (check,) = parse(
        {"name": "emails", "sample": {"table": "customer", "size": 500, "compare": ["email"]}}
    )
    shop.execute("alter table orders drop constraint orders_customer_id_fkey")
    migration = (
        "update customer set email = upper(email) where id = 5; delete from customer where id = 6"
    )
    passed, actual, _ = before_after(shop, check, migration)
    assert not passed
    assert actual.startswith("2 of 500 differ: ")
    # which column, never its values (they are personal data: the report is shared)
    assert "key 5: email differs" in actual and "example.com" not in actual.lower()
    assert "key 6: row gone" in actual


def test_sample_takes_size_random_rows(shop: psycopg.Connection[Any]) -> None:
    (check,) = parse(
        {"name": "s", "sample": {"table": "orders", "key": "id", "size": 50, "compare": ["total"]}}
    )
    first = measure(shop, check, "5s")
    second = measure(shop, check, "5s")
    assert len(first["rows"]) == len(second["rows"]) == 50
    assert first["rows"] != second["rows"]  # random: 50 of 2000 twice the same is ~impossible


def test_sampled_values_are_keyed_digests(shop: psycopg.Connection[Any]) -> None:
    """A sample holds its rows' values as keyed digests only: two runs under one key
    compare (a later `validate` against the journal's after-state), the same value under
    another key digests otherwise and such a baseline is not compared; a baseline an
    older Seed recorded with the values themselves is digested and compared."""
    (check,) = parse(
        {"name": "emails", "sample": {"table": "customer", "size": 500, "compare": ["email"]}}
    )
    team, other = Digester.from_secret("team"), Digester.from_secret("other team")
    first = measure(shop, check, "5s", digester=team)
    text = json.dumps(first)
    assert "example.com" not in text and "c5@" not in text
    assert first["digests"] == team.key_id and first["columns"] == ["email"]
    assert first["rows"]["5"] == [team("c5@example.com")] != [other("c5@example.com")]
    # a later run under the same key: the same digests, the comparison passes
    again = run_check(shop, check, "5s", before=first, digester=team)
    assert again.passed and again.actual == "500 sampled rows as before"
    # under another key: not comparable, skipped with the reason (never a false failure)
    elsewhere = run_check(shop, check, "5s", before=first, digester=other)
    assert elsewhere.skipped and "another key" in elsewhere.skipped
    # an older record: raw values, no key: digested now, compared like with like
    old = {"side": "after", "rows": {"5": ["c5@example.com"], "6": ["c6@example.com"]}}
    shop.execute("update customer set email = 'x' || email where id = 6")
    result = run_check(shop, check, "5s", before=old, digester=team)
    assert not result.passed and result.actual == "1 of 2 differ: key 6: column 1 differs"
    assert "example.com" not in json.dumps(result.to_json())


def test_a_sample_key_must_be_a_surrogate(shop: psycopg.Connection[Any]) -> None:
    """Sample keys are kept as they are (the rows are found again by them): a text key
    (an e-mail address) would put personal data in the report, so it is refused."""
    (check,) = parse(
        {"name": "s", "sample": {"table": "customer", "key": "email", "compare": ["name"]}}
    )
    with pytest.raises(PreflightFailed, match="sample key email of customer is text"):
        CheckRun((check,), "5s").plan(shop)


def test_custom_sql_text_is_shown_and_recorded_as_digests(shop: psycopg.Connection[Any]) -> None:
    """A custom check's text read from the rows reaches neither the report nor the journal
    (numbers do); a recorded digest still serves as the next run's baseline."""
    checks = parse(
        {"name": "first", "sql": "select email from customer where id = 1", "expect": {"==": "x"}},
        {"name": "same min", "sql": "select email from customer where id = 1",
         "expect": {"equals_before": True}},
        {"name": "count", "sql": "select count(*) from customer",
         "expect": {"equals_before": True}},
        {"name": "rows", "sql": "select email from customer where id = 3",
         "expect": {"zero_rows": True}},
    )  # fmt: skip
    team = Digester.from_secret("team")
    run = CheckRun(checks, "5s", digester=team)
    assert run.before_state(shop, None) == []
    run.after_state(shop, when=("pre", "post"))
    report = json.dumps([r.to_json() for r in run.results] + [run.baselines_json()])
    report += " ".join(r.describe() for r in run.results)
    assert "example.com" not in report
    assert [r.passed for r in run.results] == [False, True, True, False]
    assert run.results[0].actual == team("c1@example.com")
    recorded = run.after_values()
    assert recorded == {"same min": team("c1@example.com"), "count": 500}
    later = CheckRun(checks[1:3], "5s", baselines=recorded, digester=team)
    later.after_state(shop)
    assert [r.passed for r in later.results] == [True, True]
    shop.execute("update customer set email = 'a' || email where id = 1")
    later.results.clear()
    later.after_state(shop)
    assert [r.passed for r in later.results] == [False, True]


# --------------------------------------------------------------------------- counts, custom SQL


def test_count_checks(shop: psycopg.Connection[Any]) -> None:
    new = {"table": "orders", "where": "status = 'new'"}
    distinct = {"sql": "select distinct customer_id from orders"}
    exact, where, around, by_sql = parse(
        {"name": "exact", "count": "orders", "expect": 2000},
        {"name": "new", "count": new, "expect": {">=": 1}},
        {
            "name": "around",
            "count": "orders",
            "expect": {"equals_before": True, "tolerance_pct": 1},
        },
        {"name": "sql", "count": distinct, "expect": {"delta": -1}},
    )
    assert run_check(shop, exact, "5s").passed
    assert run_check(shop, where, "5s").passed
    before_around, before_sql = measure(shop, around, "5s"), measure(shop, by_sql, "5s")
    assert (before_around, before_sql) == (2000, 500)
    shop.execute("delete from orders where customer_id = 1")  # 4 orders, one customer
    assert run_check(shop, around, "5s", before=before_around).passed  # 0.2 % < 1 %
    assert run_check(shop, by_sql, "5s", before=before_sql).passed
    shop.execute("delete from orders where id <= 100")
    result = run_check(shop, around, "5s", before=before_around)
    assert not result.passed and result.expected == "equal to before ±1%"


def test_custom_sql_expectations(shop: psycopg.Connection[Any]) -> None:
    cases = [
        ({"zero_rows": True}, "select id from orders where total < 0", True),
        ({"zero_rows": True}, "select id from orders where total = 0", False),
        ({"exact_rows": [["new", 2000]]}, "select status, count(*) from orders group by 1", True),
        ({"exact_rows": [["new", 1999]]}, "select status, count(*) from orders group by 1", False),
        ({">": 499}, "select count(*) from customer", True),
        ({"<": 500}, "select count(*) from customer", False),
        ({"==": 500}, "select count(*) from customer", True),
        ({"!=": 500}, "select count(*) from customer", False),
        ({"between": [0, 100]}, "select max(total) from orders", True),
    ]
    for i, (expect, query, ok) in enumerate(cases):
        (check,) = parse({"name": f"c{i}", "sql": query, "expect": expect})
        result = run_check(shop, check, "5s")
        assert result.passed is ok, (expect, query, result)


# --------------------------------------------------------------------------- invariants


def run_invariants(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    results = invariants.database_invariants(conn, Invariants(), "10s")
    return {r.name.removeprefix("invariant: "): r for r in results}


def test_invariants_pass_on_a_healthy_database(shop: psycopg.Connection[Any]) -> None:
    found = run_invariants(shop)
    assert sorted(found) == [
        "NOT VALID constraints hold",
        "no invalid indexes",
        "sequences ahead of their columns",
    ]
    assert all(r.passed for r in found.values()), found


def test_invariants_catch_what_a_migration_left_behind(shop: psycopg.Connection[Any]) -> None:
    # a failed CREATE INDEX CONCURRENTLY leaves an invalid index
    shop.execute("update orders set total = 1 where id in (1, 2)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        shop.execute("create unique index concurrently orders_total_uniq on orders (total)")
    # ids inserted explicitly past the sequence
    shop.execute(
        "insert into customer (id, name, email, created_at) values (900, 'x', 'x@x', now())"
    )
    # constraints added NOT VALID over rows that break them
    shop.execute(
        "alter table orders drop constraint orders_customer_id_fkey;"
        "insert into orders (customer_id, total, placed) values (7777, 1, '2024-01-01');"
        "alter table orders add constraint orders_customer_fk foreign key (customer_id)"
        " references customer not valid;"
        "alter table orders add constraint orders_status_not_null check (status is not null)"
        " not valid"
    )
    found = run_invariants(shop)
    assert not any(r.passed for r in found.values())
    assert "orders_total_uniq" in found["no invalid indexes"].actual
    assert (
        "customer_id_seq next 501 <= max(customer.id) 900"
        in found["sequences ahead of their columns"].actual
    )
    nv = found["NOT VALID constraints hold"].actual
    assert "orders.orders_customer_fk (NOT VALID): 1 orphan row(s)" in nv
    assert "orders.orders_status_not_null (NOT VALID): 1 violating row(s)" in nv


@pytest.fixture
def two_roles(
    scratch_db: Scratch, sandbox: SandboxInfo
) -> Iterator[tuple[psycopg.Connection[Any], Connect, str]]:
    """(admin connection to a scratch database, connect to it as the app role, another
    role's name: a role that is not the app's, dropped afterwards)."""
    name, admin = scratch_db()
    role = f"seed_unit_other_{os.getpid()}"
    admin.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
    opened: list[psycopg.Connection[Any]] = []

    def connect() -> psycopg.Connection[Any]:
        conn = psycopg.connect(sandbox.conninfo(sandbox.spec.app_user, name), autocommit=True)
        opened.append(conn)
        return conn

    try:
        yield admin, connect, role
    finally:
        for conn in opened:
            conn.close()
        admin.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(role)))
        admin.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_invariants_skip_what_the_app_role_cannot_read(
    two_roles: tuple[psycopg.Connection[Any], Connect, str], sandbox: SandboxInfo
) -> None:
    admin, connect, role = two_roles
    names = {"app": sql.Identifier(sandbox.spec.app_user), "role": sql.Identifier(role)}
    admin.execute(
        sql.SQL(
            """
            create schema private;
            -- the app's own: checked as before (its sequence lags)
            create table mine (id serial primary key, audit_id int);
            insert into mine (id) values (900);
            -- another role's, no grant: skipped, named
            create table audit_log (id serial primary key, note text);
            insert into audit_log (note) values ('a'), ('b');
            alter table audit_log add constraint note_set check (note <> '') not valid;
            alter table mine add constraint mine_audit foreign key (audit_id)
              references audit_log not valid;
            -- SELECT granted, USAGE on a sequence that was used: read and checked
            create table granted (id serial primary key);
            insert into granted default values;
            insert into granted (id) values (50);
            -- SELECT granted, USAGE on a sequence never called: its state is unknown
            create table explicit_ids (id serial primary key);
            insert into explicit_ids (id) values (7);
            -- SELECT on the key column only: enough to check the sequence
            create table some_columns (id serial primary key, secret text);
            insert into some_columns (secret) values ('s');
            -- a schema the app role may not use
            create table private.hidden (id serial primary key);
            insert into private.hidden default values;
            alter table mine owner to {app};
            alter table audit_log owner to {role};
            alter table granted owner to {role};
            alter table explicit_ids owner to {role};
            alter table some_columns owner to {role};
            alter table private.hidden owner to {role};
            alter schema private owner to {role};
            grant select on granted, explicit_ids to {app};
            grant usage on sequence granted_id_seq, explicit_ids_id_seq to {app};
            grant select (id) on some_columns to {app};
            grant select on sequence some_columns_id_seq to {app};
            """
        ).format(**names)
    )
    found = run_invariants(connect())
    seqs = found["sequences ahead of their columns"]
    assert not seqs.passed and seqs.error is None and seqs.outcome == "failed"
    assert seqs.actual == (
        "granted_id_seq next 2 <= max(granted.id) 50; mine_id_seq next 1 <= max(mine.id) 900; "
        "skipped 2 tables and 1 sequence the app role cannot read: "
        "private.hidden, public.audit_log, public.explicit_ids_id_seq"
    )
    nv = found["NOT VALID constraints hold"]
    assert nv.passed and nv.outcome == "passed", nv
    assert (
        nv.actual == "no violating rows; skipped 1 table the app role cannot read: public.audit_log"
    )
    assert "skipped 1 table" in nv.describe()
    assert found["no invalid indexes"].actual == "none"  # nothing skipped: nothing said

    # with the grants, nothing is skipped (and the lag is found)
    admin.execute(
        sql.SQL(
            "grant usage on schema private to {app};"
            "grant select on all tables in schema public, private to {app};"
            "grant select on all sequences in schema public, private to {app}"
        ).format(**names)
    )
    found = run_invariants(connect())
    assert "skipped" not in found["sequences ahead of their columns"].actual
    assert "explicit_ids_id_seq next 1 <= max(explicit_ids.id) 7" in (
        found["sequences ahead of their columns"].actual
    )
    assert found["NOT VALID constraints hold"].actual == "no violating rows"


def test_an_invariant_that_cannot_run_is_an_error_not_a_failure(
    shop: psycopg.Connection[Any],
) -> None:
    """A query error of a built-in invariant: outcome `error` (passed: it fails nothing)
    by default; a failure with `invariants.on_error: fail`."""
    shop.execute(
        """
        create function boom(t text) returns boolean language plpgsql
          as $$ begin raise exception 'boom on %', t; end $$;
        alter table orders add constraint orders_boom check (boom(status)) not valid
        """
    )
    (nv,) = [
        r
        for r in invariants.database_invariants(shop, Invariants(), "10s")
        if r.name == "invariant: NOT VALID constraints hold"
    ]
    assert nv.passed and nv.outcome == "error" and nv.error == "boom on new"
    assert nv.skipped == "ERROR (invariants.on_error: warn, not failing): boom on new"
    assert nv.describe() == (
        "check 'invariant: NOT VALID constraints hold' "
        "ERROR (invariants.on_error: warn, not failing): boom on new"
    )
    data = nv.to_json()
    assert (data["outcome"], data["passed"], data["error"]) == ("error", True, "boom on new")
    run = CheckRun((), "10s")
    run.add([nv])
    assert not run.failed and run.after_values() == {}

    strict = invariants.database_invariants(shop, Invariants(on_error="fail"), "10s")
    (nv,) = [r for r in strict if r.name == "invariant: NOT VALID constraints hold"]
    assert not nv.passed and nv.outcome == "failed" and nv.skipped is None
    assert nv.describe() == "check 'invariant: NOT VALID constraints hold' errored: boom on new"
    # the other invariants ran as usual
    assert all(r.passed and r.outcome == "passed" for r in strict if r is not nv)

    # a statement timeout is an error too
    shop.execute("alter table orders drop constraint orders_boom")
    shop.execute(
        """
        create or replace function boom(t text) returns boolean language sql
          as $$ select pg_sleep(1) is not null $$;
        alter table orders add constraint orders_slow check (boom(status)) not valid
        """
    )
    results = invariants.database_invariants(shop, Invariants(), "200ms")
    (nv,) = [r for r in results if r.name == "invariant: NOT VALID constraints hold"]
    assert nv.outcome == "error" and "statement timeout" in str(nv.error), nv


# --------------------------------------------------------------------------- runs, repo file


NEW_TABLE = "select count(*) from made_by_migration"


def test_check_run_before_and_after(shop: psycopg.Connection[Any]) -> None:
    checks = parse(
        {"name": "pre", "when": "pre", "count": "orders", "expect": {">=": 1}},
        {"name": "orders", "checksum": {"table": "orders"}},
        {"name": "new table", "sql": NEW_TABLE, "expect": {"equals_before": True}},
        {"name": "post plain", "sql": NEW_TABLE, "expect": 0},
    )
    run = CheckRun(checks, "5s")
    run.plan(shop)  # the new table does not exist yet: no baseline, not an error
    assert list(run.no_baseline) == ["new table"]
    assert run.before_state(shop, None) == []
    shop.execute("create table made_by_migration (id int)")
    run.after_state(shop)
    verdict = {r.name: (r.passed, r.skipped) for r in run.results}
    assert verdict == {
        "pre": (True, None),
        "orders": (True, None),
        "new table": (True, 'no baseline (relation "made_by_migration" does not exist)'),
        "post plain": (True, None),
    }
    assert set(run.after_values()) == {"orders"}


def test_a_pre_check_typo_fails_the_plan(shop: psycopg.Connection[Any]) -> None:
    checks = parse({"name": "typo", "when": "pre", "sql": "selct 1", "expect": 1})
    with pytest.raises(PreflightFailed, match="check 'typo' does not plan: syntax error"):
        CheckRun(checks, "5s").plan(shop)
    # a post check is only EXPLAINed after migrate (it may use what the migration makes)
    CheckRun(parse({"name": "later", "sql": "selct 1", "expect": 1}), "5s").plan(shop)


def test_repo_checks(tmp_path: Path) -> None:
    env_checks = parse({"name": "taken", "sql": "select 1", "expect": 1})
    text = b"checks:\n  - {name: orders, checksum: {table: shop_order}}\n"
    (check,) = repo_checks(text, "deploy/checks.yml at v2", env_checks)
    assert (check.kind, check.table, check.source) == (
        "checksum",
        "shop_order",
        "deploy/checks.yml at v2",
    )
    assert repo_checks(None, "x", env_checks) == ()
    bad = (
        b"checks:\n  - {name: taken, sql: select 2, expect: 2}\n"
        b"  - {name: two, sql: select 1, count: t, expect: 1}\n"
        b"  - {name: s, sample: {table: t, compare: {}}}\n"
        b"  - {name: c, checksum: {table: t, columns: [a], except: [b]}, expect: 1}\n"
        b"extra: 1\n"
    )
    with pytest.raises(PreflightFailed) as info:
        repo_checks(bad, "deploy/checks.yml at v9 (abc)", env_checks)
    message = str(info.value)
    assert message.startswith("deploy/checks.yml at v9 (abc): 6 problems: ")
    for part in (
        "deploy/checks.yml.extra: unknown key",
        "checks[taken]: the environment file has a check of the same name",
        "checks[two]: exactly one of sql, count, checksum, sample",
        "checks[s].sample.compare: expected columns, or a mapping",
        "checks[c].expect: a checksum check always compares with before",
        "checks[c].checksum: columns or except, not both",
    ):
        assert part in message, part
    with pytest.raises(PreflightFailed, match=r"deploy/checks.yml: line 2, column 1: invalid YAML"):
        repo_checks(b"checks: [oops\n", "deploy/checks.yml", ())


def test_last_after_state() -> None:
    records = [
        RunRecord.from_json(r)
        for r in (
            {"deploy_id": "a", "outcome": "succeeded", "after": {"checks": {"x": 1}}},
            {"deploy_id": "b", "outcome": "succeeded", "after": {"write_counters": {}}},
            {"deploy_id": "c", "outcome": "failed", "after": {"checks": {"x": 3}}},
        )
    ]
    assert last_after_state(records) == ("a", {"x": 1})
    assert last_after_state([]) == (None, {})
    # a rolled-back deploy no longer describes the database; a restore leaves no baseline
    deploys = [
        RunRecord.from_json(
            {"deploy_id": v, "kind": "upgradedb", "outcome": "succeeded"}
            | {"after": {"checks": {"x": n}}}
        )
        for v, n in (("v1", 1), ("v2", 2))
    ]
    rollback = RunRecord(deploy_id="r", kind="rollback", outcome="succeeded", target="v2")
    assert last_after_state(deploys) == ("v2", {"x": 2})
    assert last_after_state([*deploys, rollback]) == ("v1", {"x": 1})
    failed_rollback = dataclasses.replace(rollback, outcome="failed")
    assert last_after_state([*deploys, failed_rollback]) == ("v2", {"x": 2})
    restore = RunRecord(deploy_id="s", kind="restore", outcome="succeeded")
    assert last_after_state([*deploys, restore]) == (None, {})


def test_each_kind_says_whether_it_holds_while_the_app_writes() -> None:
    """An online deploy runs the checks whose verdict holds under concurrent writes and
    skips those comparing with before, unless `required` (then it is a maintenance deploy)."""
    value, delta, checksum, sample = parse(
        {"name": "v", "sql": "select 0", "expect": 0, "required": True},
        {"name": "d", "count": "shop_order", "expect": {"delta": 0}},
        {"name": "c", "checksum": {"table": "shop_order"}},
        {"name": "s", "sample": {"table": "shop_customer", "compare": ["email"]}},
    )
    assert value.holds_online and value.required
    assert not any(c.holds_online or c.required for c in (delta, checksum, sample))
    errors: list[str] = []
    CheckParser(errors).checks([{"name": "x", "sql": "select 0", "expect": 0, "required": "yes"}])
    assert errors == ["checks[x].required: expected true or false, got 'yes'"]
