"""seed.backup.restore: database-level settings carried to a restored or copied database exactly
(issue 18: list-valued settings were stored back as one quoted element)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sandbox.servers import SandboxInfo
from seed.backup.restore import (
    apply_properties,
    apply_setting,
    comparable_properties,
    database_properties,
    drop_if_exists,
    snapshot_copy,
    split_setting_list,
)
from seed.errors import SeedError

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]

# {db}: the original database, {app}: the sandbox's app role
SETTINGS_SQL = [
    'alter database {db} set search_path to "$user", public',
    "alter database {db} set work_mem = '8MB'",
    "alter database {db} set maintenance_work_mem = 8192",  # SHOW would say 8MB
    "alter database {db} set timezone = 'utc'",  # SHOW would say UTC
    "alter database {db} set datestyle = 'iso, dmy'",  # a list PostgreSQL does not quote
    "alter database {db} set seed_test.flag = 'a, b'",  # a placeholder (extension) setting
    "alter database {db} set default_transaction_read_only = on",
    # set_config refuses a tablespace that does not exist; ALTER ... SET takes it
    "alter database {db} set temp_tablespaces = 'pg_default', 'no such, space'",
    'alter role {app} in database {db} set search_path to "we""ird, one", "$user", public',
    "alter role {app} in database {db} set statement_timeout = '45s'",
]


@pytest.fixture
def pg(pg_admin_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit admin connection to `postgres`, as the restore uses."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        yield conn


def settings_of(pg: psycopg.Connection[Any], dbname: str) -> list[Any]:
    return list(database_properties(pg, dbname)["settings"])


def original(scratch_db: Scratch, sandbox: SandboxInfo, statements: list[str]) -> str:
    name, conn = scratch_db()
    for text in statements:
        conn.execute(
            sql.SQL(text).format(db=sql.Identifier(name), app=sql.Identifier(sandbox.spec.app_user))
        )
    return name


def test_every_kind_of_setting_is_restored_exactly(
    scratch_db: Scratch, sandbox: SandboxInfo, pg: psycopg.Connection[Any]
) -> None:
    statements = list(SETTINGS_SQL)
    superuser = pg.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if superuser and superuser[0]:  # a superuser-only setting, when we are one
        statements.append("alter database {db} set session_replication_role = replica")
    source = original(scratch_db, sandbox, statements)
    props = database_properties(pg, source)
    assert [
        "",
        [
            "DateStyle=iso, dmy",
            "TimeZone=utc",
            "default_transaction_read_only=on",
            "maintenance_work_mem=8192",
            'search_path="$user", public',
            "seed_test.flag=a, b",
            *(["session_replication_role=replica"] if len(statements) > len(SETTINGS_SQL) else []),
            'temp_tablespaces=pg_default, "no such, space"',
            "work_mem=8MB",
        ],
    ] in props["settings"]
    assert [
        sandbox.spec.app_user,
        ['search_path="we""ird, one", "$user", public', "statement_timeout=45s"],
    ] in props["settings"]
    copy, _ = scratch_db()
    apply_properties(pg, copy, props)
    assert settings_of(pg, copy) == props["settings"]
    assert comparable_properties(database_properties(pg, copy)) == comparable_properties(props)
    # and PostgreSQL reads them back as the original's: the schemas as separate elements
    with psycopg.connect(sandbox.conninfo(sandbox.spec.app_user, copy)) as conn:
        row = conn.execute("select current_setting('search_path')").fetchone()
        assert row == ('"we""ird, one", "$user", public',)


@pytest.mark.parametrize(
    "value",
    [
        '"$user", public',
        "''",
        "public",
        '"we""ird, one", public',
        '"UPPER", "sp ace", "$user"',
        "pg_catalog, public",
    ],
)
def test_search_path_round_trips(
    value: str, scratch_db: Scratch, sandbox: SandboxInfo, pg: psycopg.Connection[Any]
) -> None:
    source = original(scratch_db, sandbox, [f"alter database {{db}} set search_path to {value}"])
    props = database_properties(pg, source)
    copy, _ = scratch_db()
    apply_properties(pg, copy, props)
    assert settings_of(pg, copy) == props["settings"]


def test_the_list_form_when_set_config_refuses(
    scratch_db: Scratch, pg: psycopg.Connection[Any]
) -> None:
    """temp_tablespaces naming one that does not exist: set_config refuses the value, so only
    the list form (each element quoted by PostgreSQL) stores it as it was."""
    with pytest.raises(psycopg.errors.UndefinedObject), pg.transaction():
        pg.execute("select set_config('temp_tablespaces', '\"no such, space\"', true)")
    copy, _ = scratch_db()
    item = 'temp_tablespaces=pg_default, "no such, space"'
    apply_setting(pg, copy, "", item)
    assert settings_of(pg, copy) == [["", [item]]]


def test_a_setting_that_cannot_be_made_is_an_error(
    scratch_db: Scratch, pg: psycopg.Connection[Any]
) -> None:
    copy, _ = scratch_db()
    with pytest.raises(SeedError, match="cannot reproduce the setting 'work_mem=8MB' of role"):
        apply_setting(pg, copy, "seed_no_such_role", "work_mem=8MB")


def test_snapshot_copy_carries_the_settings(
    scratch_db: Scratch, sandbox: SandboxInfo, pg: psycopg.Connection[Any]
) -> None:
    """The snapshot has connections disabled when its settings are applied."""
    source = original(scratch_db, sandbox, SETTINGS_SQL)
    props = database_properties(pg, source)
    snap = f"seed_unit_snap_{os.getpid()}"
    try:
        snapshot_copy(pg, source, snap, props, "wal_log")
        assert settings_of(pg, snap) == props["settings"]
    finally:
        drop_if_exists(pg, snap)


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ('"$user", public', ["$user", "public"]),
        ('"we""ird, one" ,  public', ['we"ird, one', "public"]),
        ('""', [""]),
        ("a", ["a"]),
        ("8MB", ["8MB"]),
        ("a b", None),
        ('"open', None),
        ("a,,b", None),
        ("a,", None),
        ("", None),
    ],
)
def test_split_setting_list(value: str, elements: list[str] | None) -> None:
    assert split_setting_list(value) == elements
