"""Write-ahead: a step whose journal record cannot be written does not start (issue 18, 6).

The state host's journal folder is replaced by a file from a hook in the middle of a
real deploy (a real write error over SFTP, also as root). Before the backup the
deploy stops with nothing changed (exit 4); after it, it rolls back (exit 5); a
final record the state host refuses is kept on the control machine and the next
run puts it there instead of reporting a false "recovery pending".
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import whole_state


def break_journal(dep: Deployment) -> str:
    """A hook command that puts a file where the journal folder is (idempotent)."""
    journal = shlex.quote(str(dep.state_dir / "journal"))
    away = shlex.quote(str(dep.state_dir / "journal.away"))
    return f"if [ -d {journal} ]; then mv {journal} {away} && touch {journal}; fi"


@pytest.fixture
def journal_repaired(at_v2: Deployment) -> Iterator[Path]:
    journal = at_v2.state_dir / "journal"
    yield journal
    away = at_v2.state_dir / "journal.away"
    if away.is_dir():
        if journal.is_file():
            journal.unlink()
        away.rename(journal)


def state_host_record(journal: Path, run_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((journal / f"{run_id}.json").read_text())
    return data


def repair(journal: Path) -> None:
    away = journal.parent / "journal.away"
    journal.unlink()
    away.rename(journal)


def test_a_step_whose_record_cannot_be_written_does_not_start(
    at_v2: Deployment, journal_repaired: Path
) -> None:
    before = whole_state(at_v2)
    hook = {"run": break_journal(at_v2), "on": "local"}
    envdir = at_v2.variant("journal-gone-early", {"hooks": {"maintenance_on": {"after": hook}}})
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 4, res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "refused at pre-flight" in last and "nothing changed" in last
    assert "journal record before step 'before-state' could not be written" in last
    report = at_v2.last_report()
    steps = {s["name"]: s["outcome"] for s in report["steps"]}
    assert steps["before-state"] == "failed" and "backup" not in steps
    repair(journal_repaired)
    assert whole_state(at_v2) == before
    # the state host has the run as `running`; this machine kept its end: the next run
    # puts it there instead of refusing with "recovery pending"
    assert state_host_record(journal_repaired, report["deploy_id"])["outcome"] == "running"
    res = at_v2.fab("local", "history")
    assert res.returncode == 0, res.stderr
    res = at_v2.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"final record of {report['deploy_id']}" in res.stderr
    assert state_host_record(journal_repaired, report["deploy_id"])["outcome"] == "failed"


def test_after_the_backup_an_unwritable_journal_rolls_back(
    at_v2: Deployment, journal_repaired: Path
) -> None:
    before = whole_state(at_v2)
    hook = {"run": break_journal(at_v2), "on": "local"}
    envdir = at_v2.variant("journal-gone-migrate", {"hooks": {"migrate": {"before": hook}}})
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 5, res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "failed at post checks: the journal record before step 'post checks'" in last
    assert last.endswith("rolled back; verified identical")
    repair(journal_repaired)
    assert whole_state(at_v2) == before


def test_a_final_record_the_state_host_refused_is_not_a_false_recovery(
    at_v2: Deployment, journal_repaired: Path
) -> None:
    before = whole_state(at_v2)
    hook = {"run": break_journal(at_v2), "on": "local"}
    envdir = at_v2.variant("journal-gone-late", {"hooks": {"maintenance_off": {"after": hook}}})
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the final journal record of" in res.stderr
    run_id = at_v2.last_report()["deploy_id"]
    repair(journal_repaired)
    assert state_host_record(journal_repaired, run_id)["outcome"] == "running"
    # an ordinary rollback of a deploy that succeeded, not a recovery of a dead one
    res = at_v2.fab("local", "rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recovered interrupted" not in res.stderr
    assert f"rolled back deploy {run_id}" in res.stderr
    assert whole_state(at_v2) == before
