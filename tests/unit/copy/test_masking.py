"""Masking rules (seed/copy/masking.py): parsing, the schema-drift gate, and the SQL run on a
real PostgreSQL (scratch databases of the session sandbox)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from seed.copy import masking
from seed.copy.fakedata import LOCALES
from seed.errors import ConfigError

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]

RULES = """
locale: en_US
tables:
  people:
    personal: true
    columns:
      id: keep
      name: fake name
      email: fake email
      phone: fake phone
      street: fake address
      bio: fake text
      code: {hash: {length: 12}}
      born: {date_shift: 10}
      nickname: null
      secret: {fixed: "redacted"}
      city: {fake: city, locale: de_DE}
  contacts:
    personal: true
    columns:
      id: keep
      email: fake email
      login: fake username
  sessions: truncate
  orders: {personal: false}
"""


def load(tmp_path: Path, text: str) -> masking.Rules:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    return masking.load_rules(path)


def make_tables(conn: psycopg.Connection[Any], rows: int = 2000) -> None:
    conn.execute(
        """
        create table people (
          id int primary key, name text, email varchar(60) not null, phone text,
          street text, bio text, code text, born date, nickname text,
          secret text not null, city varchar(12));
        insert into people
          select i, 'Person ' || i, 'p' || i || '@corp.test', '+1 212 555 ' || i,
                 i || ' Real Road', repeat('word ', i % 40), 'C' || i,
                 date '1980-01-01' + i, case when i % 3 = 0 then 'nick' || i end,
                 's' || i, 'Town' || (i % 50)
          from generate_series(1, %s) i;
        create table contacts (id int primary key, email text, login text);
        insert into contacts select i, 'p' || i || '@corp.test', 'user' || i
          from generate_series(1, %s, 2) i;
        create table sessions (id int, data text);
        insert into sessions select i, 'p' || i || '@corp.test' from generate_series(1, 10) i;
        create table orders (id int, who text);
        insert into orders values (1, 'order one');
        """.replace("%s", str(rows))
    )


def mask_all(conn: psycopg.Connection[Any], rules: masking.Rules, key: masking.Key) -> None:
    tables = masking.catalog(conn)
    masking.load_key(conn, key)
    for table, columns in tables.items():
        statement = masking.update_sql(table, rules.tables[table], columns)
        if statement is not None:
            conn.execute(statement)


def test_the_sql_hmac_is_rfc_2104_hmac_sha256(scratch_db: Scratch) -> None:
    _, conn = scratch_db()
    for secret in ("k", "a much longer key " * 8):  # short and > 64 bytes (hashed first)
        key = masking.Key.from_secret(secret)
        masking.load_key(conn, key)
        for value in ("customer7@example.com", "Zoë O'Brien", ""):
            got = conn.execute(
                sql.SQL("select {}").format(masking.hmac_sql(sql.Literal(value)))
            ).fetchone()
            assert got is not None
            want = hmac.new(secret.encode(), value.encode(), hashlib.sha256).digest()
            assert bytes(got[0]) == want


def test_masking_changes_every_rule_column_and_keeps_the_rest(
    scratch_db: Scratch, tmp_path: Path
) -> None:
    _, conn = scratch_db()
    make_tables(conn)
    rules = load(tmp_path, RULES)
    before = {r[0]: r for r in conn.execute("select * from people").fetchall()}
    mask_all(conn, rules, masking.Key.from_secret("test-secret"))
    after = {r[0]: r for r in conn.execute("select * from people").fetchall()}
    assert set(after) == set(before)
    cols = [c.name for c in masking.catalog(conn)["public.people"]]
    for pid, row in after.items():
        old = dict(zip(cols, before[pid], strict=True))
        new = dict(zip(cols, row, strict=True))
        for col in ("name", "email", "phone", "street", "code", "born"):
            assert new[col] != old[col], (col, pid)
        assert new["nickname"] is None and new["secret"] == "redacted"  # noqa: S105 - a column
        assert new["city"] in LOCALES["de_DE"].cities or len(new["city"]) == 12
        assert len(new["email"]) <= 60 and new["email"].endswith(
            ("@example.com", "@example.net", "@example.org")
        )
        assert len(new["code"]) == 12 and int(new["code"], 16) >= 0
        assert 1 <= abs((new["born"] - old["born"]).days) <= 10
        first, last = new["name"].split(" ", 1)
        assert first in LOCALES["en_US"].first and last in LOCALES["en_US"].last
        # text keeps its rough length; an empty string stays empty
        assert (new["bio"] == "") == (old["bio"] == "")
    assert conn.execute("select count(*) from sessions").fetchone() == (0,)
    assert conn.execute("select who from orders").fetchone() == ("order one",)


def test_same_input_same_output_across_tables_and_another_key_differs(
    scratch_db: Scratch, tmp_path: Path
) -> None:
    rules = load(tmp_path, RULES)
    _, one = scratch_db()
    make_tables(one, rows=200)
    mask_all(one, rules, masking.Key.from_secret("key one"))
    joined = one.execute(
        "select count(*), count(p.id) from contacts c left join people p on p.email = c.email"
    ).fetchone()
    assert joined == (100, 100)
    _, two = scratch_db()
    make_tables(two, rows=200)
    mask_all(two, rules, masking.Key.from_secret("key two"))
    a = [r[0] for r in one.execute("select email from people order by id").fetchall()]
    b = [r[0] for r in two.execute("select email from people order by id").fetchall()]
    assert sum(x == y for x, y in zip(a, b, strict=True)) < 5
    assert len(set(a)) == len(a)  # 40 bits of hash in every fake email: no collisions here


def test_gate_lists_unclassified_tables_and_columns_and_misfits(
    scratch_db: Scratch, tmp_path: Path
) -> None:
    _, conn = scratch_db()
    make_tables(conn, rows=10)
    conn.execute("alter table people add column mobile text")
    conn.execute("create table newcomer (id int)")
    conn.execute("alter table contacts alter column email set not null")
    text = RULES.replace("login: fake username", "login: fake username\n      ghost: keep")
    text = text.replace("      email: fake email\n      login", "      email: null\n      login")
    gate = masking.gate(load(tmp_path, text), masking.catalog(conn))
    assert gate.unclassified_tables == ["public.newcomer"]
    assert gate.unclassified_columns == ["public.people.mobile (text)"]
    assert gate.misfits == [
        "public.contacts.email: null on a NOT NULL column (use fixed, fake or hash)"
    ]
    assert gate.stale == ["public.contacts.ghost"]
    assert len(gate.blocking) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tables: {t: {personal: maybe}}", "line 1: tables.t: personal: required, true or false"),
        ("tables:\n  t:\n    personal: true\n    columns: {a: fake fax}", "fake: expected one of"),
        ("tables:\n  t:\n    personal: true\n    columns: {a: {date_shift: 0}}", "1..36500"),
        ("tables:\n  t:\n    personal: false\n    columns: {a: hash}", "says personal: false"),
        ("locale: xx_XX\ntables: {t: truncate}", "unknown locale 'xx_XX'"),
        ("tables: {t: truncate}\nextra: 1", "line 2: extra: unknown key"),
        ("tables: [", "line"),
    ],
)
def test_bad_rules_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert str(err.value).startswith(str(tmp_path / "rules.yml"))
    assert message in str(err.value)


def test_fake_vocabulary_samples_are_set_aside(tmp_path: Path) -> None:
    rules = load(tmp_path, RULES)
    name_rule = rules.tables["public.people"].columns["name"]
    kept, aside = masking.searchable(["James Smith", "Real Person"], name_rule)
    assert kept == ["Real Person"] and aside == 1


def test_survivors_finds_an_original_anywhere(scratch_db: Scratch) -> None:
    _, conn = scratch_db()
    conn.execute("create table a (v text); create table b (w varchar(40), n int)")
    conn.execute("insert into a values ('masked-1'), ('masked-2')")
    conn.execute("insert into b values ('left@over.test', 1), ('Al', 2)")
    tables = masking.catalog(conn)
    samples = {("public.a", "v"): ["left@over.test", "Al", "gone@away.test"]}
    # 'Al' is short: searched in a.v only, so b.w's 'Al' is not counted
    assert masking.survivors(conn, samples, tables) == {"public.b.w": 1}


def test_orphans_counted_from_definitions_also_for_not_valid_keys(scratch_db: Scratch) -> None:
    from seed.commands.copy_to import foreign_keys, orphans

    _, conn = scratch_db()
    conn.execute(
        """
        create table parent (a int, b int, primary key (a, b));
        create table child (id int, pa int, pb int);
        insert into parent values (1, 1), (2, 2);
        insert into child values (1, 1, 1), (2, 2, 9), (3, null, 9), (4, 3, 3);
        alter table child add constraint child_parent_fk foreign key (pa, pb)
          references parent (a, b) not valid;
        """
    )
    keys = foreign_keys(conn)
    assert [(k.name, k.keys, k.refs) for k in keys] == [
        ("child_parent_fk on child", ("pa", "pb"), ("a", "b"))
    ]
    # (2, 9) and (3, 3) point nowhere; (NULL, 9) never points anywhere (MATCH SIMPLE)
    assert orphans(conn, keys) == {"child_parent_fk on child": 2}
    conn.execute("drop table child")
    assert orphans(conn, keys) == {}  # a key the copied database does not have is skipped
