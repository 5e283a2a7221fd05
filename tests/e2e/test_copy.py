"""`fab local copy-to stage`: an anonymized copy of the sandbox's database, end to end.

The source is the sandbox at v2 (20,000 customers, 50,000 orders) plus a `newsletter`
table holding some customers' emails again, so that a join on masked emails can be
checked. The target `stage` is a second environment file in the same directory
(`extends: local`) with its own database `shop_stage`, state dir and backup dir, on the
same real PostgreSQL and sshd.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.servers import free_port
from seed.copy import masking
from tests.e2e.conftest import REPO, Deployment
from tests.e2e.personal import private_hits
from tests.e2e.test_rollback import bring_to_v2
from tests.e2e.watch import watching

STAGE_PORT: dict[str, int] = {}
SECRET = "copy-test-key-7d1f0b9e5a"  # noqa: S105 - the masking key under test


def stage_yml(dep: Deployment, port: int) -> str:
    """`stage`: the sandbox again, with its own database, folders and app port."""
    root = dep.root
    return yaml.safe_dump(
        {
            "extends": "local",
            "description": "a staging copy of the sandbox",
            "state_dir": f"{root}/server/var/lib/seed/stage",
            "app": {
                "deploy_to": f"{root}/server/srv/stage",
                "env": {"APP_BIND": f"127.0.0.1:{port}"},
                "health": {"url": f"http://127.0.0.1:{port}/health/", "status": 200},
            },
            "db": {"name": "shop_stage"},
            "backup": {"dir": f"{root}/server/var/backups/stage"},
        }
    )


def rules_with_newsletter(directory: Path) -> Path:
    rules = yaml.safe_load((REPO / "masking" / "shop.yml").read_text())
    rules["tables"]["newsletter"] = {
        "personal": True,
        "columns": {"id": "keep", "email": "fake email", "note": "fake text"},
    }
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture(scope="module")
def copy_env(deployment: Deployment) -> Iterator[tuple[Deployment, Path]]:
    dep = deployment
    bring_to_v2(dep)
    with dep.admin("shop") as conn:
        conn.execute(
            "create table newsletter (id serial primary key, email text not null, note text)"
        )
        conn.execute(
            "insert into newsletter (email, note) select email, 'subscribed by ' || name "
            "from shop_customer where id % 4 = 0 order by id"
        )
    res = dep.fab("local", "backup")
    assert res.returncode == 0, res.stderr
    with dep.admin() as conn:
        conn.execute("drop database if exists shop_stage")
        conn.execute("create database shop_stage owner shop")
    envdir = dep.variant("copy")
    rules = rules_with_newsletter(envdir)
    text = (envdir / "local.yml").read_text()
    data = yaml.safe_load(text)
    data["copy"] = {"rules": str(rules), "secret": "${SEED_MASK_KEY}", "sample": 40}
    (envdir / "local.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    port = STAGE_PORT["port"] = free_port()
    (envdir / "stage.yml").write_text(stage_yml(dep, port))
    # stage runs v2 too, on its own (empty-then-migrated) database and port
    res = fab(dep, envdir, "stage", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stderr
    yield dep, envdir
    subprocess.run(
        ["bash", "current/deploy/appctl", "stop"],
        cwd=dep.root / "server" / "srv" / "stage",
        capture_output=True,
        check=False,
        timeout=60,
    )
    for sub in ("server/var/lib/seed/stage", "server/var/backups/stage", "server/srv/stage"):
        shutil.rmtree(dep.root / sub, ignore_errors=True)


@contextlib.contextmanager
def rules_file(envdir: Path, text: str) -> Iterator[Path]:
    """copy.rules of the source pointed at a file holding `text`, for one block."""
    path = envdir / f"rules-{abs(hash(text))}.yml"
    path.write_text(text)
    data = yaml.safe_load((envdir / "local.yml").read_text())
    good = data["copy"]["rules"]
    data["copy"]["rules"] = str(path)
    (envdir / "local.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield path
    finally:
        data["copy"]["rules"] = good
        (envdir / "local.yml").write_text(yaml.safe_dump(data, sort_keys=False))


def fab(dep: Deployment, envdir: Path, *args: str, **env: str) -> Any:
    return dep.fab(*args, envdir=envdir, extra_env={"SEED_MASK_KEY": SECRET, **env})


def table(dep: Deployment, dbname: str, query: str) -> list[tuple[Any, ...]]:
    with dep.admin(dbname) as conn:
        return [tuple(r) for r in conn.execute(query).fetchall()]


def stage_state(dep: Deployment) -> Any:
    """Everything of shop_stage that a failed copy must leave as it was."""
    with dep.admin("shop_stage") as conn:
        tables = conn.execute(
            "select relname from pg_class where relkind = 'r' "
            "and relnamespace = 'public'::regnamespace order by 1"
        ).fetchall()
        out = {}
        for (name,) in tables:
            out[name] = conn.execute(
                f'select count(*), sum(hashtext(t::text)) from "{name}" t'
            ).fetchone()
    return out


def scratch_databases(dep: Deployment) -> list[str]:
    rows = table(
        dep,
        "postgres",
        "select datname from pg_database where datname ~ '_(mask|copy)_' order by 1",
    )
    return [r[0] for r in rows]


def test_copy_masks_everything_and_keeps_counts_and_keys(copy_env: Any) -> None:
    dep, envdir = copy_env
    res = fab(dep, envdir, "local", "copy-to", "stage", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "copied local" in res.stderr.strip().splitlines()[-1]
    counts = "select relname, n_live_tup from pg_stat_user_tables order by 1"
    source_counts = {
        t: table(dep, "shop", f'select count(*) from "{t}"')[0][0]
        for (t, _) in table(dep, "shop", counts)
    }
    stage_counts = {
        t: table(dep, "shop_stage", f'select count(*) from "{t}"')[0][0]
        for (t, _) in table(dep, "shop_stage", counts)
    }
    assert stage_counts == source_counts and source_counts["shop_customer"] == 20000
    # the foreign key came through, validated, and no order points nowhere
    assert table(
        dep,
        "shop_stage",
        "select count(*) from shop_order o left join shop_customer c on c.id = o.customer_id "
        "where c.id is null",
    ) == [(0,)]
    fks = table(
        dep, "shop_stage", "select count(*) from pg_constraint where contype = 'f' and convalidated"
    )
    assert fks[0][0] >= 1
    # every personal value changed: not one original email or name is left anywhere
    originals = set(r[0] for r in table(dep, "shop", "select email from shop_customer"))
    masked_by_id = dict(table(dep, "shop_stage", "select id, email from shop_customer"))
    masked = list(masked_by_id.values())
    assert not originals & set(masked)
    assert all(
        re.fullmatch(r"[a-z]+\.[a-z]+\.[0-9a-f]{10}@example\.(com|net|org)", e) for e in masked
    )
    src_names = dict(table(dep, "shop", "select id, name from shop_customer"))
    stage_names = dict(table(dep, "shop_stage", "select id, name from shop_customer"))
    unchanged = sum(1 for k, v in src_names.items() if stage_names[k] == v)
    assert unchanged < 20  # fake names come from a list of 1,600; a few may coincide
    # the copy belongs to the target's roles; created_at moved, never by 0 days
    owners = table(
        dep, "shop_stage", "select distinct tableowner from pg_tables where schemaname = 'public'"
    )
    assert owners == [("shop",)]
    src_created = dict(table(dep, "shop", "select id, created_at from shop_customer"))
    shifts = [
        (stage_created - src_created[k]).days
        for k, stage_created in table(dep, "shop_stage", "select id, created_at from shop_customer")
    ]
    assert 0 not in shifts and max(shifts) <= 30 and min(shifts) >= -30
    # the report says what was masked and how
    report = json.loads(sorted((dep.home / "stage" / "reports").glob("*.json"))[-1].read_text())
    masking = report["masking"]
    customer = masking["tables"]["public.shop_customer"]
    assert customer["masked"]["email"] == "fake email (en_US)"
    assert customer["masked"]["created_at"] == "date shift ±1..30 days"
    assert "id" in customer["kept"]
    assert masking["tables"]["public.shop_order"]["masked"] == {}
    assert masking["verification"]["survivors"] == {}
    assert masking["verification"]["row_counts_equal"] is True
    assert masking["samples"]["public.shop_customer.email"]["sampled"] == 40
    assert report["gate"]["live"]["passed"] and report["gate"]["backup"]["passed"]
    assert report["kind"] == "copy" and report["replaced_database"].startswith(
        "shop_stage_replaced_"
    )
    # stage's app was stopped for the swap, started again, and serves the masked rows
    url = f"http://127.0.0.1:{STAGE_PORT['port']}/customers/1/"
    with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 - http, built here
        served = json.loads(page.read())
    assert served["email"] == masked_by_id[1] and served["email"] != "customer1@example.com"
    assert "app stopped on 1 host(s)" in res.stderr
    history = fab(dep, envdir, "stage", "history", "--json")
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)[0]["kind"] == "copy"  # newest first
    status = fab(dep, envdir, "stage", "status")
    assert status.returncode == 0, status.stderr
    assert scratch_databases(dep) == []


def test_same_email_masks_the_same_in_two_tables(copy_env: Any) -> None:
    dep, _ = copy_env
    joined = table(
        dep,
        "shop_stage",
        "select count(*), count(c.id) from newsletter n left join shop_customer c "
        "on c.email = n.email",
    )
    assert joined == [(5000, 5000)]
    # the note held a customer's name: it is fake text now
    notes = table(dep, "shop_stage", "select note from newsletter order by id limit 200")
    assert not any("subscribed by" in n for (n,) in notes)


def test_secret_and_originals_never_appear_in_output(copy_env: Any, tmp_path: Path) -> None:
    """Nor in the server's log with every statement logged: the key reaches the masking
    session by COPY, not as literals (the HMAC pads give the key back). Nor on any
    command line, on the hosts or here."""
    dep, envdir = copy_env
    backups = len(dep.backups())
    log = dep.root / "pg" / "log" / "postgresql.log"
    logged_before = log.stat().st_size
    with dep.admin() as conn:
        conn.execute("alter system set log_min_duration_statement = 0")
        conn.execute("select pg_reload_conf()")
    source = envdir / "local.yml"
    kept = source.read_text()
    try:
        # every command on the hosts and here recorded (tests/e2e/watch.py)
        with watching(dep, tmp_path / "watch", os.environ["PATH"]) as watch:
            data = yaml.safe_load(kept)
            watch.ssh_settings(data)
            source.write_text(yaml.safe_dump(data, sort_keys=False))
            res = fab(
                dep,
                envdir,
                "local",
                "copy-to",
                "stage",
                "--yes",
                "--fresh",
                "--report",
                str(dep.home / "r.json"),
                PATH=watch.path,
            )
            commands = watch.commands()
    finally:
        source.write_text(kept)
        with dep.admin() as conn:
            conn.execute("alter system reset log_min_duration_statement")
            conn.execute("select pg_reload_conf()")
    assert res.returncode == 0, res.stderr
    assert "pg_dump" in commands or "pg_restore" in commands, commands[:300]
    with open(log, "rb") as f:
        f.seek(logged_before)
        logged = f.read().decode(errors="replace")
    key = masking.Key.from_secret(SECRET)
    assert "update " in logged.lower()  # the masking statements were logged
    for part in (key.inner.hex(), key.outer.hex(), SECRET):
        assert part not in logged
        assert part not in commands
    assert len(dep.backups()) == backups + 1  # --fresh: a new backup of the source first
    report = json.loads((dep.home / "r.json").read_text())
    assert report["backup"]["id"] == dep.backups()[-1].removesuffix(".dump")
    texts = [res.stdout, res.stderr, (dep.home / "r.json").read_text()]
    for folder in (dep.home / "stage", dep.root / "server" / "var" / "lib" / "seed" / "stage"):
        texts += [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    state = dep.root / "server" / "var" / "lib" / "seed" / "local" / "jobs"
    texts += [
        p.read_text(errors="replace")
        for p in state.rglob("*")
        if p.is_file() and "dump" not in p.name
    ]
    blob = "\n".join(texts)
    assert SECRET not in blob
    assert not re.search(r"customer\d+@example\.com", blob, re.IGNORECASE)
    some_names = [r[0] for r in table(dep, "shop", "select name from shop_customer where id < 50")]
    assert not [n for n in some_names if n in blob]


def test_copy_files_hold_no_personal_data(copy_env: Any) -> None:
    """After copies (the masking samples searched for in the copy): no report or journal
    record here or on either state host holds a source customer's name or e-mail."""
    dep, _ = copy_env
    state = dep.root / "server" / "var" / "lib" / "seed"
    found = private_hits(dep, [dep.home, state])
    assert not found, found


