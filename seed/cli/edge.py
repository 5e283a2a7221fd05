"""Where the task layer meets the user: environment selection, confirmation, exit codes.

Core errors (seed.errors) become one line on stderr and their exit code here, once.
Anything else is a bug: one line plus the path of the full traceback (exit 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from seed.config.environment import (
    Environment,
    environments_dir,
    list_environments,
    load_environment,
    local_user,
)
from seed.errors import ConfigError, Interrupted, Refused, SeedError
from seed.run.context import RunContext
from seed.run.operation import Operation
from seed.run.report import Output, Scrubber, redact_credentials, scrub_known, utcnow

F = TypeVar("F", bound=Callable[..., Any])


# the only short flags, the same letter in every task that has the option (none is `-h`)
SHORT_FLAGS = {"ref": "r", "yes": "y", "wait": "w", "json": "j"}


class SeedTask(Task[Any]):
    """A task whose short flags come from SHORT_FLAGS, not from each option's first free
    letter (which gave --ref `-r` in one task and --report `-r` in another)."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        opts["names"] = opts["names"][:1]
        short = SHORT_FLAGS.get(name.rstrip("_"))
        if short:
            opts["names"].append(short)
        return opts


# the help of the options many tasks share, written once (a task may say it its own way)
COMMON_HELP = {
    "report": "also write the JSON report to this path",
    "yes": "confirm on a protected environment without asking (for CI)",
    "wait": "wait up to SECONDS for the environment's lock instead of exiting 3",
}


def task(**kwargs: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    """invoke's `@task(...)`, making SeedTasks; COMMON_HELP for the options it names."""

    def decorate(body: Callable[..., Any]) -> Task[Any]:
        names = inspect.signature(body).parameters
        common = {k: v for k, v in COMMON_HELP.items() if k in names}
        options = {**kwargs, "help": {**common, **kwargs.get("help", {})}}
        made: Task[Any] = invoke_task(klass=SeedTask, **options)(body)
        return made

    return decorate


def project_root() -> Path:
    """The app repository Seed works in: the working directory. Its `environments/`
    (or SEED_ENVIRONMENTS), `.seed/` (or SEED_HOME), `deploy/` and import mappings are
    found from here, never next to Seed's own code (which may be in site-packages)."""
    return Path.cwd()


def default_sandbox_dir() -> str:
    """Root's sandbox is /var/tmp/seed-sandbox; other users get their own, so they never
    collide with a directory another user owns."""
    user = local_user() or f"uid{os.getuid()}"
    return "/var/tmp/seed-sandbox" if user == "root" else f"/var/tmp/seed-sandbox-{user}"


def load_named(name: str) -> Environment:
    """`environments/<name>.yml` (or under SEED_ENVIRONMENTS). The sandbox's local.yml
    reads ${SEED_SANDBOX_DIR}: it gets the per-user default here, when a file is loaded
    (importing the task layer changes nothing)."""
    os.environ.setdefault("SEED_SANDBOX_DIR", default_sandbox_dir())
    return load_environment(name, environments_dir(project_root()))


def local_root() -> Path:
    """The control machine's state: `.seed/` (mirror of journals, reports, caches, logs)."""
    return Path(os.environ.get("SEED_HOME", project_root() / ".seed"))


def user_errors(func: F) -> F:
    """Convert SeedError into Exit(message, code); unexpected errors into a logged exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exit:  # a task's own exit code (manage passes the command's through)
            raise
        except SeedError as exc:
            raise Exit(scrub_known(f"seed: {exc}"), exc.code) from None
        except Interrupted as exc:
            raise Exit(scrub_known(f"seed: {exc.detail or exc}"), exc.code) from None
        except KeyboardInterrupt:
            raise Exit("seed: interrupted", 130) from None
        except Exception as exc:
            name = type(exc).__name__
            path = local_root() / "logs" / f"crash-{utcnow():%Y%m%dT%H%M%S%f}.log"
            try:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                path.touch(mode=0o600)
                path.write_text(scrub_known(traceback.format_exc()))
            except OSError as why:  # e.g. the disk is full: still one line, no traceback
                raise Exit(
                    scrub_known(
                        f"seed: internal error ({name}: {exc}); the log could not be written "
                        f"to {path}: {why.strerror}"
                    ),
                    1,
                ) from None
            raise Exit(f"seed: internal error ({name}); full log: {path}", 1) from None

    return wrapper  # type: ignore[return-value]


def _selector(name: str, path: Path) -> Task[Any]:
    def select(c: Context, accept_new_host_keys: bool = False) -> None:
        c.config.seed_env = name
        c.config.seed_accept_new_host_keys = accept_new_host_keys

    select.__doc__ = f"Select the '{name}' environment ({path})."
    return SeedTask(
        select,
        name=name,
        help={
            "accept-new-host-keys": "first contact: add unknown hosts' keys to known_hosts "
            "(recorded in the report); changed keys are still refused"
        },
    )


def environment_tasks() -> list[Task[Any]]:
    """One task per `environments/*.yml` file name; only the selected file is parsed later."""
    directory = environments_dir(project_root())
    return [_selector(name, directory / f"{name}.yml") for name in list_environments(directory)]


def environments_here() -> str:
    """What an unknown first word is not, for the error line: the environments found."""
    directory = environments_dir(project_root())
    names = list_environments(directory)
    if names:
        return f"neither a task nor an environment of {directory} ({', '.join(names)})"
    return f"not a task, and {directory} has no environment files (run Seed in the app repository)"


def selected_name(c: Context) -> str:
    """The environment chosen by a preceding `seed <env>`; none → exit 2."""
    name = c.config.get("seed_env")
    if not name:
        names = ", ".join(list_environments(environments_dir(project_root()))) or "none found"
        raise ConfigError(
            f"no environment selected: run `seed <environment> <task>` (environments: {names})"
        )
    return str(name)


def private_files() -> None:
    """What a command writes on this machine is its user's alone (files 0600, folders
    0700), as on the state host: reports hold check baselines, the journal mirror
    command lines, imports rejected rows with e-mail addresses, the repository cache a
    fetched URL. `.seed/` made by an older Seed is closed too."""
    os.umask(0o077)
    root = local_root()
    with contextlib.suppress(OSError):
        if root.is_dir() and root.stat().st_uid == os.geteuid():
            root.chmod(0o700)


def selected_environment(c: Context) -> Environment:
    """Load the environment chosen by a preceding `seed <env>`; none → exit 2. From here
    on the command's files are private (private_files)."""
    private_files()
    name = selected_name(c)
    env = load_named(str(name))
    if c.config.get("seed_accept_new_host_keys"):
        env = dataclasses.replace(env, ssh=dataclasses.replace(env.ssh, accept_new=True))
    return env


