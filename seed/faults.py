"""Named fault points for the fault-injection matrix (tests/faults/).

`SEED_FAULT=kill@<point>` makes the process SIGKILL itself when it reaches
`<point>`: exactly what `kill -9` of `fab`, an OOM kill or a lost CI runner does
there, at a point the test chooses instead of a moment it guesses.
`SEED_FAULT=int@<point>` / `term@<point>` send SIGINT / SIGTERM to the process there
(Ctrl-C, `kill`), `cancel@<point>` what a cancelled CI job sends (SIGINT, SIGTERM 7.5 s
later, SIGKILL 2.5 s after that, from another process).
`SEED_FAULT=stall@<point>` pauses there for `SEED_FAULT_SECONDS` (default 5): a
window in which a test cuts connections or restarts a server while Seed waits. Points are
`before <step>` and `after <step>` for every step of every operation (the step
names the output prints), and `<name> job started` right after a remote job
(backup, migrate, restore) was launched and before the first poll. Unset, a
point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

ENV = "SEED_FAULT"
SIGNALS = {"int": signal.SIGINT, "term": signal.SIGTERM}


def point(name: str) -> None:
    """Carry out the configured fault if `name` is the configured point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action, _, where = spec.partition("@")
    if where != name:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action in SIGNALS:
        os.kill(os.getpid(), SIGNALS[action])
    elif action == "cancel":
        # what a cancelled CI job does: SIGINT, SIGTERM 7.5 s later, SIGKILL 2.5 s after
        # that, from outside (a process of its own, as the runner is)
        pid = os.getpid()
        subprocess.Popen(  # noqa: S602 - a fixed script, the pid an int
            f"kill -INT {pid}; sleep 7.5; kill -TERM {pid} 2>/dev/null; sleep 2.5; "
            f"kill -KILL {pid} 2>/dev/null",
            shell=True,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(5)  # the SIGINT lands here
    elif action == "stall":
        time.sleep(float(os.environ.get("SEED_FAULT_SECONDS", "5")))