def test_an_unclassified_column_blocks_the_copy(copy_env: Any) -> None:
    dep, envdir = copy_env
    before = stage_state(dep)
    with dep.admin("shop") as conn:
        conn.execute("alter table shop_customer add column mobile text")
    try:
        res = fab(dep, envdir, "local", "copy-to", "stage", "--yes")
        assert res.returncode == 4, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert "public.shop_customer.mobile (text)" in last and "unclassified" in last
        assert stage_state(dep) == before and scratch_databases(dep) == []
        check = fab(dep, envdir, "local", "copy-rules", "--check")
        assert check.returncode == 7, check.stderr
        assert "public.shop_customer.mobile" in check.stderr
        assert "mobile: keep" in check.stderr  # the snippet to decide on
        plain = fab(dep, envdir, "local", "copy-rules")
        assert plain.returncode == 0, plain.stderr
    finally:
        with dep.admin("shop") as conn:
            conn.execute("alter table shop_customer drop column mobile")
    res = fab(dep, envdir, "local", "copy-rules", "--check")
    assert res.returncode == 0, res.stderr


def test_a_failed_copy_leaves_the_target_untouched(copy_env: Any) -> None:
    dep, envdir = copy_env
    before = stage_state(dep)
    # a rule the data cannot take: the masking UPDATE fails on the source side
    rules = yaml.safe_load((envdir / "rules.yml").read_text())
    rules["tables"]["newsletter"]["columns"]["note"] = {"fixed": "x" * 3}
    rules["tables"]["shop_order"] = {
        "personal": True,
        "columns": {
            "id": "keep",
            "customer_id": "keep",
            "total": {"fixed": "not a number"},
            "status": "keep",
            "placed_at": "keep",
        },
    }
    with rules_file(envdir, yaml.safe_dump(rules)):
        res = fab(dep, envdir, "local", "copy-to", "stage", "--yes")
    assert res.returncode == 5, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "FAILED" in last and "stage was not touched" in last
    assert stage_state(dep) == before and scratch_databases(dep) == []


