"""The sandbox: real PostgreSQL, sshd and git origin on this machine (`environments/local.yml`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from sandbox.balancer import health_path
from sandbox.origin import build_origin
from sandbox.servers import SandboxSpec, sandbox_down, sandbox_status, sandbox_up
from sandbox.wheels import ensure_wheelhouse
from seed.config.environment import Environment, environments_dir, load_environment
from seed.errors import ConfigError
from tasks.edge import REPO_ROOT, default_sandbox_dir, user_errors

EXAMPLE = REPO_ROOT / "example"
DEFAULT_LB_PORT = 8760


def sandbox_spec(env: Environment) -> SandboxSpec:
    """The servers local.yml describes: its ports and names, under $SEED_SANDBOX_DIR; the
    load balancer on $SEED_SANDBOX_LB_PORT (default 8760) in front of each app host's
    APP_BIND."""
    root = Path(os.environ.get("SEED_SANDBOX_DIR") or default_sandbox_dir())
    binds = [env.app_env_of(host).get("APP_BIND") for host in env.roles.app]
    try:
        lb_port = int(os.environ.get("SEED_SANDBOX_LB_PORT") or DEFAULT_LB_PORT)
    except ValueError:
        raise ConfigError(
            f"SEED_SANDBOX_LB_PORT={os.environ['SEED_SANDBOX_LB_PORT']!r} is not a port number"
        ) from None
    return SandboxSpec(
        root=root,
        ssh_port=env.ssh.port,
        pg_port=env.db.port,
        db_name=env.db.name,
        app_user=env.db.user,
        admin_user=env.db.admin_user,
        lb_port=lb_port,
        app_backends=tuple(b.reveal() for b in binds if b is not None),
        health_path=health_path(env.app.health.url) if env.app.health else "/",
    )


def _local() -> Environment:
    return load_environment("local", environments_dir(REPO_ROOT))


@task
@user_errors
def up(c: Context) -> None:
    """Start the sandbox: PostgreSQL, sshd with keys and known_hosts, git origin, wheel cache."""
    spec = sandbox_spec(_local())
    info = sandbox_up(spec)
    cache = Path(os.environ.get("SEED_WHEEL_CACHE") or REPO_ROOT / ".cache" / "wheels")
    ensure_wheelhouse([EXAMPLE / "v1" / "requirements.txt"], cache)
    link = spec.root / "wheels"
    if not link.is_symlink() or link.resolve() != cache.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(cache.resolve())
    tags = build_origin(EXAMPLE, spec.root / "origin.git")
    print(f"sandbox up in {spec.root}")
    print(f"  ssh        {info.ssh_user}@127.0.0.1:{spec.ssh_port} (key {info.client_key})")
    print(f"  postgres   127.0.0.1:{spec.pg_port} db {spec.db_name} (passwords in {info.pgpass})")
    if info.lb_pid:
        print(
            f"  balancer   http://127.0.0.1:{spec.lb_port}/ (HAProxy) -> "
            f"{', '.join(spec.app_backends)}; {spec.root / 'lb' / 'lbctl'} status"
        )
    print(f"  origin     {spec.root / 'origin.git'}: {', '.join(tags)}")
    print("  next       fab local upgradedb --ref v1")


@task(help={"purge": "also delete the sandbox directory (data, keys, backups)"})
@user_errors
def down(c: Context, purge: bool = False) -> None:
    """Stop the sandbox's servers and the app (keeps data unless --purge)."""
    spec = sandbox_spec(_local())
    sandbox_down(spec, purge=purge)
    print(f"sandbox down{' and purged' if purge else ''}: {spec.root}")


@task(help={"json": "print machine-readable JSON"})
@user_errors
def status(c: Context, json_: bool = False) -> None:
    """Show what the sandbox runs: PostgreSQL, sshd, the app, ports and paths."""
    spec = sandbox_spec(_local())
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
