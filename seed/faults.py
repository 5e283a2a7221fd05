"""Named fault points for the fault-injection matrix (tests/faults/).

`SEED_FAULT=kill@<point>` makes the process SIGKILL itself when it reaches
`<point>`: exactly what `kill -9` of `fab`, an OOM kill or a lost CI runner does
there, at a point the test chooses instead of a moment it guesses.
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
import time

ENV = "SEED_FAULT"


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
    elif action == "stall":
        time.sleep(float(os.environ.get("SEED_FAULT_SECONDS", "5")))
