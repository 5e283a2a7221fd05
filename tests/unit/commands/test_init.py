"""seed.commands.init: the starting files of an app repository, real files in tmp_path."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

from seed.checks.run import repo_checks
from seed.commands.init import FILES, SCHEMA_FILE, write_starting_files
from seed.config import schema
from seed.config.environment import load_environment
from seed.config.yaml12 import load_yaml12
from seed.errors import ConfigError
from seed.rehearse.lint import repo_waivers


@pytest.fixture()
def app_repo(tmp_path: Path) -> Path:
    """A Django project's repository: git with an origin, manage.py naming its settings."""
    repo = tmp_path / "Corner-Shop"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "remote", "add", "origin", "git@example.com:acme/shop.git"],
        check=True,
    )
    (repo / "manage.py").write_text(
        'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "cornershop.settings.prod")\n'
    )
    return repo


def test_init_writes_starting_files_that_seed_accepts(
    app_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = write_starting_files(app_repo)
    assert done == [(rel, "wrote") for rel in (*FILES, SCHEMA_FILE)]
    for rel in FILES:
        assert not re.search(r"@[A-Z]+@", (app_repo / rel).read_text()), rel
    assert json.loads((app_repo / SCHEMA_FILE).read_text()) == schema.document()
    validator = jsonschema.Draft202012Validator(schema.document())
    for name in ("staging", "production"):
        for var in ("DB_PASSWORD", "PG_ADMIN_PASSWORD", "SECRET_KEY"):
            monkeypatch.setenv(f"CORNER_SHOP_{name.upper()}_{var}", "x")
        env = load_environment(name, app_repo / "environments")
        assert env.app.repo == "git@example.com:acme/shop.git"
        assert env.app.settings == "cornershop.settings.prod" and env.app.root == ""
        assert env.db.name == "corner_shop" and env.protected is (name == "production")
        text = (app_repo / "environments" / f"{name}.yml").read_text()
        assert list(validator.iter_errors(load_yaml12(text))) == []
    checks = (app_repo / "deploy" / "checks.yml").read_bytes()
    assert repo_checks(checks, "deploy/checks.yml", ()) == ()
    assert repo_waivers((app_repo / "deploy" / "lint.yml").read_bytes(), "deploy/lint.yml") == []
    workflow = load_yaml12((app_repo / "deploy" / "ci" / "github-actions.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    assert any("CORNER_SHOP_PRODUCTION_DB_PASSWORD" in s.get("env", {}) for s in steps)


def test_init_never_writes_over_a_file(app_repo: Path) -> None:
    (app_repo / "environments").mkdir()
    mine = app_repo / "environments" / "staging.yml"
    mine.write_text("# the team's own\n")
    first = dict(write_starting_files(app_repo))
    assert first["environments/staging.yml"] == "kept" and mine.read_text() == "# the team's own\n"
    assert first["environments/production.yml"] == "wrote"
    assert set(dict(write_starting_files(app_repo)).values()) == {"kept"}


def test_init_outside_git_and_django_leaves_placeholders(tmp_path: Path) -> None:
    write_starting_files(tmp_path)
    text = (tmp_path / "environments" / "staging.yml").read_text()
    name = tmp_path.name.lower().replace("-", "_")
    assert f"repo: git@github.com:your-org/{name}.git" in text
    assert f"settings: {name}.settings" in text


def test_a_file_init_cannot_write_is_one_clear_error(tmp_path: Path) -> None:
    """A folder it cannot create or write (here `deploy` is a file; a read-only checkout
    or a full disk alike): ConfigError naming the file (exit 2), no traceback."""
    (tmp_path / "deploy").write_text("not a folder\n")
    with pytest.raises(ConfigError, match=r"deploy/checks\.yml: cannot write it: "):
        write_starting_files(tmp_path)


def test_init_finds_a_project_in_a_subfolder(
    app_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manage.py in backend/ (a monorepo): app.root names it; two candidates: the user says."""
    (app_repo / "backend").mkdir()
    (app_repo / "manage.py").rename(app_repo / "backend" / "manage.py")
    (app_repo / ".venv" / "x").mkdir(parents=True)
    (app_repo / ".venv" / "x" / "manage.py").write_text("# not the project's\n")
    write_starting_files(app_repo)
    for var in ("DB_PASSWORD", "PG_ADMIN_PASSWORD", "SECRET_KEY"):
        monkeypatch.setenv(f"CORNER_SHOP_STAGING_{var}", "x")
    env = load_environment("staging", app_repo / "environments")
    assert env.app.root == "backend" and env.app.settings == "cornershop.settings.prod"

    other = app_repo.parent / "two"
    for sub in ("api", "admin"):
        (other / sub).mkdir(parents=True)
        (other / sub / "manage.py").write_text("\n")
    write_starting_files(other)
    assert "  # root: backend " in (other / "environments" / "staging.yml").read_text()


@pytest.mark.parametrize("root", ["/srv/app", "../app", "backend/../.."])
def test_app_root_outside_the_repository_is_refused(
    app_repo: Path, monkeypatch: pytest.MonkeyPatch, root: str
) -> None:
    write_starting_files(app_repo)
    path = app_repo / "environments" / "staging.yml"
    path.write_text(path.read_text().replace("  # root: backend", f"  root: {root}"))
    for var in ("DB_PASSWORD", "PG_ADMIN_PASSWORD", "SECRET_KEY"):
        monkeypatch.setenv(f"CORNER_SHOP_STAGING_{var}", "x")
    with pytest.raises(ConfigError, match=r"app.root: .* must be a folder inside the repos"):
        load_environment("staging", app_repo / "environments")
