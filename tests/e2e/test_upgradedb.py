"""`fab local upgradedb` end to end: real PostgreSQL, sshd, git and Django migrations."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seed.db.postgres import snapshot_figures
from tests.e2e.conftest import Deployment


@pytest.fixture(scope="module")
def after_v2(deployment: Deployment) -> Iterator[dict[str, Any]]:
    """v1 then v2 deployed from an empty database; yields both reports."""
    deployment.reset()
    res1 = deployment.fab("local", "upgradedb", "--ref", "v1")
    assert res1.returncode == 0, res1.stderr
    v1_report = deployment.last_report()
    v1_release = deployment.current()
    v1_http = deployment.http("/version/")
    res2 = deployment.fab(
        "local", "upgradedb", "--ref", "v2", "--report", str(deployment.home / "v2.json")
    )
    assert res2.returncode == 0, res2.stderr
    yield {
        "v1": v1_report,
        "v1_release": v1_release,
        "v1_http": v1_http,
        "v2": json.loads((deployment.home / "v2.json").read_text()),
        "v2_output": res2.stdout + res2.stderr,
    }


def test_v1_deploys_demo_data_and_serves(deployment: Deployment, after_v2: dict[str, Any]) -> None:
    report = after_v2["v1"]
    assert report["outcome"] == "succeeded" and report["exit_code"] == 0
    assert "shop.0002_demo_data" in report["migrations"]["applied"]
    assert after_v2["v1_http"] == (200, "v1")
    assert after_v2["v1_release"].endswith(report["sha_after"][:12])


def test_v2_migrates_data_and_switches(deployment: Deployment, after_v2: dict[str, Any]) -> None:
    report = after_v2["v2"]
    assert report["exit_code"] == 0
    assert report["migrations"]["applied"] == [
        "shop.0003_customer_first_last_name",
        "shop.0004_fill_first_last_name",
    ]
    assert deployment.scalar("select count(*) from shop_customer") == 20000
    # the data migration split every name; names with no space keep an empty last name
    assert (
        deployment.scalar(
            "select count(*) from shop_customer where trim(first_name || ' ' || last_name) <> name"
        )
        == 0
    )
    assert deployment.http("/version/") == (200, "v2")
    status, body = deployment.http("/customers/42/")
    assert status == 200 and json.loads(body)["first_name"]
    # current switched to the new release; the previous one is kept for rollback
    assert deployment.current() == f"releases/{report['release_after']}"
    assert report["release_before"] in deployment.releases()
    steps = [s["name"] for s in report["steps"]]
    assert steps.index("backup") < steps.index("migrate") < steps.index("switch")
    assert all(s["outcome"] in ("ok", "skipped") for s in report["steps"])
    checks = {c["name"]: c for c in report["checks"]}
    assert (
        checks["customers unchanged"]["passed"] and checks["customers unchanged"]["before"] == 20000
    )


def test_old_code_runs_on_expanded_schema(deployment: Deployment, after_v2: dict[str, Any]) -> None:
    """v2 only expands: the v1 release (still on disk) reads and writes the migrated database."""
    v1 = deployment.deploy_to / "releases" / after_v2["v1"]["release_after"]
    code = (
        "from shop.models import Customer; c = Customer.objects.get(pk=42); "
        "Customer.objects.create(name='Old Code', email='old-code@example.com', "
        "created_at=c.created_at); print(c.name)"
    )
    res = subprocess.run(
        [
            "bash",
            "-c",
            f"set -a; . {deployment.deploy_to}/shared/env; set +a; "
            f'.venv/bin/python manage.py shell -c "{code}"',
        ],
        cwd=v1,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()
    with deployment.admin("shop") as conn:
        conn.execute("delete from shop_customer where email = 'old-code@example.com'")


def test_backup_restores_to_exact_before_state(
    deployment: Deployment, after_v2: dict[str, Any]
) -> None:
    """The v2 deploy's backup, restored elsewhere, has the before-state's figures exactly."""
    backup = after_v2["v2"]["backup"]
    manifest = json.loads(Path(backup["manifest"]).read_text())
    assert manifest["sha256"] == backup["sha256"]
    assert Path(backup["path"]).stat().st_mode & 0o777 == 0o600
    assert Path(backup["path"]).parent.stat().st_mode & 0o777 == 0o700
    assert (
        manifest["applied_migrations"]
        and ["shop", "0002_demo_data"] in manifest["applied_migrations"]
    )
    with deployment.admin() as conn:
        conn.execute("drop database if exists restore_check")
        conn.execute("create database restore_check owner shop template template0")
    bindir = deployment.sandbox.pg_bindir
    env_pass = {"PGPASSFILE": str(deployment.sandbox.pgpass)}
    res = subprocess.run(
        [
            str(bindir / "pg_restore"),
            "-e",
            "--no-owner",
            "-h",
            "127.0.0.1",
            "-p",
            str(deployment.sandbox.spec.pg_port),
            "-U",
            "postgres",
            "-d",
            "restore_check",
            backup["path"],
        ],
        env={**os.environ, **env_pass},
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    with deployment.admin("restore_check") as conn:
        restored = {k: v.to_json() for k, v in snapshot_figures(conn).items()}
    with deployment.admin() as conn:
        conn.execute("drop database restore_check")
    assert restored == after_v2["v2"]["before"]["tables"] == manifest["tables"]
    # and the before-state is not the after-state (the migration changed shop_customer)
    assert restored["public.shop_customer"] != deployment.figures()["public.shop_customer"]


def _state(dep: Deployment) -> dict[str, Any]:
    return {
        "figures": dep.figures(),
        "current": dep.current(),
        "releases": dep.releases(),
        "backups": dep.backups(),
        "http": dep.http("/version/"),
    }


def test_backup_failure_exits_4_and_changes_nothing(
    deployment: Deployment, after_v2: dict[str, Any]
) -> None:
    """The backup dir cannot be created (a file is in the way): exit 4, nothing changed."""
    blocker = deployment.root / "server" / "not-a-dir"
    blocker.write_text("a file, not a directory\n")
    envdir = deployment.variant("backup-fails", {"backup.dir": str(blocker / "backups")})
    before = _state(deployment)
    res = deployment.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 4, res.stderr
    assert "backup" in res.stderr and "nothing changed" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert _state(deployment) == before
    report = deployment.last_report()
    assert report["exit_code"] == 4
    assert [s["name"] for s in report["steps"] if s["outcome"] == "failed"] == ["backup"]


def test_wrong_admin_password_exits_4(deployment: Deployment, after_v2: dict[str, Any]) -> None:
    envdir = deployment.variant("bad-admin-pw", {"db.admin_password": "definitely-wrong"})
    before = _state(deployment)
    res = deployment.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 4, res.stderr
    assert "password authentication failed" in res.stderr
    assert "definitely-wrong" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()[-1]) < 400
    assert _state(deployment) == before


def test_secrets_never_leave(deployment: Deployment, after_v2: dict[str, Any]) -> None:
    """Known secrets appear nowhere in output, reports, journal or logs of a full run."""
    # long and varied enough for Django's check --deploy (security.W009 fails at WARNING)
    planted = "s3cr3t-TOKEN-for-grep-4711-q8Zx2Lm0Rt5Vw9Kp3Hd7Nc1Bf6Gj4"
    envdir = deployment.variant("secret", {"app.env.SECRET_KEY": "${TEST_SHOP_SECRET}"})
    res = deployment.fab(
        "local",
        "upgradedb",
        "--ref",
        "v2",
        "--report",
        str(deployment.home / "secret.json"),
        envdir=envdir,
        extra_env={"TEST_SHOP_SECRET": planted},
    )
    assert res.returncode == 0, res.stderr
    secrets = [
        planted,
        deployment.sandbox.password("shop"),
        deployment.sandbox.password("postgres"),
    ]
    texts = [res.stdout, res.stderr]
    for base in (deployment.home, deployment.state_dir, deployment.backup_dir):
        for path in base.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".log", ""):
                texts.append(path.read_text(errors="replace"))
    for secret in secrets:
        assert not any(secret in t for t in texts), f"secret leaked ({secret[:3]}...)"
    # ...while the app did get it, through the 0600 env file
    env_file = deployment.deploy_to / "shared" / "env"
    assert planted in env_file.read_text() and env_file.stat().st_mode & 0o777 == 0o600


def test_no_environment_selected_exits_2(deployment: Deployment) -> None:
    res = deployment.fab("upgradedb")
    assert res.returncode == 2
    assert "no environment selected" in res.stderr
    assert "Traceback" not in res.stderr


def test_protected_environment_refuses_without_tty(deployment: Deployment) -> None:
    envdir = deployment.variant("protected", {}, protected=True)
    res = deployment.fab("local", "upgradedb", "--ref", "v2", envdir=envdir)
    assert res.returncode == 2
    assert "protected" in res.stderr and "--yes" in res.stderr
