"""Hooks around steps: run in order, again in reverse on rollback, and a failing or hanging
hook is a failed step (issue: faults, "Hooks")."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import whole_state
from tests.faults.matrix import MATRIX, Row

LOG_LINE = 'echo "$SEED_HOOK $SEED_DIRECTION $SEED_KIND" >> {log}'


def hooks_env(dep: Deployment, name: str, log: Path, **extra: object) -> Path:
    line = LOG_LINE.format(log=log)
    hooks: dict[str, object] = {
        point: {"before": line, "after": line}
        for point in ("backup", "migrate", "switch", "restart", "maintenance_on", "maintenance_off")
    }
    hooks["notify"] = f'echo "notify $SEED_OUTCOME $SEED_EXIT_CODE" >> {log}'
    hooks.update(extra)
    return dep.variant(name, {"hooks": hooks})


def test_hooks_run_around_each_step_and_in_reverse_on_rollback(
    at_v2: Deployment, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    envdir = hooks_env(at_v2, "hooks-order", log)
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "bad-data", envdir=envdir)
    assert res.returncode == 5, res.stdout + res.stderr
    assert log.read_text().splitlines() == [
        "before_maintenance_on deploy upgradedb",
        "after_maintenance_on deploy upgradedb",
        "before_backup deploy upgradedb",
        "after_backup deploy upgradedb",
        "before_migrate deploy upgradedb",
        "after_migrate deploy upgradedb",
        # post checks fail: the migrate is undone (restore), its hooks run again
        "before_migrate rollback upgradedb",
        "after_migrate rollback upgradedb",
        "before_maintenance_off rollback upgradedb",
        "after_maintenance_off rollback upgradedb",
        "notify rolled back 5",
    ]
    assert whole_state(at_v2) == before


def test_a_manual_rollback_runs_the_hooks_of_what_it_undoes(
    at_v2: Deployment, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    envdir = hooks_env(at_v2, "hooks-manual", log)
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    log.write_text("")
    res = at_v2.fab("local", "rollback", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert log.read_text().splitlines() == [
        "before_maintenance_on rollback rollback",
        "after_maintenance_on rollback rollback",
        "before_migrate rollback rollback",
        "after_migrate rollback rollback",
        "before_switch rollback rollback",
        "after_switch rollback rollback",
        "before_maintenance_off rollback rollback",
        "after_maintenance_off rollback rollback",
        "notify succeeded 0",
    ]
    assert whole_state(at_v2) == before


def test_a_failing_hook_before_the_backup_changes_nothing(
    at_v2: Deployment, tmp_path: Path
) -> None:
    envdir = at_v2.variant("hook-fails", {"hooks": {"backup": {"before": "echo nope >&2; exit 3"}}})
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "hook before_backup 'echo nope >&2; exit 3'" in res.stderr
    assert "failed (exit 3): nope" in res.stderr
    assert whole_state(at_v2) == before


def test_a_hanging_hook_is_killed_at_its_timeout_and_rolls_back(
    at_v2: Deployment, tmp_path: Path
) -> None:
    marker = f"seed-hang-{time.monotonic_ns()}"
    hang = {"run": f"exec -a {marker} sleep 600", "timeout": 2}
    envdir = at_v2.variant("hook-hangs", {"hooks": {"switch": {"after": hang}}})
    before = whole_state(at_v2)
    started = time.monotonic()
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    elapsed = time.monotonic() - started
    assert res.returncode == 5, res.stdout + res.stderr
    assert "failed at switch: hook after_switch" in res.stderr
    assert "timed out after 2s (killed)" in res.stderr
    # undoing the switch runs the hook again: it hangs again, is killed again, and the
    # rollback goes on (a warning): getting back comes first
    assert "rolled back; verified identical (while undoing, 1 hook(s) failed" in res.stderr
    assert whole_state(at_v2) == before
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False)
    assert left.returncode == 1, f"the hung hook still runs: {left.stdout!r}"
    MATRIX.append(Row("hook hangs (after_switch)", "old state, verified", elapsed, "automatic"))
