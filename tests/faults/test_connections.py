"""Faults outside `fab`: SSH connections cut, PostgreSQL restarted, two deploys at once,
the tunnel cut under a running migrate, the admin password changed mid-deploy, a full
disk. Each ends in exactly the old or exactly the new state, with the lock free.

Connections are cut for real: every per-connection sshd process of the sandbox's sshd
is SIGKILLed (the remote jobs, detached in their own sessions, live on). PostgreSQL is
restarted for real with `pg_ctl restart -m fast` (every session terminated).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import FAB, REPO, Deployment
from tests.e2e.test_rollback import whole_state
from tests.faults.matrix import MATRIX, Row
from tests.faults.test_kill import lock_is_free, refused_until_recovered


def start_fab(
    dep: Deployment, *args: str, envdir: Path | None = None, **extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FAB, *args],
        cwd=REPO,
        env=dep.process_env(envdir, extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def wait_for_job(
    dep: Deployment,
    name: str,
    since: float,
    proc: subprocess.Popen[str] | None = None,
    timeout: float = 120,
) -> None:
    """Until a remote job `name` (backup, migrate, restore) started after `since` runs (or
    `proc`, the fab that should start it, ended: then its output is the failure)."""
    deadline = time.monotonic() + timeout
    pattern = str(dep.state_dir / "jobs" / "*" / f"{name}*" / "pid")
    while time.monotonic() < deadline:
        for pid in glob.glob(pattern):
            if os.path.getmtime(pid) >= since:
                return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"fab ended before a {name} job started:\n{proc.communicate()[0]}")
        time.sleep(0.05)
    raise AssertionError(f"no {name} job started")


def cut_ssh(dep: Deployment) -> None:
    """Every SSH connection to the sandbox dies at once (the listening sshd stays): every
    sshd process below the listening one is SIGKILLed — as root the per-connection
    monitor and its session process, as a normal user (no privilege separation) the
    connection's sshd and the one serving each channel. Detached jobs live on."""
    master = int(dep.sandbox.sshd_pidfile.read_text().strip())
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        names[int(entry)] = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])

    def below_master(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == master:
                return True
        return False

    for pid, name in names.items():
        if name == "sshd" and pid != master and below_master(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def restart_postgres(dep: Deployment) -> None:
    sandbox = dep.sandbox
    cmd = [
        str(sandbox.pg_bindir / "pg_ctl"),
        "-D",
        str(sandbox.pg_data),
        "-l",
        str(sandbox.pg_log),
        "-m",
        "fast",
        "-w",
        "restart",
    ]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def back_to(dep: Deployment, before: dict[str, Any]) -> None:
    """Undo a deploy that completed, and check that is exactly where we started."""
    res = dep.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert whole_state(dep) == before
    assert lock_is_free(dep)


@pytest.fixture
def bulk(at_v2: Deployment) -> Iterator[Deployment]:
    """A 1M-row table, so that dumps and restores take seconds, not milliseconds."""
    with at_v2.admin("shop") as conn:
        conn.execute(
            "create table bulk as select g as id, md5(g::text) as payload "
            "from generate_series(1, 1000000) g"
        )
        conn.execute("alter table bulk add primary key (id)")
        conn.execute("alter table bulk owner to shop")
    try:
        yield at_v2
    finally:
        with at_v2.admin("shop") as conn:
            conn.execute("drop table if exists bulk")


def test_ssh_dropped_during_migrate_reconnects_and_finishes(at_v2: Deployment) -> None:
    before = whole_state(at_v2)
    since = time.time()
    proc = start_fab(at_v2, "local", "upgradedb", "--ref", "slow")
    wait_for_job(at_v2, "migrate", since, proc)
    started = time.monotonic()
    cut_ssh(at_v2)
    code, out = finish(proc)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert "connection lost: reconnecting" in out
    assert at_v2.http("/version/") == (200, "slow")
    assert at_v2.scalar("select count(*) from django_migrations where name = '0005_slow_backfill'")
    assert lock_is_free(at_v2)
    MATRIX.append(Row("ssh dropped during migrate", "new state, checks passed", elapsed, "itself"))
    back_to(at_v2, before)


def test_ssh_dropped_during_backup_reconnects_and_finishes(at_v2: Deployment) -> None:
    before = whole_state(at_v2)
    since = time.time()
    proc = start_fab(
        at_v2,
        "local",
        "upgradedb",
        "--ref",
        "v3",
        SEED_FAULT="stall@backup job started",
        SEED_FAULT_SECONDS="2",
    )
    wait_for_job(at_v2, "backup", since, proc)
    started = time.monotonic()
    cut_ssh(at_v2)
    code, out = finish(proc)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert "connection lost: reconnecting" in out
    assert at_v2.http("/version/") == (200, "v3")
    MATRIX.append(Row("ssh dropped during backup", "new state, checks passed", elapsed, "itself"))
    back_to(at_v2, before)


def test_ssh_dropped_during_restore_reconnects_and_finishes(at_v2: Deployment) -> None:
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "v3")
    assert res.returncode == 0, res.stderr
    since = time.time()
    proc = start_fab(
        at_v2,
        "local",
        "rollback",
        SEED_FAULT="stall@restore job started",
        SEED_FAULT_SECONDS="2",
    )
    wait_for_job(at_v2, "restore", since, proc)
    started = time.monotonic()
    cut_ssh(at_v2)
    code, out = finish(proc)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert "connection lost: reconnecting" in out
    assert whole_state(at_v2) == before
    assert lock_is_free(at_v2)
    MATRIX.append(Row("ssh dropped during restore", "old state, verified", elapsed, "itself"))


def test_postgres_restarted_during_migrate_rolls_back(at_v2: Deployment) -> None:
    before = whole_state(at_v2)
    since = time.time()
    proc = start_fab(at_v2, "local", "upgradedb", "--ref", "slow")
    wait_for_job(at_v2, "migrate", since, proc)
    time.sleep(0.5)  # inside the migration's transaction (pg_sleep)
    started = time.monotonic()
    restart_postgres(at_v2)
    code, out = finish(proc)
    elapsed = time.monotonic() - started
    assert code == 5, out
    assert "rolled back; verified identical" in out
    assert whole_state(at_v2) == before
    assert lock_is_free(at_v2)
    MATRIX.append(
        Row("postgres restarted during migrate", "old state, verified", elapsed, "itself")
    )


def test_postgres_restarted_during_restore_retries_it(bulk: Deployment) -> None:
    before = whole_state(bulk)
    res = bulk.fab("local", "upgradedb", "--ref", "v3")
    assert res.returncode == 0, res.stderr
    since = time.time()
    proc = start_fab(bulk, "local", "rollback")
    wait_for_job(bulk, "restore", since, proc)
    time.sleep(0.5)  # pg_restore is loading the 1M rows
    started = time.monotonic()
    restart_postgres(bulk)
    code, out = finish(proc)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert whole_state(bulk) == before
    assert lock_is_free(bulk)
    MATRIX.append(
        Row("postgres restarted during restore", "old state, verified", elapsed, "itself")
    )


def test_two_deploys_started_together(at_v2: Deployment) -> None:
    before = whole_state(at_v2)
    started = time.monotonic()
    procs = [start_fab(at_v2, "local", "upgradedb", "--ref", "v3") for _ in range(2)]
    results = sorted(finish(p) for p in procs)
    elapsed = time.monotonic() - started
    codes = [code for code, _ in results]
    assert codes == [0, 3], results
    # the refused one names the holder: who, host, pid, command and since when
    assert re.search(
        r"is locked by deploy \S+ \(\S+ on \S+, pid \d+, "
        r"'fab local upgradedb --ref v3'\) since \d{4}-",
        results[1][1],
    ), results[1][1]
    assert at_v2.http("/version/") == (200, "v3")
    MATRIX.append(
        Row("two deploys started together", "new state (one ran, one exit 3)", elapsed, "itself")
    )
    back_to(at_v2, before)


def test_tunnel_cut_under_a_running_migrate_still_refuses_a_second_deploy(
    at_v2: Deployment,
) -> None:
    """The first deploy's lock session dies with the tunnel and the first deploy is frozen
    (SIGSTOP) before it can take the lock back: the advisory lock is free, but its migrate
    job runs, so a second deploy must still exit 3. Thawed, the first one finishes."""
    before = whole_state(at_v2)
    since = time.time()
    # long enough to outlast the cut and the second deploy's start on a busy machine
    longer = at_v2.variant("slower", {"app.env.SHOP_SLOW_SECONDS": "25"})
    first = start_fab(at_v2, "local", "upgradedb", "--ref", "slow", envdir=longer)
    wait_for_job(at_v2, "migrate", since, first)
    os.kill(first.pid, 19)  # SIGSTOP
    started = time.monotonic()
    try:
        cut_ssh(at_v2)
        deadline = time.monotonic() + 20
        while not lock_is_free_of_sessions(at_v2) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = at_v2.fab("local", "upgradedb", "--ref", "v3")
        assert second.returncode == 3, second.stdout + second.stderr
        assert "remote job migrate-1" in second.stderr and "still runs" in second.stderr
    finally:
        os.kill(first.pid, 18)  # SIGCONT
    code, out = finish(first)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert at_v2.http("/version/") == (200, "slow")
    MATRIX.append(
        Row("tunnel cut while migrate runs", "new state; 2nd deploy exit 3", elapsed, "itself")
    )
    back_to(at_v2, before)


def lock_is_free_of_sessions(dep: Deployment) -> bool:
    held = dep.scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and granted", "postgres"
    )
    return held == 0


