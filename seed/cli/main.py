"""The `seed` command: `seed <environment> <task>` on Fabric's program machinery.

Installed as a console script (pyproject.toml: `seed = "seed.cli.main:main"`); Seed's own
checkout also keeps `fab` working through its fabfile.py, which adds the sandbox's tasks
to the same namespace. The environments are the working directory's (the app repository),
read when the program starts, never at import."""

from __future__ import annotations

import re
import shlex
import sys

from fabric import Config, Executor
from fabric.main import Fab
from invoke.collection import Collection
from invoke.exceptions import Exit, ParseError

from seed import __version__
from seed.cli import checks, copy, db, deploy, imports, init, overview
from seed.cli.edge import environment_tasks, environments_here
from seed.errors import ConfigError


def namespace() -> Collection:
    """One task per environment file (selects it), then Seed's tasks."""
    ns = Collection()
    for env_task in environment_tasks():
        ns.add_task(env_task)
    for task in (
        init.init,
        deploy.upgradedb,
        deploy.rollback,
        deploy.unlock,
        deploy.manage,
        deploy.freeze,
        deploy.unfreeze,
        checks.validate,
        copy.copy_to,
        copy.copy_rules,
        imports.import_legacy,
        overview.status,
        overview.config,
        overview.history,
        overview.plan,
        overview.lint,
        overview.rehearse,
        db.backup,
        db.backups,
        db.restore,
        db.cleanup,
    ):
        ns.add_task(task)
    return ns


# Fabric's and invoke's own core options drive Fabric connections and invoke's run(),
# which Seed does not use: `seed --dry prod upgradedb` would deploy for real. They are
# left out of `seed --help` and refused when given (`fab` in Seed's checkout keeps them).
FABRIC_ONLY = (
    "command-timeout", "config", "connect-timeout", "dry", "echo", "hide", "hosts",
    "identity", "list-agent-keys", "prompt-for-login-password", "prompt-for-passphrase",
    "prompt-for-sudo-password", "pty", "ssh-config", "warn-only", "write-pyc",
)  # fmt: skip


FABRIC_SHORT = {
    "e": "echo", "f": "config", "H": "hosts", "i": "identity", "p": "pty", "R": "dry",
    "S": "ssh-config", "t": "connect-timeout", "T": "command-timeout", "w": "warn-only",
}  # fmt: skip


def refused_fabric_option(argv: list[str]) -> str | None:
    """The message for a Fabric-only core option among the words before the first task
    (`fab --dry production upgradedb` would deploy for real), else None. For the
    checkout's `fab`, whose core options Fabric parses before the fabfile loads."""
    for word in argv:
        if not word.startswith("-") or word == "--":
            return None
        if word.startswith("--"):
            names = [word[2:].split("=", 1)[0]]
        else:
            names = [FABRIC_SHORT.get(c, "") for c in word[1:]]
        for name in names:
            if name in FABRIC_ONLY:
                return (
                    f"seed: --{name} is a Fabric option Seed does not use (see `seed --help`; "
                    "a dry run is `seed <env> plan`)"
                )
    return None


class SeedProgram(Fab):  # type: ignore[misc]  # fabric ships no type hints
    """Fabric's program; a first word that is neither an environment nor a task is a usage
    error (exit 2) naming the environments this directory has, the words after `manage`
    are the manage.py command (not further tasks), Fabric's own options are refused."""

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        super().run(manage_words(list(sys.argv if argv is None else argv)), exit)

    def parse_core_args(self) -> None:
        super().parse_core_args()
        given = [name for name in FABRIC_ONLY if self.args[name].got_value]
        if given:
            message = refused_fabric_option([f"--{given[0]}"])
            raise Exit(message, ConfigError.code)

    def print_help(self) -> None:
        """invoke's core help, without Fabric's options."""
        print(f"Usage: {self.binary} [--core-opts] [<environment>] <task> [--task-opts] ...")
        print("\nCore options:\n")
        self.print_columns(
            [
                (flags, text)
                for flags, text in self.initial_context.help_tuples()
                if not any(re.search(rf"--{name}\b(?!-)", flags) for name in FABRIC_ONLY)
            ]
        )
        self.list_tasks()

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            unknown = re.match(r"No idea what '(.+)' is!", str(exc))
            if not unknown:
                raise
            message = f"seed: {unknown.group(1)!r} is {environments_here()}"
            raise Exit(message, ConfigError.code) from None


def manage_words(argv: list[str]) -> list[str]:
    """`seed env manage showmigrations shop` → `... manage --args 'showmigrations shop'`
    (invoke would take each word for a task)."""
    # the task word, not an option's value (`--ref manage` is a branch named manage)
    at = next(
        (i for i in range(1, len(argv)) if argv[i] == "manage" and not argv[i - 1].startswith("-")),
        None,
    )
    if at is None:
        return argv
    rest = argv[at + 1 :]
    if not rest or rest[0] in ("-h", "--help") or rest[0].startswith("--args"):
        return argv
    return [*argv[: at + 1], "--args", shlex.join(rest)]


def program() -> Fab:
    """`seed`: Fabric's program with Seed's name, version and namespace (no fabfile search)."""
    return SeedProgram(
        name="Seed",
        binary="seed",
        version=__version__,
        namespace=namespace(),
        executor_class=Executor,
        config_class=Config,
    )


def main() -> None:
    program().run()
