"""A deploy_to path and a database name with spaces and quotes: every command Seed
builds (shell, SQL, libpq files, pg_dump/pg_restore, scratch database names) must
quote them. Deploy, a failing deploy's automatic rollback, and a manual rollback."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from tests.e2e.conftest import Deployment

DBNAME = 'shop "main" it\'s'


@pytest.fixture(scope="module")
def odd(deployment: Deployment) -> Iterator[tuple[Deployment, Path, Path]]:
    deployment.reset()
    deploy_to = deployment.root / "server" / "srv it's" / 'the "shop" app'
    with deployment.admin() as conn:
        conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(DBNAME)))
        conn.execute(sql.SQL("create database {} owner shop").format(sql.Identifier(DBNAME)))
    envdir = deployment.variant(
        "odd-names",
        {
            "app.deploy_to": str(deploy_to),
            "db.name": DBNAME,
            "backup.dir": str(deployment.root / "server" / "back ups" / "it's"),
        },
    )
    yield deployment, deploy_to, envdir
    with deployment.admin() as conn:
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname like %s",
            ('shop "main"%',),
        )
        for (name,) in conn.execute(
            "select datname from pg_database where datname like %s", ('shop "main"%',)
        ).fetchall():
            conn.execute(sql.SQL("drop database {}").format(sql.Identifier(name)))
    if (deploy_to / "current").exists():
        subprocess.run(
            ["bash", "current/deploy/appctl", "stop"],
            cwd=deploy_to,
            capture_output=True,
            check=False,
        )


def count(dep: Deployment, query: str) -> int:
    with dep.admin(DBNAME) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])


def test_deploy_fail_and_roll_back_with_odd_names(odd: tuple[Deployment, Path, Path]) -> None:
    dep, deploy_to, envdir = odd
    for ref in ("v1", "v2"):
        res = dep.fab("local", "upgradedb", "--ref", ref, envdir=envdir)
        assert res.returncode == 0, res.stdout + res.stderr
    assert (deploy_to / "current" / "VERSION").read_text().strip() == "v2"
    assert count(dep, "select count(*) from shop_customer") == 20000
    assert dep.http("/version/") == (200, "v2")

    # a deploy that deletes rows: caught, restored (scratch names derive from the odd name)
    res = dep.fab("local", "upgradedb", "--ref", "bad-data", envdir=envdir)
    assert res.returncode == 5, res.stdout + res.stderr
    assert count(dep, "select count(*) from shop_customer") == 20000
    with dep.admin() as conn:
        names = [r[0] for r in conn.execute("select datname from pg_database").fetchall()]
    assert DBNAME in names and any(n.startswith('shop "main"') and n != DBNAME for n in names)

    # and a manual rollback of v2 back to v1
    res = dep.fab("local", "rollback", "--discard-writes", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (deploy_to / "current" / "VERSION").read_text().strip() == "v1"
    assert count(dep, "select count(*) from django_migrations where app = 'shop'") == 2
    assert dep.http("/version/") == (200, "v1")
    # validate compares with v1's after-state now (v2 was rolled back)
    res = dep.fab("local", "validate", "--json", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
