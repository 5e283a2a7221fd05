"""The fault matrix shares the end-to-end sandbox and prints what each fault led to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import bring_to_v2
from tests.faults.matrix import MATRIX


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MATRIX:
        return
    write = terminalreporter.write_line
    write("")
    write("fault matrix (fault -> outcome after recovery, recovery time)")
    width = max(len(row.fault) for row in MATRIX)
    for row in MATRIX:
        write(f"  {row.fault:<{width}}  {row.outcome:<48} {row.recovery:7.1f}s  {row.how}")


@pytest.fixture(autouse=True)
def _no_fault_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEED_FAULT", raising=False)


@pytest.fixture(scope="package")
def at_v2(deployment: Deployment) -> Iterator[Deployment]:
    """v1 then v2 deployed, with database-level properties a restore must carry over. Every
    fault test leaves the environment in this state again (that is what it checks)."""
    bring_to_v2(deployment)
    yield deployment


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _recover_after_a_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed fault test may leave its fault unrecovered: start the next test from a
    fresh v2 all the same, so that its failures are its own."""
    yield
    if request.node.stash.get(FAILED, False) and "at_v2" in request.fixturenames:
        bring_to_v2(request.getfixturevalue("at_v2"))
