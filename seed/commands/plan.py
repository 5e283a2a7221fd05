"""`fab <env> plan [--ref REF]`: what `upgradedb` would do, read from the real servers.

Nothing is changed: the target code is unpacked into a temporary folder on the
migrate host (`mktemp -d`, removed at the end, whatever happens) to ask Django's
migration loader what would be applied; its virtualenv is the deployed one for the
same requirements when it exists (used read-only through a symlink), else a
throw-away one inside the temporary folder. No lock is taken, no journal written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seed.backup import dump as backups
from seed.config.environment import Environment
from seed.db import postgres as dblib
from seed.deploy import release as rel
from seed.deploy.target import Target, fetch_target, target_plan
from seed.journal.store import Journal, lock_holder_pids, new_deploy_id
from seed.rehearse import lint as lintlib
from seed.remote.session import Session
from seed.run.report import Scrubber, human


def plan(
    env: Environment,
    ref: str | None,
    local_root: Path,
    scrub: Scrubber,
    mode: str | None = None,
) -> dict[str, Any]:
    target = fetch_target(env, ref, local_root)
    ref, sha = target.ref, target.sha
    layout = rel.Layout(env.deploy_to_of(env.roles.migrate))
    app_name = f"seed-{env.name}-plan-{new_deploy_id()}"
    session = Session(env)
    try:
        session.open()
        migrator = session.migrator
        current = rel.current_release(migrator, layout)
        current_sha = rel.release_revision(migrator, layout, current) if current else None
        admin = session.connect(admin=True, app_name=app_name)
        size = dblib.database_size(admin, env.db.name)
        migrations = _migrations(env, session, layout, target, app_name, mode)
        space = backups.backup_space(env, session.state, admin, size, refuse=False)
        pg = session.connect(admin=True, dbname="postgres", app_name=app_name)
        journal = Journal(env, session.state, local_root, scrub)
        pids = lock_holder_pids(pg, env.db.name)
        app = env.app
        hooks: dict[str, Any] = {
            "maintenance_on": app.maintenance_on,
            "maintenance_off": app.maintenance_off,
            "restart": app.restart,
            "reload": app.reload,
            "build": app.build,
            "drain": app.drain,
            "undrain": app.undrain,
            "health": app.health.url if app.health else None,
            **{k: "; ".join(v) for k, v in env.hooks.configured().items()},
        }
        return {
            "environment": env.name,
            "protected": env.protected,
            "ref": ref,
            "sha_current": current_sha,
            "release_current": current,
            "sha_target": sha,
            "up_to_date": current_sha == sha,
            "hosts": [r.label for r in session.app_remotes()],
            "mode": migrations["mode"],
            "migrations": migrations,
            "backup": {
                "database_size": size,
                "estimated_size": space.needed,
                "free": space.free,
                "fits": space.fits,
                "dir": env.backup.dir,
                "restore_space": space.restore,
                "strategy": env.backup.strategy,
            },
            "lock": {"held": bool(pids), "record": journal.read_lock() if pids else None},
            "hooks": hooks,
            "checks": len(env.checks),
        }
    finally:
        session.close()


def _migrations(
    env: Environment,
    session: Session,
    layout: rel.Layout,
    target: Target,
    app_name: str,
    mode: str | None,
) -> dict[str, Any]:
    """The target release's plan, from a temporary folder on the migrate host."""
    plan, venv = target_plan(env, session, layout, target, app_name, mode=mode)
    return {**plan.to_json(), "venv": venv}


