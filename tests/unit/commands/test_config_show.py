"""seed.commands.config (`seed <env> config`): merged settings with their file and line,
defaults, and no secret in the output. Real files in tmp_path, no servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seed.commands.config import settings
from seed.errors import ConfigError

DEFAULTS = """\
ssh:
  user: deploy
db:
  admin_password: literal-admin-secret
"""
BASE = """\
roles: {app: web1, migrate: web1, db: db1}
app:
  repo: https://ci:repo-token-123@git.example.com/shop.git
  deploy_to: /srv/shop
  settings: shop.settings
  env:
    SECRET_KEY: literal-django-secret
    API_TOKEN: ${API_TOKEN:-default-api-secret}
db:
  name: shop
  user: shop
  password: ${SHOP_DB_PASSWORD}
"""
PROD = """\
extends: base
description: Production
db:
  port: 6432
"""


@pytest.fixture()
def envdir(tmp_path: Path) -> Path:
    d = tmp_path / "environments"
    d.mkdir()
    (d / "_defaults.yml").write_text(DEFAULTS)
    (d / "base.yml").write_text(BASE)
    (d / "production.yml").write_text(PROD)
    return d


def test_every_setting_says_where_it_came_from_and_no_secret_shows(
    envdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", "env-db-secret")
    found = {s.key: s for s in settings("production", envdir)}
    assert found["db.port"].value == "6432" and found["db.port"].where == "production.yml:4"
    assert found["db.name"].where == "base.yml:10"
    assert found["ssh.user"].where == "_defaults.yml:2"
    assert found["backup.format"].value == "custom" and found["backup.format"].where == "default"
    assert found["db.password"].value == "***"
    assert found["db.password"].written == "${SHOP_DB_PASSWORD}"
    assert found["app.env.API_TOKEN"].written == "${API_TOKEN:-***}"
    assert found["app.repo"].value == "https://ci:***@git.example.com/shop.git"
    text = json.dumps([s.to_json() for s in found.values()])
    for secret in (
        "literal-admin-secret",
        "literal-django-secret",
        "default-api-secret",
        "env-db-secret",
        "repo-token-123",
    ):
        assert secret not in text, secret


def test_unset_variables_are_shown_and_a_broken_file_is_refused(
    envdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOP_DB_PASSWORD", raising=False)
    found = {s.key: s for s in settings("production", envdir)}
    assert found["db.password"].value == "(not set: SHOP_DB_PASSWORD)"
    (envdir / "production.yml").write_text(PROD + "db:\n  port: 1\n")
    with pytest.raises(ConfigError, match="duplicate key 'db'"):
        settings("production", envdir)
