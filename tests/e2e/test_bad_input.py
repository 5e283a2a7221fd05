"""Every bad input: one clear line naming what and where, its exit code, nothing changed.

Each case is a real mistake a user makes (a typo, a wrong password, a host that is
not there) driven through `fab` as a subprocess. None may print a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.servers import free_port
from tests.e2e.conftest import DELETE, REPO, Deployment


@pytest.fixture(scope="module")
def at_v1(deployment: Deployment) -> Iterator[Deployment]:
    deployment.reset()
    res = deployment.fab("local", "upgradedb", "--ref", "v1")
    assert res.returncode == 0, res.stderr
    yield deployment


def state(dep: Deployment) -> dict[str, Any]:
    return {
        "figures": dep.figures(),
        "current": dep.current(),
        "releases": dep.releases(),
        "backups": dep.backups(),
    }


def refused(dep: Deployment, code: int, *args: str, **kwargs: Any) -> str:
    """Run fab; assert the exit code, one clear last line, no traceback, nothing changed."""
    before = state(dep)
    res = dep.fab(*args, **kwargs)
    output = res.stdout + res.stderr
    assert res.returncode == code, output
    assert "Traceback" not in output
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("seed: ") and len(last) < 600, last
    assert state(dep) == before
    return last


def upgrade(dep: Deployment, envdir: Path, code: int, ref: str = "v2", **kw: Any) -> str:
    return refused(dep, code, "local", "upgradedb", "--ref", ref, envdir=envdir, **kw)


# -- configuration: exit 2, no server contacted -------------------------------------------


def test_yaml_syntax_error_names_file_and_line(at_v1: Deployment) -> None:
    envdir = at_v1.home / "envs" / "broken-yaml"
    envdir.mkdir(parents=True, exist_ok=True)
    text = (REPO / "environments" / "local.yml").read_text()
    (envdir / "local.yml").write_text(text.replace("roles:\n", "roles:\n  app: [oops\n", 1))
    last = upgrade(at_v1, envdir, 2)
    assert "local.yml" in last and "line " in last and "invalid YAML" in last


def test_unknown_key_is_an_error(at_v1: Deployment) -> None:
    last = upgrade(at_v1, at_v1.variant("typo", {"db.pasword": "x"}), 2)
    assert "db.pasword: unknown key" in last


def test_missing_required_key(at_v1: Deployment) -> None:
    last = upgrade(at_v1, at_v1.variant("no-repo", {"app.repo": DELETE}), 2)
    assert "app.repo: required" in last


def test_wrong_type(at_v1: Deployment) -> None:
    last = upgrade(at_v1, at_v1.variant("bad-port", {"db.port": "abc"}), 2)
    assert "db.port: expected an integer" in last


def test_missing_secret_variable_is_named(at_v1: Deployment) -> None:
    envdir = at_v1.variant("no-secret", {"app.env.SECRET_KEY": "${SEED_TEST_UNSET_SECRET}"})
    last = upgrade(at_v1, envdir, 2)
    assert "SEED_TEST_UNSET_SECRET is not set" in last


def test_unknown_environment_is_a_usage_error(at_v1: Deployment) -> None:
    res = at_v1.fab("nosuchenv", "upgradedb")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "nosuchenv" in res.stderr


def test_unknown_ref(at_v1: Deployment) -> None:
    last = refused(at_v1, 2, "local", "upgradedb", "--ref", "no-such-tag")
    assert "--ref no-such-tag: no such branch, tag or commit" in last


def test_report_path_not_writable(at_v1: Deployment) -> None:
    blocker = at_v1.home / "a-file"
    blocker.write_text("x")
    last = refused(at_v1, 2, "local", "upgradedb", "--report", str(blocker / "report.json"))
    assert "--report" in last and "cannot write" in last


# -- SSH: exit 4 -----------------------------------------------------------------------------


def test_unreachable_host(at_v1: Deployment) -> None:
    host = "seed-test-unreachable.invalid"
    envdir = at_v1.variant("unreachable", {"roles": {"app": [host], "migrate": host, "db": host}})
    last = upgrade(at_v1, envdir, 4)
    assert host in last and "cannot connect" in last


def test_refused_port(at_v1: Deployment) -> None:
    port = free_port()
    last = upgrade(at_v1, at_v1.variant("refused", {"ssh.port": port}), 4)
    assert f":{port}" in last and "cannot connect" in last


def test_ssh_authentication_failure(at_v1: Deployment) -> None:
    key = at_v1.home / "stranger_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    last = upgrade(at_v1, at_v1.variant("stranger", {"ssh.key": str(key)}), 4)
    assert "authentication failed" in last


def test_unknown_host_key(at_v1: Deployment) -> None:
    empty = at_v1.home / "empty_known_hosts"
    empty.write_text("")
    last = upgrade(at_v1, at_v1.variant("unknown-key", {"ssh.known_hosts": str(empty)}), 4)
    assert "host key unknown" in last


def test_changed_host_key(at_v1: Deployment) -> None:
    other = at_v1.home / "other_host_key"
    if not other.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True
        )
    key_type, key_b64 = other.with_suffix(".pub").read_text().split()[:2]
    known = at_v1.home / "changed_known_hosts"
    known.write_text(f"[127.0.0.1]:{at_v1.sandbox.spec.ssh_port} {key_type} {key_b64}\n")
    last = upgrade(at_v1, at_v1.variant("changed-key", {"ssh.known_hosts": str(known)}), 4)
    assert "host key CHANGED" in last


# -- database and backup: exit 4 -------------------------------------------------------------


def test_wrong_app_password(at_v1: Deployment) -> None:
    last = upgrade(at_v1, at_v1.variant("bad-app-pw", {"db.password": "not-the-password"}), 4)
    assert 'password authentication failed for user "shop"' in last
    assert "not-the-password" not in last


def test_pg_dump_missing(at_v1: Deployment) -> None:
    envdir = at_v1.variant("no-pg-dump", {"backup.pg_bin": "/nonexistent/pg/bin"})
    last = upgrade(at_v1, envdir, 4)
    assert "/nonexistent/pg/bin/pg_dump not found" in last


def test_pg_dump_older_than_server(at_v1: Deployment) -> None:
    """A state host whose pg_dump is 9.6: stands in for an old client package."""
    old = at_v1.home / "old-pg-bin"
    old.mkdir(exist_ok=True)
    for tool in ("pg_dump", "pg_restore", "vacuumdb"):  # one old client package
        script = old / tool
        script.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) 9.6.24'\n")
        script.chmod(0o755)
    last = upgrade(at_v1, at_v1.variant("old-pg-dump", {"backup.pg_bin": str(old)}), 4)
    assert "older than the server" in last and "9.6.24" in last


def test_pg_dump_failing_mid_dump(at_v1: Deployment) -> None:
    """A pg_dump that passes the version gate and then fails (a dropped connection, a
    permission it lacks): `backup` exits 4 naming pg_dump's own error, and leaves no
    half-written backup or manifest behind."""
    real = at_v1.sandbox.pg_bindir
    failing = at_v1.home / "failing-pg-bin"
    failing.mkdir(exist_ok=True)
    for tool in ("pg_dump", "pg_restore", "vacuumdb"):
        script = failing / tool
        script.write_text(
            f'#!/bin/sh\ncase "$1" in --version|-V) exec {real / tool} "$@";; esac\n'
            'echo "pg_dump: error: query failed: connection to server was lost" >&2\nexit 1\n'
        )
        script.chmod(0o755)
    envdir = at_v1.variant("failing-pg-dump", {"backup.pg_bin": str(failing)})
    last = refused(at_v1, 4, "local", "backup", envdir=envdir)
    assert "backup on " in last and "connection to server was lost" in last


def test_backup_dir_not_writable(at_v1: Deployment) -> None:
    blocker = at_v1.root / "server" / "blocker-file"
    blocker.write_text("not a directory\n")
    envdir = at_v1.variant("backup-dir", {"backup.dir": str(blocker / "backups")})
    last = upgrade(at_v1, envdir, 4)
    assert "backup" in last and "Not a directory" in last and "nothing changed" in last


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_too_small_for_the_backup(at_v1: Deployment) -> None:
    small = at_v1.root / "server" / "small-disk"
    small.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        envdir = at_v1.variant("small-disk", {"backup.dir": str(small / "backups")})
        last = upgrade(at_v1, envdir, 4)
        assert "MB free, the backup needs about" in last
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_pre_check_with_sql_error(at_v1: Deployment) -> None:
    checks = [{"name": "typo check", "when": "pre", "sql": "selct 1", "expect": 1}]
    last = upgrade(at_v1, at_v1.variant("bad-pre-check", {"checks": checks}), 4)
    assert "check 'typo check' does not plan" in last and "syntax error" in last


# -- the control machine's own disk ------------------------------------------------------


@pytest.fixture()
def small_home(at_v1: Deployment) -> Iterator[Path]:
    """SEED_HOME on its own small tmpfs (its disk can be filled without filling ours)."""
    home = at_v1.root / "small-home"
    home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(home)], check=True)
    try:
        yield home
    finally:
        subprocess.run(["umount", str(home)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_local_disk_is_refused_before_anything(at_v1: Deployment, small_home: Path) -> None:
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={small_home / 'fill'}", "bs=1M", "count=20"],
        check=True,
        capture_output=True,
    )
    last = refused(
        at_v1, 4, "local", "upgradedb", "--ref", "v2", extra_env={"SEED_HOME": str(small_home)}
    )
    assert last.startswith(f"seed: local state {small_home}: only ")
    assert "MiB free, Seed needs 20 MiB there" in last and "nothing was done" in last


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_local_disk_that_fills_during_a_deploy_does_not_stop_it(
    at_v1: Deployment, small_home: Path
) -> None:
    """The state host's journal is the record; the local copies are best effort, so a
    deploy whose control machine's disk fills half way finishes (or rolls back) as it
    would have, says what it could not write, and prints no traceback."""
    fill = f"dd if=/dev/zero of={small_home / 'fill'} bs=1M >/dev/null 2>&1 || true"
    envdir = at_v1.variant("fills-up", {"hooks.migrate.before": {"run": fill, "on": "local"}})
    before = at_v1.current()
    home = {"SEED_HOME": str(small_home)}
    res = at_v1.fab("local", "upgradedb", "--ref", "v2", envdir=envdir, extra_env=home)
    output = res.stdout + res.stderr
    try:
        assert res.returncode == 0, output
        assert "Traceback" not in output
        assert "warning: the report could not be written to" in res.stderr
        assert "No space left on device" in res.stderr
        assert at_v1.current() != before  # deployed
        (small_home / "fill").unlink()
        history = at_v1.fab("local", "history", "--json", envdir=envdir, extra_env=home)
        assert history.returncode == 0, history.stderr
        newest = json.loads(history.stdout)[0]
        assert (newest["kind"], newest["outcome"], newest["ref"]) == (
            "upgradedb",
            "succeeded",
            "v2",
        )
    finally:
        back = at_v1.fab("local", "rollback", envdir=envdir)
        assert back.returncode == 0, back.stderr
