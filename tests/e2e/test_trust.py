"""Trust (issue 22): Seed's own correctness where a real team's setup differs from ours —
another program calling itself `seed-…`, a restore interrupted at its swap."""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.conftest import Deployment


@pytest.fixture()
def at_v1(deployment: Deployment) -> Deployment:
    deployment.reset()
    deployment.deploy("v1")
    return deployment


def test_a_deploy_ends_app_sessions_that_call_themselves_seed(at_v1: Deployment) -> None:
    """A writer of the app role named `seed-worker` is the app's like any other: the
    maintenance deploy's drain ends it (only the run's own sessions are spared)."""
    impostor = psycopg.connect(
        at_v1.sandbox.app_conninfo(), application_name="seed-worker", autocommit=True
    )
    try:
        res = at_v1.fab("local", "upgradedb", "--ref", "v2")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "1 session(s) ended" in res.stderr or "terminated 1 remaining" in res.stderr, (
            res.stderr
        )
        with pytest.raises(psycopg.OperationalError):
            impostor.execute("select 1")
    finally:
        impostor.close()
