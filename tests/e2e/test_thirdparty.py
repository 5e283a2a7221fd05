"""A project with popular third-party apps (example/thirdparty: Django REST framework's
tokens, taggit, reversion, contrib sessions and sites), deployed with the default safety
gate: on a first deploy, and added to a live project (issue 21: the gate fits real
projects). Their migrations are not the team's to edit: findings name the distribution
and only warn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Deployment

THIRD_PARTY = ("djangorestframework ", "django-taggit ", "django-reversion ")


@pytest.fixture()
def empty(deployment: Deployment) -> Iterator[Deployment]:
    deployment.reset()
    yield deployment


def lint_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = report["lint"]["findings"]
    return findings


def test_first_deploy_of_a_project_with_third_party_apps(empty: Deployment) -> None:
    res = empty.fab("local", "upgradedb", "--ref", "thirdparty")
    assert res.returncode == 0, res.stdout + res.stderr
    report = empty.last_report()
    pending = report["migrations"]["planned"]
    for app in ("authtoken", "taggit", "reversion", "sessions", "sites", "shop"):
        assert any(p.startswith(f"{app}.") for p in pending), app
    # a first deploy: no rule about a release running during it
    assert not {f["rule"] for f in lint_of(report)} & {"contract-with-expand", "rename"}
    owned = [f for f in lint_of(report) if f["distribution"]]
    assert all(f["level"] == "warn" for f in owned)
    assert all(f["message"].startswith("(from the installed distribution ") for f in owned)
    # Django's own apps are a distribution too
    owners = {f["distribution"].split(" ")[0] for f in owned}
    assert owners <= {"Django", "djangorestframework", "django-taggit", "django-reversion"}
    assert empty.scalar("select count(*) from django_migrations where app = 'taggit'") > 3


def test_third_party_apps_added_to_a_live_project(empty: Deployment) -> None:
    empty.deploy("v1", "v2")
    res = empty.fab("local", "upgradedb", "--ref", "thirdparty")
    assert res.returncode == 0, res.stdout + res.stderr
    report = empty.last_report()
    assert report["lint"]["passed"]
    owned = {f["distribution"].split(" ")[0] for f in lint_of(report) if f["distribution"]}
    assert owned <= {"djangorestframework", "django-taggit", "django-reversion", "Django"}
    for app in ("authtoken", "taggit", "reversion", "sessions", "sites"):
        assert empty.scalar(f"select count(*) from django_migrations where app = '{app}'") > 0
