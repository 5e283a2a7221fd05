"""The sandbox `environments/local.yml` describes: its servers' spec, and bringing them up
with the example shop's origin and wheel cache (`fab sandbox.up` is a thin call to this)."""

from __future__ import annotations

from pathlib import Path

from sandbox.balancer import health_path
from sandbox.origin import build_origin
from sandbox.pgbackrest import REPO_HOST
from sandbox.servers import SandboxSpec, sandbox_up
from sandbox.wheels import ensure_wheelhouse
from seed.config.environment import Environment


def spec_for(
    env: Environment, root: Path, lb_port: int, pitr_ports: tuple[int, int] | None = None
) -> SandboxSpec:
    """The servers `env` (local.yml) describes, under `root`: its ports and names; the load
    balancer on `lb_port` in front of each app host's APP_BIND; with `pitr_ports` (the
    repository host's and the database host's pgBackRest TLS ports) WAL archiving into an
    encrypted pgBackRest repository on 127.0.0.3 (sandbox.pgbackrest)."""
    binds = [env.app_env_of(host).get("APP_BIND") for host in env.roles.app]
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
        pitr=pitr_ports is not None,
        repo_tls_port=pitr_ports[0] if pitr_ports else 0,
        db_tls_port=pitr_ports[1] if pitr_ports else 0,
    )


def bring_up(spec: SandboxSpec, example: Path, wheel_cache: Path) -> list[str]:
    """PostgreSQL, sshd, the balancer, the wheel cache (linked as <root>/wheels) and the
    example shop's git origin; returns the lines that say where everything is."""
    info = sandbox_up(spec)
    # every release's requirements (the thirdparty release adds popular apps)
    ensure_wheelhouse(sorted(example.glob("*/requirements.txt")), wheel_cache)
    link = spec.root / "wheels"
    if not link.is_symlink() or link.resolve() != wheel_cache.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(wheel_cache.resolve())
    tags = build_origin(example, spec.root / "origin.git")
    lines = [
        f"sandbox up in {spec.root}",
        f"  ssh        {info.ssh_user}@127.0.0.1:{spec.ssh_port} (key {info.client_key})",
        f"  postgres   127.0.0.1:{spec.pg_port} db {spec.db_name} (passwords in {info.pgpass})",
    ]
    if info.lb_pid:
        lines.append(
            f"  balancer   http://127.0.0.1:{spec.lb_port}/ (HAProxy) -> "
            f"{', '.join(spec.app_backends)}; {spec.root / 'lb' / 'lbctl'} status"
        )
    if spec.pitr:
        lines.append(
            f"  pgbackrest repository on {REPO_HOST} ({spec.root / 'server' / 'repohost'}), "
            f"encrypted; WAL archived from the cluster (stanza {spec.db_name})"
        )
    lines.append(f"  origin     {spec.root / 'origin.git'}: {', '.join(tags)}")
    lines.append("  next       fab local upgradedb --ref v1")
    return lines
