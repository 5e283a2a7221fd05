"""Trust (issue 22): Seed's own correctness where a real team's setup differs from ours —
another program calling itself `seed-…`, a restore interrupted at its swap."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from seed.journal.store import lock_key_sql
from tests.e2e.conftest import FAB, REPO, Deployment


@pytest.fixture(scope="module")
def deployed(deployment: Deployment) -> Deployment:
    """Some release deployed (whichever the previous module left; v1 when none): every
    test here takes the backup it restores, none needs a particular release."""
    if deployment.current() is None:
        deployment.reset()
        deployment.deploy("v1")
    return deployment


def test_writes_are_stopped_also_for_app_sessions_that_call_themselves_seed(
    deployed: Deployment,
) -> None:
    """A writer of the app role named `seed-worker` is the app's like any other: the drain
    before a restore (as before a maintenance deploy) ends it; only the run's own
    sessions are spared."""
    taken = deployed.fab("local", "backup")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    impostor = psycopg.connect(
        deployed.sandbox.app_conninfo(), application_name="seed-worker", autocommit=True
    )
    try:
        res = deployed.fab("local", "restore", "--yes")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "1 session(s) ended" in res.stderr, res.stderr
        with pytest.raises(psycopg.OperationalError):
            impostor.execute("select 1")
    finally:
        impostor.close()


def restore_killed_at(dep: Deployment, point: str) -> None:
    """`restore` of a backup of v1's database, killed (-9) at `point`."""
    taken = dep.fab("local", "backup")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    res = dep.fab("local", "restore", "--yes", extra_env={"SEED_FAULT": f"kill@{point}"})
    assert res.returncode == -9, res.stdout + res.stderr


def scratch(dep: Deployment, kind: str) -> list[str]:
    with dep.admin() as conn:
        rows = conn.execute(
            "select datname from pg_database where datname like %s", (f"shop_{kind}_%",)
        ).fetchall()
    return [r[0] for r in rows]


def test_a_restore_killed_after_its_swap_is_recovered_as_restored(deployed: Deployment) -> None:
    """The swap happened, then a job outside the app wrote a row: recovery reads the
    catalog (the old database renamed to shop_replaced_…) and says the backup is live,
    written since — not "the old database" because the figures differ."""
    replaced = scratch(deployed, "replaced")
    restore_killed_at(deployed, "after database")
    assert len(scratch(deployed, "replaced")) == len(replaced) + 1
    with deployed.admin("shop") as conn:
        conn.execute("insert into django_migrations (app, name, applied) values ('x', 'y', now())")
    res = deployed.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "database is backup " in res.stdout + res.stderr
    assert "restored (the old database is kept as shop_replaced_" in res.stdout + res.stderr
    assert "written since the swap" in res.stdout + res.stderr
    with deployed.admin("shop") as conn:
        conn.execute("delete from django_migrations where app = 'x'")


def test_a_restore_killed_before_its_swap_drops_its_half_copy(deployed: Deployment) -> None:
    restore_killed_at(deployed, "restore job started")
    res = deployed.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "database is the old database (the restore died before its swap" in (
        res.stdout + res.stderr
    )
    assert scratch(deployed, "restore") == []


def test_a_restore_that_lost_its_lock_does_not_swap(deployed: Deployment) -> None:
    """While pg_restore works, the lock's session dies and another run takes the lock: the
    restore must not swap its copy in (it used to, checking the lock only between steps).
    It stops, the live database untouched, saying the lock was lost."""
    taken = deployed.fab("local", "backup")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    before = deployed.figures()
    replaced = scratch(deployed, "replaced")
    proc = subprocess.Popen(
        [FAB, "local", "restore", "--yes"], cwd=REPO, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=deployed.process_env(extra_env={"SEED_FAULT": "stall@restore job started"}),
    )  # fmt: skip
    other = deployed.admin("shop")
    try:
        holder = None
        deadline = time.monotonic() + 60
        while holder is None and time.monotonic() < deadline:
            row = other.execute(
                "select l.pid from pg_locks l join pg_stat_activity a using (pid) "
                "where l.locktype = 'advisory' and l.granted "
                "and a.application_name like 'seed-local-%'"
            ).fetchone()
            if row and scratch(deployed, "restore"):  # the lock held, the restore under way
                holder = row[0]
            time.sleep(0.1)
        assert holder is not None, "the restore never started"
        other.execute("select pg_terminate_backend(%s)", (holder,))
        with deployed.admin() as taker:  # another run takes the lock (in `postgres`)
            taker.execute(f"select pg_advisory_lock({lock_key_sql()})", ("shop",))
            out, err = proc.communicate(timeout=300)
    finally:
        other.close()
        proc.kill()
    assert proc.returncode not in (0, -9), out + err
    assert "lost the lock of local" in err, out + err
    assert scratch(deployed, "replaced") == replaced  # no swap
    assert scratch(deployed, "restore") == []  # its copy dropped
    assert deployed.figures() == before


