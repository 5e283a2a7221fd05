"""Ctrl-C (SIGINT) of `fab` at every step of a deploy, then recovery (issue 18, defect 3).

SIGINT used to be a KeyboardInterrupt recorded as a plain `failed`: nothing was
"recovery pending" and the next deploy ran on a half-migrated database. Now the run
records `interrupted` at once and stops (no restore started from a signal); what
follows is exactly what follows a SIGKILL (tests/faults/test_kill.py).
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Deployment
from tests.faults.test_kill import KILL_POINTS, stopped_then_recovered


@pytest.mark.parametrize(("point", "expect"), KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_sigint_of_fab(at_v2: Deployment, point: str, expect: str) -> None:
    stopped_then_recovered(at_v2, "int", point, expect)