def test_admin_password_changed_after_preflight(at_v2: Deployment) -> None:
    """bad-data fails its checks; meanwhile the admin password changed, so the rollback
    cannot restore: exit 6 saying so, the database untouched. With the password right again,
    `rollback` recovers it."""
    before = whole_state(at_v2)
    password = at_v2.sandbox.password(at_v2.sandbox.spec.admin_user)
    since = time.time()
    proc = start_fab(at_v2, "local", "upgradedb", "--ref", "bad-data")
    wait_for_job(at_v2, "migrate", since, proc)
    started = time.monotonic()
    with at_v2.admin() as conn:
        conn.execute("alter role postgres password 'changed-behind-seeds-back'")
    try:
        code, out = finish(proc)
        assert code == 6, out
        assert "password authentication failed" in out
        assert "NOT restored" in out or "the live database was not touched" in out
    finally:
        with psycopg_admin(at_v2, "changed-behind-seeds-back") as conn:
            conn.execute(sql.SQL("alter role postgres password {}").format(sql.Literal(password)))
    refused_until_recovered(at_v2)  # its rollback failed: nothing else may run on top
    res = at_v2.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    elapsed = time.monotonic() - started
    assert "recovered interrupted deploy" in res.stderr
    assert whole_state(at_v2) == before
    assert lock_is_free(at_v2)
    MATRIX.append(
        Row("admin password changed after pre-flight", "old state, verified", elapsed, "rollback")
    )


