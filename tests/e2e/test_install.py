"""Seed as a Django team gets it: a wheel installed with pip into a fresh virtualenv, run as
`seed` from the app's own repository, never from Seed's checkout (issue 21)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seed import __version__
from seed.journal.store import lock_key_sql
from tests.e2e.conftest import REPO, Deployment


@pytest.fixture(scope="module")
def installed(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`seed` from a wheel of this checkout, installed (with its dependencies, pinned by
    requirements.txt) into a new virtualenv outside the checkout; returns its bin/."""
    deployment.reset()
    work = tmp_path_factory.mktemp("install")
    # the working tree's package sources, built outside the checkout (setuptools writes
    # build/ beside the sources)
    source = work / "source"
    shutil.copytree(REPO / "seed", source / "seed", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(work)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = work.glob("seed_deploy-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    # the checkout's pins as constraints (pip takes no extras there: psycopg[binary])
    pins = re.sub(r"\[[^]]*\]", "", (REPO / "requirements.txt").read_text())
    (work / "constraints.txt").write_text(pins)
    res = subprocess.run(
        [*pip, "install", "-q", "-c", str(work / "constraints.txt"), str(wheel)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    yield venv / "bin"
    shutil.rmtree(work, ignore_errors=True)


def seed(bin_dir: Path, dep: Deployment, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dep.process_env()
    for name in ("SEED_ENVIRONMENTS", "SEED_HOME"):  # the app repository's own, found from cwd
        env.pop(name, None)
    env["PATH"] = f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"
    return subprocess.run(
        [str(bin_dir / "seed"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_wheel_installs_a_seed_command_that_deploys_from_the_app_repository(
    installed: Path, deployment: Deployment, tmp_path: Path
) -> None:
    version = seed(installed, deployment, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith(f"Seed {__version__}\n")

    # an app repository: `seed init` writes its starting files (from the wheel's data),
    # and the sandbox's environment file is added beside them
    app = tmp_path / "shop-repo"
    shutil.copytree(REPO / "example" / "v1", app)
    init = seed(installed, deployment, app, "init")
    assert init.returncode == 0, init.stdout + init.stderr
    assert "wrote environments/production.yml" in init.stdout
    assert "settings: shopsite.settings" in (app / "environments" / "staging.yml").read_text()
    one_host = deployment.variant("installed") / "local.yml"
    shutil.copy(one_host, app / "environments" / "local.yml")
    listed = seed(installed, deployment, app, "--list")
    assert listed.returncode == 0, listed.stderr
    for name in ("init", "upgradedb", "local", "staging", "production"):
        assert f"\n  {name} " in listed.stdout, name
    assert "sandbox" not in listed.stdout  # the checkout's own tasks are not the product's

    deployed = seed(installed, deployment, app, "local", "upgradedb", "--ref", "v1")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert (deployment.current() or "").endswith(deployment.releases()[-1])
    # state lives in the app repository (or SEED_HOME), never beside the installed code
    assert (app / ".seed" / "local" / "journal").is_dir()
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    assert not (site / ".seed").exists() and not (site / "seed" / ".seed").exists()

    status = seed(installed, deployment, app, "local", "status")
    assert status.returncode == 0 and "succeeded (exit 0)" in status.stdout, status.stderr

    # one-off manage.py commands: the words after `manage` are the command, output
    # streamed and scrubbed, the exit code passed through, never during a deploy
    shown = seed(installed, deployment, app, "local", "manage", "showmigrations", "shop")
    assert shown.returncode == 0, shown.stderr
    assert "[X] 0001_initial" in shown.stdout and "[X] 0002_demo_data" in shown.stdout
    settings = seed(installed, deployment, app, "local", "manage", "diffsettings")
    secret = deployment.process_env().get("SHOP_SECRET_KEY") or "sandbox-only-secret-key"
    assert "SECRET_KEY = '***'" in settings.stdout and secret not in settings.stdout
    unknown = seed(installed, deployment, app, "local", "manage", "nosuchcommand")
    assert unknown.returncode == 1 and "Unknown command: 'nosuchcommand'" in unknown.stderr
    with deployment.admin("shop") as conn:
        conn.execute(f"select pg_advisory_lock({lock_key_sql()})", ("shop",))
        held = seed(installed, deployment, app, "local", "manage", "showmigrations")
    assert held.returncode == 3 and "local is locked by" in held.stderr, held.stderr


def test_without_environments_the_command_says_where_it_looked(
    installed: Path, deployment: Deployment, tmp_path: Path
) -> None:
    """Run outside an app repository: one line, exit 2, nothing written."""
    res = seed(installed, deployment, tmp_path, "local", "status")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip() == (
        f"seed: 'local' is not a task, and {tmp_path / 'environments'} has no environment "
        "files (run Seed in the app repository)"
    )
    assert list(tmp_path.iterdir()) == []
