"""seed.run.operation: what a failed step means for the exit code, by the kind of run
(against the session sandbox's real sshd and PostgreSQL)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from seed.config.environment import Environment
from seed.errors import PreflightFailed, StepFailed
from seed.run.context import RunContext
from seed.run.operation import Operation
from seed.run.report import Output, Scrubber


def failing_run(
    env: Environment, tmp_path: Path, read_only: bool, changes: bool
) -> type[Operation]:
    class Failing(Operation):
        kind = "validate" if read_only else "backup"

        def body(self) -> str:
            with self.step("work"):
                raise StepFailed("the work failed")

    Failing.read_only = read_only
    Failing.changes_environment = changes
    return Failing


@pytest.mark.parametrize(
    ("read_only", "changes", "code"),
    [(True, True, 4), (False, False, 4), (False, True, 6)],
    ids=["read-only", "changes-nothing", "changes-the-environment"],
)
def test_a_failed_step_is_preflight_only_where_nothing_changed(
    sandbox_env: Environment, tmp_path: Path, read_only: bool, changes: bool, code: int
) -> None:
    """A run that changes nothing of the environment (a read-only command, a backup)
    leaves it as it was when a step fails: exit 4. One that changes it cannot say so by
    itself: StepFailed's 6, a person must look (never 1, a bug's code)."""
    op_class = failing_run(sandbox_env, tmp_path, read_only, changes)
    stream = io.StringIO()
    out = Output("local", Scrubber(), stream, plain=True)
    op = op_class(RunContext(sandbox_env, "test", tmp_path, out))
    with pytest.raises(StepFailed if code == 6 else PreflightFailed) as failed:
        op.run()
    assert failed.value.code == code
    assert "the work failed" in str(failed.value)
    assert op.report.exit_code == code, stream.getvalue()
