"""seed.journal.recovery: what counts as an interrupted run, and what of it still lives."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

from seed.journal.record import RunRecord
from seed.journal.recovery import RunState, control_process, unfinished


def record(**kw: Any) -> RunRecord:
    base = {
        "deploy_id": "20261127T101010Z-abcd",
        "kind": "upgradedb",
        "who": "ci@runner",
        "command": "fab staging upgradedb",
        "started_at": "2026-11-27T10:10:10Z",
        "outcome": "running",
        "steps": [],
    }
    return RunRecord.from_json({**base, **kw})


def started(pid: int, marker: bytes) -> None:
    """Until the child has exec'd its program (before, /proc shows the parent's)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if marker in fh.read():
                return
        time.sleep(0.01)


def test_unfinished_runs() -> None:
    assert unfinished(record())
    assert unfinished(record(outcome="rollback failed"))
    assert not unfinished(record(outcome="rollback failed", recovered_by="x"))
    assert not unfinished(record(outcome="rollback failed", kind="rollback"))
    # stopped by SIGINT/SIGTERM: recovery pending until a later run recovered it
    assert unfinished(record(outcome="interrupted"))
    assert not unfinished(record(outcome="interrupted", recovered_by="x"))
    for outcome in ("succeeded", "failed", "rolled back"):
        assert not unfinished(record(outcome=outcome))


def test_where_a_run_died() -> None:
    assert RunState(record()).where() == "before its first step"
    running = record(
        steps=[{"name": "backup", "outcome": "ok"}, {"name": "migrate", "outcome": "running"}]
    )
    assert RunState(running).where() == "during step 'migrate'"
    done = record(steps=[{"name": "post checks", "outcome": "ok"}])
    assert RunState(done).where() == "after step 'post checks' (ok)"
    text = RunState(running).describe()
    assert text.startswith("upgradedb 20261127T101010Z-abcd (ci@runner, 'fab staging upgradedb'")
    assert text.endswith("died during step 'migrate'")
    failed = RunState(record(outcome="rollback failed")).describe()
    assert failed.endswith("failed and its rollback failed (exit 6)")


def test_control_process_is_alive_only_when_it_is_really_there() -> None:
    here = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started(child.pid, b"time.sleep")
    try:
        alive = control_process(record(control={"host": here, "pid": child.pid}).control)
        assert alive == f"pid {child.pid} on {here}"
        # another machine's pid cannot be looked at from here
        elsewhere = record(control={"host": "elsewhere", "pid": child.pid})
        assert control_process(elsewhere.control) == ""
        # our own process is never "the other run"
        assert control_process(record(control={"host": here, "pid": os.getpid()}).control) == ""
    finally:
        child.kill()
        child.wait()
    assert control_process(record(control={"host": here, "pid": child.pid}).control) == ""
    # a pid reused by something that is not Python/fab does not count
    sleeper = subprocess.Popen(["sleep", "30"])
    started(sleeper.pid, b"sleep")
    try:
        assert control_process(record(control={"host": here, "pid": sleeper.pid}).control) == ""
    finally:
        sleeper.kill()
        sleeper.wait()
