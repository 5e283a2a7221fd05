"""Undo puts back everything the deploy changed (issue 18): here, the app's env file.

The env file belongs to its release (releases/<rid>/.seed-env) and shared/env is a link
through `current`: a refused deploy leaves the app's settings as they were (defect 4:
they were rewritten at pre-flight, so "nothing changed" was false), and a rolled-back
release runs with its own settings again, not the new release's.
"""

from __future__ import annotations

import os

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import whole_state

NEW_SETTING = {"app.env.FEATURE_FLAG": "only-for-the-new-release"}


def app_env(dep: Deployment) -> bytes:
    """shared/env as the app reads it (through the link)."""
    return (dep.deploy_to / "shared" / "env").read_bytes()


def test_a_refused_deploy_leaves_the_apps_settings_alone(at_v2: Deployment) -> None:
    before, env = whole_state(at_v2), app_env(at_v2)
    # lint blocks it: a plain CREATE INDEX on shop_order (50,000 rows, a big table here)
    envdir = at_v2.variant("new-setting-refused", {**NEW_SETTING, "lint.big_table_rows": 10000})
    res = at_v2.fab("local", "upgradedb", "--ref", "unsafe", envdir=envdir)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "nothing changed" in res.stderr
    assert app_env(at_v2) == env
    assert whole_state(at_v2) == before


def test_a_rolled_back_release_runs_with_its_own_settings(at_v2: Deployment) -> None:
    before, env = whole_state(at_v2), app_env(at_v2)
    envdir = at_v2.variant(
        "new-setting-unhealthy",
        {**NEW_SETTING, "app.health.text": "ok v2", "app.health.timeout": 4},
    )
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 5, res.stdout + res.stderr
    assert b"only-for-the-new-release" not in app_env(at_v2)
    assert app_env(at_v2) == env
    assert whole_state(at_v2) == before
    shared = at_v2.deploy_to / "shared" / "env"
    assert shared.is_symlink() and os.readlink(shared) == "../current/.seed-env"
    own = at_v2.deploy_to / "current" / ".seed-env"
    assert own.stat().st_mode & 0o777 == 0o600