def psycopg_admin(dep: Deployment, password: str) -> Any:
    sandbox = dep.sandbox
    return psycopg.connect(
        host=sandbox.host,
        port=sandbox.spec.pg_port,
        user=sandbox.spec.admin_user,
        password=password,
        dbname="postgres",
        autocommit=True,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="a small filesystem needs root (mount)")
def test_disk_full_during_backup_changes_nothing(at_v2: Deployment, tmp_path: Path) -> None:
    """Room enough at pre-flight; then something else fills the disk (a before_backup hook
    here) and pg_dump meets ENOSPC half way."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(small)], check=True)
    try:
        os.chmod(small, 0o700)
        fill = f"head -c 39m /dev/zero > {small}/filler"
        envdir = at_v2.variant(
            "smalldisk",
            {"backup.dir": str(small / "backups"), "hooks": {"backup": {"before": fill}}},
        )
        before = whole_state(at_v2)
        started = time.monotonic()
        res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
        elapsed = time.monotonic() - started
        assert res.returncode == 4, res.stdout + res.stderr
        assert "No space left on device" in res.stderr and "nothing changed" in res.stderr
        assert sorted(os.listdir(small / "backups")) == []
        assert whole_state(at_v2) == before
        assert lock_is_free(at_v2)
        MATRIX.append(Row("disk full during backup", "old state (exit 4)", elapsed, "itself"))
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("Linux only", allow_module_level=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="a small filesystem needs root (mount)")
def test_disk_full_during_restore_changes_nothing_then_recovers(at_v2: Deployment) -> None:
    """The database lives in a tablespace on a small filesystem (a restore creates its copy
    there too). After v3 is deployed, something fills that filesystem (a hook before the
    rollback's restore, here): pg_restore meets ENOSPC, the half-restored copy is dropped,
    and the environment stays exactly the new state, serving. With space again, rollback
    succeeds."""
    small = at_v2.root / "server" / "small-tablespace"
    small.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], check=True)
    filler = small / "filler"
    try:
        shutil.chown(small, "postgres", "postgres")
        with at_v2.admin() as conn:
            conn.execute(
                sql.SQL("create tablespace small_ts location {}").format(sql.Literal(str(small)))
            )
            move_database(conn, "small_ts")
        before = whole_state(at_v2)
        scratch = scratch_databases(at_v2)
        res = at_v2.fab("local", "upgradedb", "--ref", "v3")
        assert res.returncode == 0, res.stdout + res.stderr
        new_state = whole_state(at_v2)
        fill = f"head -c 100m /dev/zero > {filler}; true"
        envdir = at_v2.variant("fill-tablespace", {"hooks": {"migrate": {"before": fill}}})
        started = time.monotonic()
        res = at_v2.fab("local", "rollback", envdir=envdir)
        assert res.returncode == 6, res.stdout + res.stderr
        assert "No space left on device" in res.stderr or "could not extend" in res.stderr
        assert "the live database was not touched" in res.stderr
        assert whole_state(at_v2) == new_state  # exactly the new state, serving v3
        assert scratch_databases(at_v2) == scratch  # the half-restored copy was dropped
        filler.unlink()
        res = at_v2.fab("local", "rollback")
        assert res.returncode == 0, res.stdout + res.stderr
        elapsed = time.monotonic() - started
        assert whole_state(at_v2) == before
        assert lock_is_free(at_v2)
        MATRIX.append(
            Row("disk full during restore", "new state kept, then old", elapsed, "rollback")
        )
    finally:
        filler.unlink(missing_ok=True)
        with at_v2.admin() as conn:
            for (name,) in conn.execute(
                "select datname from pg_database d join pg_tablespace t on t.oid = d.dattablespace "
                "where t.spcname = 'small_ts' and datname <> 'shop'"
            ).fetchall():
                conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
            move_database(conn, "pg_default")
            conn.execute("drop tablespace if exists small_ts")
        subprocess.run(["umount", "-l", str(small)], check=False)


def scratch_databases(dep: Deployment) -> int:
    return int(
        dep.scalar(
            "select count(*) from pg_database where datname like 'shop_restore%'", "postgres"
        )
    )


def move_database(conn: psycopg.Connection[Any], tablespace: str) -> None:
    conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity "
        "where datname = 'shop' and pid <> pg_backend_pid()"
    )
    conn.execute(
        sql.SQL("alter database shop set tablespace {}").format(sql.Identifier(tablespace))
    )
