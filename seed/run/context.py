"""What the command line hands every run, once: the run context.

As invoke hands each task its `Context`, the task layer builds one `RunContext` per
command line (seed/cli/edge.py: run_context) and every operation takes it whole, so what a
run needs from its caller is said in one place, not in each command's constructor."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from seed.config.environment import Environment
from seed.run.report import Output


@dataclass(frozen=True)
class RunContext:
    env: Environment  # the environment the run works on
    command: str  # the command line as typed (recorded, with secrets scrubbed)
    local_root: Path  # the control machine's state: .seed/ (or SEED_HOME)
    out: Output  # console output, scrubbed of the environment's secrets
    report_path: Path | None = None  # --report: also write the JSON report here
    lock_wait: float = 0.0  # --wait: seconds to wait for the environment's lock

    def on(self, env: Environment, out: Output) -> RunContext:
        """The same command line's context for a run on another environment."""
        return dataclasses.replace(self, env=env, out=out, report_path=None)