def output_for(env: Environment) -> Output:
    """Progress output for `env`, scrubbed of its secrets."""
    return Output(env.name, Scrubber(env.secrets()))


def command_line() -> str:
    """The command line as typed (recorded in the lock, the journal and the report), a
    password written into a URL or `password=` in it as `***`."""
    return redact_credentials("fab " + " ".join(shlex.quote(a) for a in sys.argv[1:]))


def report_path(report: str) -> Path | None:
    """`--report PATH`, checked writable before anything runs (exit 2 otherwise)."""
    if not report:
        return None
    path = Path(report).expanduser().resolve()
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK) or path.is_dir():
        raise ConfigError(
            f"--report {report}: cannot write there (no such directory, or not writable)"
        )
    return path


def wait_seconds(value: int) -> float:
    """`--wait SECONDS` for the environment's lock."""
    if value < 0:
        raise ConfigError("--wait takes a number of seconds >= 0")
    return float(value)


def run_context(
    env: Environment, report: str = "", wait: int = 0, out: Output | None = None
) -> RunContext:
    """The one context a command line hands its run (options checked here, exit 2)."""
    return RunContext(
        env=env,
        command=command_line(),
        local_root=local_root(),
        out=out or output_for(env),
        report_path=report_path(report),
        lock_wait=wait_seconds(wait),
    )


def run_printing(run: Operation, json_: bool = False) -> None:
    """`run.run()`; with `--json`, the scrubbed report on stdout whatever the outcome
    (progress stays on stderr)."""
    try:
        run.run()
    finally:
        if json_ and run.report.outcome != "running":
            print(json.dumps(run.out.scrub.data(run.report.to_json()), indent=2, default=str))


def confirm_protected(env: Environment, action: str, yes: bool) -> None:
    """On protected environments ask to type the name; no TTY and no --yes → refuse (exit 2)."""
    if env.protected:
        confirm(env, action, yes, f"{env.name} is protected")


def confirm(env: Environment, action: str, yes: bool, why: str) -> None:
    """Ask to type the environment's name (`why` says why); no TTY and no --yes → exit 2."""
    if yes or os.environ.get("SEED_ASSUME_YES", "") in ("1", "true", "yes"):
        return
    if not sys.stdin.isatty():
        raise Refused(
            f"{why}: {action} needs confirmation; pass --yes "
            "(or SEED_ASSUME_YES=1) when running without a terminal"
        )
    try:
        answer = input(f"{why}. Type {env.name!r} to {action}: ").strip()
    except EOFError:  # Ctrl-D, or the terminal went away
        answer = ""
    if answer != env.name:
        raise Refused(f"confirmation did not match {env.name!r}; nothing done")
