"""Which deploy `rollback` undoes (seed/commands/rollback.py: choose_target)."""

from __future__ import annotations

from typing import Any

import pytest

from seed.commands.rollback import choose_target
from seed.errors import PreflightFailed
from seed.journal.record import RunRecord


def record(rid: str, kind: str = "upgradedb", outcome: str = "succeeded", **more: Any) -> RunRecord:
    return RunRecord.from_json({"deploy_id": rid, "kind": kind, "outcome": outcome, **more})


def test_the_newest_successful_deploy() -> None:
    records = [record("a"), record("b"), record("c", outcome="failed")]
    assert choose_target(records, None).deploy_id == "b"


def test_a_copy_since_the_deploy_refuses_it() -> None:
    records = [record("a"), record("b"), record("k", kind="copy", source="production")]
    with pytest.raises(
        PreflightFailed, match="copy k replaced the database with a copy of production"
    ):
        choose_target(records, None)
    with pytest.raises(PreflightFailed, match="deploy a cannot be rolled back"):
        choose_target(records, "a")


def test_a_failed_copy_changed_nothing_and_does_not_refuse() -> None:
    records = [record("a"), record("k", kind="copy", outcome="failed")]
    assert choose_target(records, None).deploy_id == "a"


def test_a_deploy_after_the_copy_can_be_rolled_back() -> None:
    records = [record("a"), record("k", kind="copy"), record("b")]
    assert choose_target(records, None).deploy_id == "b"


def test_a_copy_that_died_after_its_swap_refuses_too() -> None:
    records = [record("a"), record("k", kind="copy", outcome="interrupted", replaced_database="x")]
    with pytest.raises(PreflightFailed, match="copy k"):
        choose_target(records, None)
