"""SIGTERM of `fab` during a deploy, and what a cancelled CI job sends (SIGINT, SIGTERM
7.5 s later, SIGKILL 2.5 s after that), then recovery (issue 18, defect 3).

SIGTERM and SIGINT reach the run through one handler (seed.run.operation: both raise
Interrupted), so SIGINT goes through every step (test_sigint.py) and SIGTERM through one
point of each kind: a remote job running (recovered to the old state), the database
migrated and checked (the new state), the app restarted (the old state).
A run records `interrupted` within a second of the first signal and stops, so the CI
sequence never gets past its SIGINT (the exit code says so: 130, not -15 or -9).
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Deployment
from tests.faults.test_kill import KILL_POINTS, stopped_then_recovered

# one point of each kind, the same for SIGTERM and a CI cancel
POINTS = [
    ("migrate job started", "old"),
    ("after post checks", "new"),
    ("after restart", "old"),
]
assert all(point in KILL_POINTS for point in POINTS)  # (point, expected state) pairs


@pytest.mark.parametrize(("point", "expect"), POINTS, ids=[p for p, _ in POINTS])
def test_sigterm_of_fab(at_v2: Deployment, point: str, expect: str) -> None:
    stopped_then_recovered(at_v2, "term", point, expect)


@pytest.mark.parametrize(("point", "expect"), POINTS, ids=[p for p, _ in POINTS])
def test_ci_cancel_of_fab(at_v2: Deployment, point: str, expect: str) -> None:
    stopped_then_recovered(at_v2, "cancel", point, expect)