def lint_ref(
    env: Environment, ref: str | None, local_root: Path, scrub: Scrubber
) -> tuple[lintlib.LintResult, dict[str, Any]]:
    """`fab <env> lint`: the safety gate on what `upgradedb --ref` would apply, read from
    the servers (the target code in a temporary folder), nothing changed."""
    target = fetch_target(env, ref, local_root)
    waivers = [
        *env.lint.waivers,
        *lintlib.repo_waivers(
            rel.file_at(target.mirror, target.sha, lintlib.REPO_WAIVERS),
            f"{lintlib.REPO_WAIVERS} at {target.ref}",
        ),
    ]
    app_name = f"seed-{env.name}-lint-{new_deploy_id()}"
    session = Session(env)
    try:
        session.open()
        layout = rel.Layout(env.deploy_to_of(env.roles.migrate))
        plan, _ = target_plan(env, session, layout, target, app_name, with_sql=True)
        app = session.connect(admin=False, app_name=app_name)
        rows = lintlib.table_rows(app)
        serving = [
            rel.current_release(r, rel.Layout(env.deploy_to_of(r.host)))
            for r in session.app_remotes()
        ]
    finally:
        session.close()
    result = lintlib.lint(
        plan.migrations,
        rows,
        env.lint,
        waivers,
        first_deploy=not plan.state.applied and not any(serving),
        rollback_method=env.rollback_method,
    )
    data = {
        "environment": env.name,
        "ref": target.ref,
        "sha": target.sha,
        "pending": plan.pending,
        "waivers": [w.__dict__ for w in waivers],
        **result.to_json(),
        "summary": result.summary(),
    }
    return result, data


def describe(data: dict[str, Any]) -> list[str]:
    """The plan as lines for a person."""
    lines = [
        f"plan for {data['environment']}"
        + (" (PROTECTED: upgradedb will ask to type its name)" if data["protected"] else ""),
        f"  code: {data['sha_current'][:12] if data['sha_current'] else 'nothing deployed'} -> "
        f"{data['ref']} "
        f"({data['sha_target'][:12]})" + (" — already deployed" if data["up_to_date"] else ""),
        f"  hosts: {', '.join(data['hosts'])}",
    ]
    m = data["migrations"]
    mode = data["mode"]
    if mode["mode"] == "code-only":
        lines.append(
            f"  mode: code-only ({mode['why']}): the site keeps serving; hosts switched in "
            "batches, each drained, reloaded and health-checked; the database is not touched"
        )
    elif mode["mode"] == "online":
        lines.append(
            f"  mode: online ({mode['why']}): the site keeps serving; verified backup while "
            "it serves, migrate under lock_timeout while the old release serves, checks, hosts "
            "switched in batches; undone by code back then reverse"
        )
    else:
        lines.append(
            f"  mode: maintenance ({mode['why']}): writes stopped during the deploy, "
            "verified backup, migrate, checks"
        )
    online = m.get("online") or {}
    if m["to_apply"] and mode["mode"] != "online" and online.get("not_online"):
        lines.append("  not online because:")
        lines += [f"    - {reason}" for reason in online["not_online"]]
    if mode["mode"] == "online" and online.get("skipped_checks"):
        lines.append(
            "  checks an online deploy skips (they compare with the before-state): "
            + ", ".join(online["skipped_checks"])
        )
    for migration, reason in sorted((online.get("declared") or {}).items()):
        lines.append(f"  declared online-safe: {migration} — {reason}")
    if not m["to_apply"]:
        lines.append("  migrations: none to apply")
    for step in m["steps"]:
        kinds = ", ".join(f"{op['type']} [{op['class']}]" for op in step["operations"])
        lines.append(f"  migrate {step['migration']}: {kinds or 'no operations'}")
    if m["unknown_applied"]:
        lines.append(
            f"  REFUSED at pre-flight: applied migrations the target does not know: "
            f"{', '.join(m['unknown_applied'])}"
        )
    if m["to_apply"]:
        rb = m["rollback"]
        how = (
            "reverse the migrations with the new code (rows written since are kept)"
            if rb["method"] == "reverse"
            else "restore from the backup"
        )
        lines.append(f"  rollback after this deploy: {how} — {rb['why']}")
    b = data["backup"]
    lines.append(
        f"  backup: about {human(b['estimated_size'])} of a {human(b['database_size'])} "
        f"database; {human(b['free'])} free in {b['dir']}"
        + ("" if b["fits"] else " — TOO SMALL, upgradedb would refuse")
    )
    lines.append(f"  restore space: {b['restore_space']}")
    lock = data["lock"]
    lines.append(
        "  lock: HELD by " + str((lock["record"] or {}).get("deploy_id", "?"))
        if lock["held"]
        else "  lock: free"
    )
    hooks = data["hooks"]
    lines.append(
        "  hooks: "
        + "; ".join(f"{name}: {cmd}" for name, cmd in hooks.items() if cmd)
        + f"; {data['checks']} check(s) in the environment file"
    )
    return lines
