"""Seed as a Django team gets it: a wheel installed with pip into a fresh virtualenv, run as
`seed` from the app's own repository, never from Seed's checkout (issue 21)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from secrets import token_urlsafe

import pytest
import yaml

from seed import __version__
from seed.config.yaml12 import load_yaml12
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
    with deployment.admin() as conn:  # in `postgres`, as every run takes it
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


@dataclass
class Pipeline:
    """An app repository set up as a CI system sees it, with the sandbox as staging."""

    app: Path
    secrets: dict[str, str]  # the CI system's secret variables
    sha: str  # the commit under build
    env: dict[str, str]  # the job's environment before its own variables


@pytest.fixture()
def pipeline(installed: Path, deployment: Deployment, tmp_path: Path) -> Pipeline:
    """The shop's repository with a committed known_hosts and environments/staging.yml
    reading its secrets from the variables the CI examples name; the sandbox stands in
    for staging; `pip install seed-deploy` finds the wheel."""
    deployment.reset()
    root = deployment.root
    app = tmp_path / "shop"
    shutil.copytree(REPO / "example" / "v1", app)
    envs = app / "environments"
    envs.mkdir()
    shutil.copy(root / "ssh" / "known_hosts", envs / "known_hosts")
    staging = yaml.safe_load((deployment.variant("ci-staging") / "local.yml").read_text())
    staging["ssh"].pop("key", None)  # the pipeline's ssh identity step provides it
    staging["ssh"]["known_hosts"] = "environments/known_hosts"
    staging["db"].pop("passfile")
    staging["db"]["password"] = "${SHOP_STAGING_DB_PASSWORD}"  # noqa: S105 (a reference)
    staging["db"]["admin_password"] = "${SHOP_STAGING_PG_ADMIN_PASSWORD}"  # noqa: S105
    staging["app"]["env"]["SECRET_KEY"] = "${SHOP_STAGING_SECRET_KEY}"  # noqa: S105
    (envs / "staging.yml").write_text(yaml.safe_dump(staging, sort_keys=False))
    passwords = dict(
        (line.split(":")[3], line.split(":", 4)[4])
        for line in (root / "pgpass").read_text().splitlines()
        if line and not line.startswith("#")
    )
    secrets = {
        "DEPLOY_SSH_KEY": (root / "ssh" / "id_ed25519").read_text().strip(),
        "SHOP_STAGING_DB_PASSWORD": passwords["shop"],
        "SHOP_STAGING_PG_ADMIN_PASSWORD": passwords["postgres"],
        "SHOP_STAGING_SECRET_KEY": token_urlsafe(50),  # check --deploy refuses a short one
    }
    sha = subprocess.run(
        ["git", "--git-dir", str(root / "origin.git"), "rev-parse", "v1^{commit}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    base = {k: v for k, v in deployment.process_env().items() if not k.startswith("SEED_")}
    base.update({k: v for k, v in deployment.env.items() if k.startswith("SEED_SANDBOX")})
    base.update(
        HOME=str(home),
        PATH=f"{installed}:/usr/sbin:/usr/bin:/sbin:/bin",
        PIP_FIND_LINKS=str(installed.parent.parent),  # the wheel, as the index would serve it
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return Pipeline(app, secrets, sha, base)


def check_artifacts(pipeline: Pipeline, deployment: Deployment) -> None:
    """What the plan and staging jobs leave: the plan through `| tee`, the JSON report."""
    plan = (pipeline.app / "plan.txt").read_text()
    assert plan.startswith("plan for staging") and f"nothing deployed -> {pipeline.sha}" in plan
    text = (pipeline.app / "seed-report.json").read_text()
    report = json.loads(text)
    assert report["outcome"] == "succeeded" and report["environment"] == "staging"
    assert pipeline.secrets["SHOP_STAGING_DB_PASSWORD"] not in text
    assert (deployment.current() or "").endswith(deployment.releases()[-1])


def test_the_github_actions_example_runs_as_written(
    pipeline: Pipeline, deployment: Deployment
) -> None:
    """docs/ci/github-actions.yml's `plan` and `staging` jobs, each `run:` step as GitHub
    runs it (bash -eo pipefail): the secrets it names are the ones the environment file
    reads, the ssh identity step's key and the committed known_hosts let it in."""
    secrets = {k.removeprefix("SHOP_"): v for k, v in pipeline.secrets.items()}

    def expand(text: str) -> str:
        text = re.sub(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", lambda m: secrets[m.group(1)], text)
        return text.replace("${{ github.event.pull_request.head.sha }}", pipeline.sha)

    base = {**pipeline.env, "GITHUB_SHA": pipeline.sha}
    workflow = load_yaml12((REPO / "docs" / "ci" / "github-actions.yml").read_text())
    for job in ("plan", "staging"):
        for step in workflow["jobs"][job]["steps"]:
            if "run" not in step:
                continue  # actions/checkout, setup-python: the test's own set-up
            env = {**base, **{k: expand(str(v)) for k, v in (step.get("env") or {}).items()}}
            res = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", expand(step["run"])],
                cwd=pipeline.app, env=env, capture_output=True, text=True, timeout=900,
                check=False,
            )  # fmt: skip
            assert res.returncode == 0, f"{job}: {step.get('name', step['run'])}\n{res.stderr}"
    check_artifacts(pipeline, deployment)


def test_the_gitlab_ci_example_runs_as_written(pipeline: Pipeline, deployment: Deployment) -> None:
    """docs/ci/gitlab-ci.yml's `plan` and `staging` jobs: `before_script` then `script`,
    one shell per job as the runner does it, under nothing but the example's own
    `set -eo pipefail`; the CI/CD variables are the environment file's ${VARIABLES}."""
    flow = load_yaml12((REPO / "docs" / "ci" / "gitlab-ci.yml").read_text())
    variables = {
        **pipeline.secrets,
        "CI": "true",
        "CI_COMMIT_SHA": pipeline.sha,
        "CI_DEFAULT_BRANCH": "main",
        "CI_COMMIT_BRANCH": "main",
    }
    for job in ("plan", "staging"):
        lines = [*flow["default"]["before_script"], *flow[job]["script"]]
        assert flow[job]["stage"] == job and lines[0].startswith("set -eo pipefail")
        res = subprocess.run(
            ["bash", "--noprofile", "--norc", "-c", "\n".join(lines)],
            cwd=pipeline.app, env={**pipeline.env, **variables}, capture_output=True, text=True,
            timeout=900, check=False,
        )  # fmt: skip
        assert res.returncode == 0, f"{job}: {res.stdout}\n{res.stderr}"
        for path in flow[job]["artifacts"]["paths"]:
            assert (pipeline.app / path).is_file(), (job, path)
    check_artifacts(pipeline, deployment)
