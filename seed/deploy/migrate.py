"""Django migrations on the `migrate` host: read the plan (read-only), apply as a remote job.

Planning never changes the database: `migration_state` asks Django's own loader,
through a small script run with the release's virtualenv and settings.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from seed.config.environment import Environment
from seed.deploy.release import Layout, source_env
from seed.errors import PreflightFailed, StepFailed
from seed.remote.ssh import Remote, RemoteJob, q


@dataclass
class MigrationState:
    applied: list[tuple[str, str]]
    plan: list[dict[str, Any]]
    unknown_applied: list[tuple[str, str]] = field(default_factory=list)
    reverse: dict[str, Any] = field(default_factory=dict)  # targets in this graph, or why not

    @property
    def pending(self) -> list[str]:
        return [f"{m['app']}.{m['name']}" for m in self.plan]


def _with_env(layout: Layout, release_path: str, env_name: str, app_name: str) -> str:
    """Shell prefix: cd into the release and load its env file (secrets stay in the file)."""
    return (
        f"cd {q(release_path)} && {source_env(layout, release_path)} && "
        f"export PGAPPNAME={q(app_name)} && "
    )


def migration_state(
    remote: Remote,
    layout: Layout,
    release_path: str,
    env: Environment,
    app_name: str,
    with_sql: bool = False,
) -> MigrationState:
    """Applied migrations and the forward plan of the release at `release_path`; with
    `with_sql`, each planned migration also carries its SQL (as `sqlmigrate` prints it),
    its file and the line of each operation (for lint)."""
    script = resources.files("seed.remote.scripts").joinpath("django_state.py").read_bytes()
    script_path = posixpath.join(release_path, ".seed-django-state.py")
    remote.put_bytes(script, script_path, mode=0o600)
    res = remote.run(
        _with_env(layout, release_path, env.name, app_name)
        + f".venv/bin/python {q(script_path)}"
        + (" --sql" if with_sql else ""),
        timeout=300,
    )
    remote.run(f"rm -f {q(script_path)}")
    if not res.ok:
        raise PreflightFailed(f"reading the migration plan on {remote.label} failed: {res.tail(3)}")
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise PreflightFailed(
            f"reading the migration plan on {remote.label}: unexpected output {res.stdout[:200]!r}"
        ) from None
    if data["conflicts"]:
        names = "; ".join(f"{a}: {', '.join(n)}" for a, n in data["conflicts"].items())
        raise PreflightFailed(f"the release has conflicting migrations ({names}); merge them first")
    return MigrationState(
        applied=[(a, n) for a, n in data["applied"]],
        plan=data["plan"],
        unknown_applied=[(a, n) for a, n in data["unknown_applied"]],
        reverse=data.get("reverse") or {},
    )


@dataclass
class MigrateOutcome:
    exit_code: int
    output: str
    attempts: int
    seconds: float


def apply_migrations(
    env: Environment,
    remote: Remote,
    layout: Layout,
    release_path: str,
    job_dir: str,
    app_name: str,
    on_output: Callable[[str], None] | None = None,
    on_start: Callable[[RemoteJob], None] | None = None,
    on_lost: Callable[[], None] | None = None,
    targets: dict[str, str] | None = None,
    on_retry: Callable[[], object] | None = None,
) -> MigrateOutcome:
    """`manage.py migrate --noinput` as a remote job with lock_timeout and bounded retries
    (`on_retry` runs before each retry: e.g. dropping the INVALID index a timed-out
    CREATE INDEX CONCURRENTLY left, which would make the retry fail); with `targets` (app
    -> migration or `zero`), `migrate <app> <target>` per app instead: the reverse of a
    deploy, run with its (new) code.

    Each Django migration on PostgreSQL is its own transaction, so retrying after a
    lock timeout continues where the failed attempt stopped.
    """
    started = time.monotonic()
    pgoptions = f"-c lock_timeout={env.db.lock_timeout}"
    commands = [".venv/bin/python manage.py migrate --noinput"]
    if targets is not None:
        commands = [f"{commands[0]} {q(app)} {q(to)}" for app, to in sorted(targets.items())]
    script = (
        "set -euo pipefail\n"
        + _with_env(layout, release_path, env.name, app_name)
        + f"export PGOPTIONS={q(pgoptions)}\n"
        + "\n".join(commands)
        + "\n"
    )
    output: list[str] = []
    attempts = 0
    code = 1
    while attempts <= env.db.lock_retries:
        attempts += 1
        job = RemoteJob.start(remote, f"{job_dir}-{attempts}", script)
        if on_start:
            on_start(job)
        code, out = job.wait(on_output=on_output, timeout=None, on_lost=on_lost)
        output.append(out)
        if code == 0 or "lock timeout" not in out or attempts > env.db.lock_retries:
            break
        time.sleep(min(2**attempts, 10))
        if on_retry is not None:
            on_retry()
    return MigrateOutcome(code, "".join(output), attempts, time.monotonic() - started)


def reverse_migrations(
    env: Environment,
    remote: Remote,
    layout: Layout,
    release_path: str,
    job_dir: str,
    app_name: str,
    targets: dict[str, str],
    on_output: Callable[[str], None] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> MigrateOutcome:
    """`migrate <app> <target>` per app with the code at `release_path` (the deploy's own):
    the outcome, or SeedError naming Django's last line when it fails."""
    outcome = apply_migrations(
        env,
        remote,
        layout,
        release_path,
        job_dir,
        app_name,
        on_output=on_output,
        on_lost=on_lost,
        targets=targets,
    )
    if outcome.exit_code != 0:
        last = [ln for ln in outcome.output.strip().splitlines() if ln.strip()]
        raise StepFailed(
            f"reverse migrate failed (exit {outcome.exit_code}): {last[-1] if last else ''}"
        )
    return outcome
