"""docs/ci: the example pipelines fit the example environments as written (no servers):
each job that runs `seed <env> …` gives it every ${VARIABLE} environments/<env>.yml reads,
every pipe runs under pipefail, host keys come from the committed known_hosts. The GitHub
one is what `seed init` writes for a project named shop. tests/e2e/test_install.py runs
the steps against the sandbox."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from seed.commands.init import Project, render
from seed.config.yaml12 import load_yaml12

REPO = Path(__file__).resolve().parents[3]
REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # no `:-default`
SEED_RUN = re.compile(r"\bseed (\w+) (\w+)")


def needed(env: str) -> set[str]:
    return set(REQUIRED_VAR.findall((REPO / "environments" / f"{env}.yml").read_text()))


def github_steps() -> list[tuple[str, dict[str, Any]]]:
    flow = load_yaml12((REPO / "docs" / "ci" / "github-actions.yml").read_text())
    assert flow["defaults"]["run"]["shell"] == "bash"  # GitHub: bash -eo pipefail
    return [(job, step) for job, spec in flow["jobs"].items() for step in spec["steps"]]


def test_github_jobs_give_each_environment_its_variables() -> None:
    deploying = 0
    for job, step in github_steps():
        for env, task in SEED_RUN.findall(step.get("run", "")):
            missing = needed(env) - set(step.get("env", {}))
            assert not missing, f"job {job}: `seed {env} {task}` lacks {sorted(missing)}"
            deploying += 1
    assert deploying == 3  # plan, staging, production


def test_every_github_deploy_keeps_its_report_also_when_it_fails() -> None:
    """A deploy that fails is the one whose report is wanted: each job that writes
    --report uploads it after, `if: always()` (a failed step skips the next otherwise)."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for job, step in github_steps():
        jobs.setdefault(job, []).append(step)
    reporting = [
        job for job, steps in jobs.items() if any("--report" in s.get("run", "") for s in steps)
    ]
    assert sorted(reporting) == ["production", "staging"]
    for job in reporting:
        steps = jobs[job]
        at = next(i for i, s in enumerate(steps) if "--report seed-report.json" in s.get("run", ""))
        keep = steps[at + 1]
        assert keep["uses"].startswith("actions/upload-artifact@"), (job, keep)
        assert keep["if"] == "always()" and keep["with"]["path"] == "seed-report.json", keep


def test_the_github_example_is_what_seed_init_writes() -> None:
    template = resources.files("seed.config") / "templates" / "deploy" / "ci" / "github-actions.yml"
    shop = Project("shop", "git@github.com:acme/shop.git", "shopsite.settings")
    assert (REPO / "docs" / "ci" / "github-actions.yml").read_text() == render(template, shop)


def test_gitlab_jobs_run_under_pipefail_with_the_variables_scoped_to_them() -> None:
    flow = load_yaml12((REPO / "docs" / "ci" / "gitlab-ci.yml").read_text())
    assert flow["default"]["before_script"][0].startswith("set -eo pipefail")
    comment = (REPO / "docs" / "ci" / "gitlab-ci.yml").read_text().split("\nstages:")[0]
    for job in ("plan", "staging", "production"):
        for line in flow[job]["script"]:
            for env, _ in SEED_RUN.findall(line):
                prefix = "SHOP_STAGING_" if env == "staging" else "SHOP_PRODUCTION_"
                assert all(v.startswith(prefix) for v in needed(env)), env
                assert prefix in comment


@pytest.mark.parametrize("env", ["staging", "production"])
def test_host_keys_come_from_the_committed_known_hosts(env: str) -> None:
    data = load_yaml12((REPO / "environments" / f"{env}.yml").read_text())
    assert data["ssh"]["known_hosts"] == "environments/known_hosts"