NAMELESS = ["env", "-i", "PATH=/usr/bin:/bin", "setpriv", "--reuid", "54321", "--regid", "54321",
            "--clear-groups"]  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root")
def test_a_uid_without_a_passwd_entry_gets_one_line() -> None:
    """A container with an arbitrary uid, no passwd entry, no USER or HOME: the environment
    without ssh.user says to set it (exit 2, one line); the records name `uid54321@host`;
    no ~/.pgpass is looked for where there is no home."""
    res = subprocess.run(
        [*NAMELESS, FAB, "local", "config"], cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert (
        res.stderr.strip().endswith(
            "ssh.user: not set, and the local uid 54321 has no user name (no passwd entry, as in "
            "a container): set ssh.user"
        )
        and len(res.stderr.strip().splitlines()) == 1
    ), res.stderr
    code = (
        "from seed.run.report import who; from seed.config.environment import lookup_pgpass; "
        "print(who(), lookup_pgpass('h', 5432, 'd', 'u'))"
    )
    res = subprocess.run(
        [*NAMELESS, sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"uid54321@{socket.gethostname()} None\n"


def test_files_not_in_utf8_are_one_line_naming_file_and_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    """An environment file, a masking rules file and an import mapping saved as Latin-1
    by an editor: exit 2, one line naming the file, the line and what to do — not an
    internal error."""
    latin1 = "# Café du Nord: the shop's first customer\n".encode("latin-1")
    envdir = tmp_path / "envs"
    envdir.mkdir()
    local = (deployment.variant("utf8") / "local.yml").read_bytes()
    (envdir / "local.yml").write_bytes(local + latin1)
    lines = local.count(b"\n") + 1
    res = deployment.fab("local", "config", envdir=envdir)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip() == (
        f"seed: {envdir / 'local.yml'}: line {lines}: not UTF-8 text (byte 0xE9); save the "
        "file as UTF-8"
    )

    rules = tmp_path / "rules.yml"
    rules.write_bytes(latin1 + (REPO / "masking" / "shop.yml").read_bytes())
    with_rules = deployment.variant("utf8-rules", {"copy.rules": str(rules)})
    res = deployment.fab("local", "copy-rules", "--check", envdir=with_rules)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{rules}: line 1: not UTF-8 text (byte 0xE9)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr

    mapping = tmp_path / "mapping.yml"
    mapping.write_bytes(latin1 + b"table: shop_customer\n")
    source = tmp_path / "export.csv"
    source.write_text("email;name\na@example.com;A\n")
    res = deployment.fab(
        "local", "import-legacy", "--source", str(source), "--mapping", str(mapping),
        "--dry-run",
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{mapping}: line 1: not UTF-8 text (byte 0xE9)" in res.stderr, res.stderr


def test_without_git_a_deploy_is_one_line_and_changes_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    before = (deployment.figures(), deployment.current(), deployment.releases())
    res = deployment.fab("local", "upgradedb", "--ref", "v2", extra_env={"PATH": str(tmp_path)})
    assert res.returncode == 4, res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "seed: git is not installed on this machine (Seed builds releases from the app's "
        "repository with it): install git"
    )
    assert (deployment.figures(), deployment.current(), deployment.releases()) == before
