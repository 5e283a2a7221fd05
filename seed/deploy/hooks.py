"""User hooks around steps (`hooks:` in the environment file).

`before`/`after` commands run around backup, migrate, switch, restart and
maintenance on/off — on the hosts the step works on (or where `on:` says) — and
again when a rollback undoes that step, in the rollback's (reverse) order, with
`SEED_DIRECTION=rollback`. A hook that fails or outlives its timeout fails its
step. `notify` runs on the control machine after every run with its outcome;
its failure is only a warning (the outcome is decided by then).

Every hook sees: SEED_ENV, SEED_RUN_ID, SEED_KIND (upgradedb, rollback, ...),
SEED_HOOK (e.g. before_switch), SEED_DIRECTION (deploy | rollback), SEED_REF,
SEED_SHA, SEED_RELEASE (what `current` points at after the step) and
SEED_PREVIOUS_RELEASE. Remote hooks run with cwd = deploy_to (when it exists)
under `timeout`, so a hung hook is killed on its host, not just abandoned.

A `${VAR}` in a hook (or any command setting) is not pasted into its text: the host's
shell expands it from the control machine's value, sent on the command's stdin
(`Remote.run(private_env=...)`), so a token never shows in `ps` on the host, in the
hook's error message or in a report (seed.config.environment: `_Parser._command`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from seed.config.environment import Environment, Hook
from seed.errors import StepFailed
from seed.remote.ssh import Remote, RemoteError, q


class HookFailed(StepFailed):
    code = 4  # as a pre-flight step; after the backup its step's failure rolls back


def variables(env: Environment, base: Mapping[str, Any], hook_name: str) -> dict[str, str]:
    out = {"SEED_ENV": env.name, "SEED_HOOK": hook_name}
    out.update({k: "" if v is None else str(v) for k, v in base.items()})
    return out


def remote_command(
    env: Environment, hook: Hook, names: Mapping[str, str], deploy_to_path: str | None = None
) -> str:
    """The hook's command line in `deploy_to_path` (the host's deploy_to; default
    app.deploy_to), its variables exported, killed after its timeout."""
    exports = " ".join(f"{k}={q(v)}" for k, v in sorted(names.items()))
    deploy_to = q(deploy_to_path or env.app.deploy_to)
    # `timeout` kills the hook's whole process group when it hangs (-k: KILL 5 s later)
    return (
        f"{{ cd {deploy_to} 2>/dev/null || cd; }} && export {exports} && "
        f"timeout -k 5 {hook.timeout:g} bash -c {q(hook.run)}"
    )


def run_remote(env: Environment, remote: Remote, hook: Hook, names: Mapping[str, str]) -> str:
    command = remote_command(env, hook, names, env.deploy_to_of(remote.host))
    res = remote.run(command, timeout=hook.timeout + 30, private_env=env.command_values())
    if res.exit_code in (124, 137):
        raise HookFailed(
            f"hook {names['SEED_HOOK']} {hook.run!r} on {remote.label} timed out after "
            f"{hook.timeout:g}s (killed)"
        )
    if not res.ok:
        raise HookFailed(
            f"hook {names['SEED_HOOK']} {hook.run!r} on {remote.label} failed "
            f"(exit {res.exit_code}): {res.tail(2)}"
        )
    return res.stdout


def run_local(hook: Hook, names: Mapping[str, str]) -> str:
    try:
        res = subprocess.run(
            ["bash", "-c", hook.run],
            env={**os.environ, **names},
            capture_output=True,
            text=True,
            timeout=hook.timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HookFailed(
            f"hook {names['SEED_HOOK']} {hook.run!r} (local) timed out after {hook.timeout:g}s"
        ) from None
    if res.returncode != 0:
        tail = " | ".join((res.stderr.strip() or res.stdout.strip()).splitlines()[-2:])
        raise HookFailed(
            f"hook {names['SEED_HOOK']} {hook.run!r} (local) failed (exit {res.returncode}): {tail}"
        )
    return res.stdout


def targets(hook: Hook, app_hosts: Iterable[Remote], places: Mapping[str, Remote]) -> list[Remote]:
    """The hosts a hook runs on: the step's app hosts, or the migrate/db host."""
    if hook.on == "app":
        return list(app_hosts)
    return [places[hook.on]]


def describe(hooks: Iterable[Hook]) -> str:
    return ", ".join(f"{h.run!r} on {h.on}" for h in hooks)


def run_remote_or_raise(
    env: Environment, remote: Remote, hook: Hook, names: Mapping[str, str]
) -> None:
    try:
        run_remote(env, remote, hook, names)
    except RemoteError as exc:  # the connection itself failed: say which hook it was running
        raise HookFailed(f"hook {names['SEED_HOOK']} {hook.run!r}: {exc}") from None
