"""The sandbox: real PostgreSQL, sshd and git origin on this machine (`environments/local.yml`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from sandbox.local import bring_up, spec_for
from sandbox.servers import SandboxSpec, sandbox_down, sandbox_status
from seed.cli.edge import default_sandbox_dir, load_named, user_errors
from seed.config.environment import Environment
from seed.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parent.parent  # Seed's own checkout: the sandbox is its
EXAMPLE = CHECKOUT / "example"
DEFAULT_LB_PORT = 8760
DEFAULT_REPO_TLS_PORT = 8762
DEFAULT_DB_TLS_PORT = 8763


def _port(variable: str, default: int) -> int:
    try:
        return int(os.environ.get(variable) or default)
    except ValueError:
        raise ConfigError(f"{variable}={os.environ[variable]!r} is not a port number") from None


def sandbox_spec(env: Environment, pitr: bool = False) -> SandboxSpec:
    """local.yml's servers under $SEED_SANDBOX_DIR, the balancer on $SEED_SANDBOX_LB_PORT
    (default 8760); with `pitr`, pgBackRest's TLS servers on $SEED_SANDBOX_REPO_TLS_PORT
    (8762, the repository host's) and $SEED_SANDBOX_DB_TLS_PORT (8763)."""
    root = Path(os.environ.get("SEED_SANDBOX_DIR") or default_sandbox_dir())
    lb_port = _port("SEED_SANDBOX_LB_PORT", DEFAULT_LB_PORT)
    pitr_ports = (
        (
            _port("SEED_SANDBOX_REPO_TLS_PORT", DEFAULT_REPO_TLS_PORT),
            _port("SEED_SANDBOX_DB_TLS_PORT", DEFAULT_DB_TLS_PORT),
        )
        if pitr
        else None
    )
    return spec_for(env, root, lb_port, pitr_ports)


@task(
    help={
        "pitr": "also archive the cluster's WAL into an encrypted pgBackRest repository on "
        "127.0.0.3 (backup.strategy: pitr); without it, archiving is off"
    }
)
@user_errors
def up(c: Context, pitr: bool = False) -> None:
    """Start the sandbox: PostgreSQL, sshd with keys and known_hosts, git origin, wheel cache."""
    cache = Path(os.environ.get("SEED_WHEEL_CACHE") or CHECKOUT / ".cache" / "wheels")
    for line in bring_up(sandbox_spec(load_named("local"), pitr), EXAMPLE, cache):
        print(line)


@task(help={"purge": "also delete the sandbox directory (data, keys, backups)"})
@user_errors
def down(c: Context, purge: bool = False) -> None:
    """Stop the sandbox's servers and the app (keeps data unless --purge)."""
    spec = sandbox_spec(load_named("local"))
    sandbox_down(spec, purge=purge)
    print(f"sandbox down{' and purged' if purge else ''}: {spec.root}")


@task(help={"json": "print machine-readable JSON"})
@user_errors
def status(c: Context, json_: bool = False) -> None:
    """Show what the sandbox runs: PostgreSQL, sshd, the app, ports and paths."""
    spec = sandbox_spec(load_named("local"))
    state = sandbox_status(spec)
    if json_:
        print(json.dumps(state, indent=2, default=str))
        return
    overall = "running" if state.get("running") else "stopped"
    print(f"sandbox {state['root']}: {overall}")
    for name in ("postgres", "sshd", "balancer"):
        part = state.get(name)
        if isinstance(part, dict):
            how = "running" if part.get("running") else "stopped"
            pid = f"pid {part['pid']}" if part.get("pid") else ""
            print(f"  {name:<9} {how:<8} 127.0.0.1:{part.get('port')}  {pid}")
    apps = state.get("app") or []
    if isinstance(apps, list) and apps:
        for app in apps:
            how = "running" if app.get("running") else "stopped"
            print(f"  {'app':<9} {how:<8} pid {app.get('pid')}  ({app.get('pidfile')})")
    else:
        print(f"  {'app':<9} not deployed")
