"""gunicorn settings for the example shop (`appctl` passes `--config` with this file's path
through `current`, `<deploy_to>/current/deploy/gunicorn.conf.py`).

The master reads it at start and again on every HUP (`appctl reload`), each time from the
release `current` points at then; workers are forked after, so they see what it set:

- the app's environment: `<deploy_to>/shared/env` (KEY='value' lines in shell quoting,
  written by Seed) goes into os.environ, so the workers of a reload see the new release's
  values; keys a previous load set and the file no longer has are removed. (The master's
  own environment was read once, when `appctl start` launched it.)
- readiness: a worker that has loaded the app writes `shared/gunicorn.ready/<its pid>`
  holding its master's pid; the master removes it when the worker exits. `appctl reload`
  waits for them.
- re-exec (USR2, when the virtualenv changed): gunicorn would exec `sys.executable` with
  `sys.argv`, and under `python -m gunicorn` sys.argv[0] is the path of gunicorn's
  `__main__.py`: run as a script, its folder would come first on sys.path and shadow the
  standard library (gunicorn has an `http` package). `pre_exec` makes the new master run
  `<deploy_to>/current/.venv/bin/python -m gunicorn` with the same arguments, from deploy_to:
  the new release's virtualenv, gunicorn and code.

The master never imports the app (no preload_app): a HUP would otherwise keep the old code.
Command-line options win over the settings here.
"""

import os
import shlex
import sys

# Not resolved: this file is read through `current`, and so is everything derived from it.
DEPLOY_TO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV_FILE = os.path.join(DEPLOY_TO, "shared", "env")
READY_DIR = os.path.join(DEPLOY_TO, "shared", "gunicorn.ready")
# Which keys the last load of ENV_FILE set (inherited by a re-exec'd master).
KEYS_VARIABLE = "APPCTL_ENV_KEYS"

preload_app = False


def read_env_file(path: str) -> dict[str, str]:
    """KEY='value' lines as a shell reads them (`export ` allowed, # comments, blank lines)."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            words = shlex.split(line, comments=True)
            if words[:1] == ["export"]:
                words = words[1:]
            if not words:
                continue
            key, sep, value = words[0].partition("=")
            if len(words) != 1 or not sep or not key.isidentifier():
                raise ValueError(f"{path}:{number}: not a KEY='value' line")
            values[key] = value
    return values


def load_env() -> None:
    """ENV_FILE into os.environ. A file that cannot be read leaves the environment as it was:
    an exception here would make the master exit on HUP (appctl checks the release first)."""
    try:
        values = read_env_file(ENV_FILE)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(
            f"gunicorn.conf.py: {ENV_FILE} not loaded, environment unchanged: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return
    for key in os.environ.get(KEYS_VARIABLE, "").split(","):
        if key and key not in values:
            os.environ.pop(key, None)
    os.environ.update(values)
    os.environ[KEYS_VARIABLE] = ",".join(values)


load_env()


def post_worker_init(worker) -> None:
    """The worker has imported the app: tell appctl (shared/gunicorn.ready/<pid> = master pid)."""
    os.makedirs(READY_DIR, exist_ok=True)
    path = os.path.join(READY_DIR, str(os.getpid()))
    with open(f"{path}.tmp", "w", encoding="ascii") as f:
        f.write(f"{worker.ppid}\n")
    os.replace(f"{path}.tmp", path)


def child_exit(server, worker) -> None:
    """In the master, when a worker has exited: it no longer serves."""
    try:
        os.unlink(os.path.join(READY_DIR, str(worker.pid)))
    except FileNotFoundError:
        pass


def pre_exec(server) -> None:
    """In the forked master, just before a re-exec (USR2): what to exec, where, with what."""
    python = os.path.join(DEPLOY_TO, "current", ".venv", "bin", "python")
    server.START_CTX[0] = python
    server.START_CTX["args"] = [python, "-m", "gunicorn", *sys.argv[1:]]
    # the release the master started in may be pruned by now
    server.START_CTX["cwd"] = DEPLOY_TO
    # the new master's environment: this one's (its config file then loads ENV_FILE again)
    server.cfg.env_orig = os.environ.copy()