def test_an_original_kept_elsewhere_is_found_and_the_copy_refused(copy_env: Any) -> None:
    """newsletter.email kept while the customers' emails are masked: the sampled
    originals are found there, so the copy fails and the target keeps its data."""
    dep, envdir = copy_env
    before = stage_state(dep)
    rules = yaml.safe_load((envdir / "rules.yml").read_text())
    rules["tables"]["newsletter"]["columns"]["email"] = "keep"
    with rules_file(envdir, yaml.safe_dump(rules)):
        res = fab(dep, envdir, "local", "copy-to", "stage", "--yes")
    assert res.returncode == 5, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "sampled original values survive in: public.newsletter.email" in last
    assert "@" not in last  # counts, never the values
    assert stage_state(dep) == before and scratch_databases(dep) == []


def test_a_killed_copy_leaves_the_target_untouched_and_the_next_one_cleans_up(
    copy_env: Any,
) -> None:
    dep, envdir = copy_env
    before = stage_state(dep)
    res = fab(dep, envdir, "local", "copy-to", "stage", "--yes", SEED_FAULT="kill@before swap")
    assert res.returncode != 0
    assert stage_state(dep) == before
    assert [n for n in scratch_databases(dep) if n.startswith("shop_stage_copy_")]
    res = fab(dep, envdir, "local", "copy-to", "stage", "--yes")
    assert res.returncode == 0, res.stderr
    assert "dead copy run(s)" in res.stderr
    assert scratch_databases(dep) == []


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("copy-to", "nowhere", "--yes"), "nowhere.yml: no such environment file"),
        (("copy-to", "local", "--yes"), "the target is the source"),
        (("copy-to", "stage"), "needs confirmation; pass --yes"),
        (("copy-to", ""), "name the target environment"),
    ],
)
def test_bad_copy_commands_exit_2_with_one_line(
    copy_env: Any, args: tuple[str, ...], expect: str
) -> None:
    dep, envdir = copy_env
    res = fab(dep, envdir, "local", *args)
    assert res.returncode == 2, res.stderr
    assert expect in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_broken_rules_file_names_file_and_line(copy_env: Any) -> None:
    dep, envdir = copy_env
    text = "tables:\n  shop_customer:\n    personal: true\n    columns:\n      email: fake emial\n"
    with rules_file(envdir, text) as broken:
        res = fab(dep, envdir, "local", "copy-to", "stage", "--yes")
    assert res.returncode == 2, res.stderr
    assert f"{broken}: line 5: tables.shop_customer.columns.email: fake: expected one of" in (
        res.stderr
    )


def test_a_target_that_is_the_source_under_another_name_is_refused(copy_env: Any) -> None:
    """`alias` reaches the source's own database as localhost instead of 127.0.0.1: the
    host strings differ, the cluster (its system identifier) and the database do not.
    Exit 2, one line, nothing touched."""
    dep, envdir = copy_env
    sandbox = dep.sandbox
    db = {
        "host": "localhost",  # the pgpass lines name 127.0.0.1: the passwords given here
        "password": sandbox.password(sandbox.spec.app_user),
        "admin_password": sandbox.password(sandbox.spec.admin_user),
    }
    (envdir / "alias.yml").write_text(
        yaml.safe_dump({"extends": "local", "description": "the source, by another name", "db": db})
    )
    try:
        before = dep.figures()
        res = fab(dep, envdir, "local", "copy-to", "alias", "--yes")
        assert res.returncode == 2, res.stdout + res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert "copy-to alias: localhost:" in last and "is the same PostgreSQL cluster as" in last
        assert last.endswith("both name database shop: the copy would overwrite the source")
        assert dep.figures() == before
    finally:
        (envdir / "alias.yml").unlink()
