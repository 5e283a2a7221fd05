"""`fab <env> status` and `fab <env> history`: read the servers and the journal, change nothing.

status: per host its roles, `current` release and sha; the database's size, applied
migrations (count and the newest per app); the last deploy; the lock (the advisory
lock in `postgres` and the lock record). history: every journal record, newest first.
Neither takes the lock: they may run while a deploy does (and say so).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from seed.config.environment import Environment
from seed.db import postgres as dblib
from seed.deploy import release as rel
from seed.journal.record import RunRecord
from seed.journal.recovery import BLOCKING, unfinished
from seed.journal.store import Journal, lock_holder_pids
from seed.remote.session import Session
from seed.run.report import Scrubber

APP_NAME = "seed-status"


def _duration(record: RunRecord) -> float | None:
    if not record.finished_at:
        return None
    try:
        start = datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(record.finished_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((end - start).total_seconds(), 1)


def summarize(record: RunRecord) -> dict[str, Any]:
    """One journal record as a history line (JSON)."""
    backup, rollback = record.backup, record.rollback
    return {
        "deploy_id": record.deploy_id,
        "kind": record.kind,
        "who": record.who,
        "started_at": record.started_at,
        "duration_s": _duration(record),
        "outcome": record.outcome,
        "exit_code": record.exit_code,
        "mode": record.mode,
        "downtime_seconds": record.downtime_seconds,
        "ref": record.ref,
        "sha_before": record.sha_before,
        "sha_after": record.sha_after,
        "migrations_applied": record.migrations.applied if record.migrations else [],
        "backup": (backup.path or None) if backup else None,
        "backup_sha256": backup.sha256 if backup else None,
        "rollback_method": rollback.method if rollback else None,
        "message": record.message,
    }


def history(env: Environment, local_root: Path, scrub: Scrubber) -> list[dict[str, Any]]:
    session = Session(env)
    try:
        session.open()
        journal = Journal(env, session.state, local_root, scrub)
        return [summarize(r) for r in reversed(journal.records())]
    finally:
        session.close()


def status(env: Environment, local_root: Path, scrub: Scrubber) -> dict[str, Any]:
    session = Session(env)
    try:
        session.open()
        hosts = []
        for host, remote in session.remotes.items():
            layout = rel.Layout(env.deploy_to_of(host))
            roles = [
                role
                for role, match in (
                    ("app", host in env.roles.app),
                    ("migrate", host == env.roles.migrate),
                    ("db", host == env.roles.db),
                )
                if match
            ]
            current = rel.current_release(remote, layout) if roles != ["db"] else None
            hosts.append(
                {
                    "host": remote.label,
                    "roles": roles,
                    "current": current,
                    "sha": rel.release_revision(remote, layout, current) if current else None,
                    "releases": len(remote.listdir(layout.releases)) if roles != ["db"] else None,
                }
            )
        admin = session.connect(admin=True, app_name=APP_NAME)
        applied = dblib.applied_migrations(admin)
        newest: dict[str, str] = {}
        for app, name in applied:
            newest[app] = max(newest.get(app, name), name)
        database = {
            "name": env.db.name,
            "server_version": dblib.server_version(admin),
            "size_bytes": dblib.database_size(admin, env.db.name),
            "applied_migrations": len(applied),
            "newest_per_app": newest,
        }
        pg = session.connect(admin=True, dbname="postgres", app_name=APP_NAME)
        pids = lock_holder_pids(pg, env.db.name)
        journal = Journal(env, session.state, local_root, scrub)
        record = journal.read_lock()
        records = journal.records()
        last = next((r for r in reversed(records) if r.kind == "upgradedb"), None)
        holder = (record or {}).get("deploy_id") if pids else None
        interrupted = [summarize(r) for r in records if unfinished(r) and r.deploy_id != holder]
        return {
            "environment": env.name,
            "description": env.description,
            "protected": env.protected,
            "hosts": hosts,
            "database": database,
            "lock": {
                "held": bool(pids),
                "holder_pids": pids,
                "record": record,
                "stale_record": bool(record) and not pids,
            },
            "frozen": journal.read_freeze(),
            "interrupted": interrupted,
            "recovery_pending": any(r["kind"] in BLOCKING for r in interrupted),
            "last_deploy": summarize(last) if last else None,
            "last_operation": summarize(records[-1]) if records else None,
        }
    finally:
        session.close()
