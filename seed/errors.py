"""User-facing failures as types, each carrying its exit code (DESIGN: Exit codes).

Raise these from the core; the task layer converts them once, at the edge, into
one line on stderr and the process exit code. `SeedError` itself is only a base: its
code 1 is the exit code of a bug, so a failure the user can act on raises a subclass
(tests/unit/test_structure.py checks that nothing raises the base).
"""

from __future__ import annotations


class SeedError(Exception):
    """Base of every failure Seed reports to a user. `code` is the process exit code."""

    code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(SeedError):
    """Usage or configuration error found without contacting any server."""

    code = 2


class Refused(SeedError):
    """A protected action was not confirmed (no TTY and no --yes)."""

    code = 2


class LockHeld(SeedError):
    """The environment's lock is held by another live deploy."""

    code = 3


class Frozen(LockHeld):
    """The environment is frozen for deploys (`freeze --reason`): upgradedb refuses until
    `unfreeze`; rollback stays allowed."""


class PreflightFailed(SeedError):
    """Pre-flight failed or was refused; nothing was changed."""

    code = 4


class JournalUnwritable(PreflightFailed):
    """The record of a step could not be written before the step: it does not start
    (a run whose progress is not on record could not be recovered if it died)."""


class RolledBack(SeedError):
    """The deploy failed and the environment was verified back to the before-state."""

    code = 5


class HumanNeeded(SeedError):
    """The deploy failed and the environment could not be verified back: a person must look."""

    code = 6


class LockLost(HumanNeeded):
    """The run's lock was lost to another run: it stopped without changing anything more."""


class StepFailed(SeedError):
    """A step could not do its work: a remote command, a restore, a verification, a hook.

    The run it belongs to says what that means for the environment: a deploy rolls back
    (RolledBack, or HumanNeeded when the way back fails), a copy or an import drops what
    it built (RolledBack), and a run that changes nothing of the environment (a backup, a
    read-only command) is PreflightFailed (nothing changed). One that escapes a run
    changing the environment keeps this code, HumanNeeded's: the report says where it
    stopped. Never code 1, which is kept for bugs."""

    code = 6


class ChecksFailed(SeedError):
    """A read-only command's checks failed; nothing was changed."""

    code = 7


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a run: it records `interrupted` and stops at once (never
    a restore started from a signal). A BaseException, so no `except Exception` on the way
    out undoes or rolls back anything: the interrupted run is recovery pending, like a
    killed one. Exit code 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.name = signal.Signals(signum).name
        self.detail = ""  # what the run's record says (where it stopped, what to do)
        super().__init__(f"interrupted by {self.name}")

    @property
    def code(self) -> int:
        return 128 + self.signum
