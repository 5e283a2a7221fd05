"""A verified backup as steps of any operation (a `backup` run, an import before it loads,
a deploy before it migrates), its verification by a restore, and the listing of the
backups kept. Commands call these; they never call each other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from seed.backup import dump as backups
from seed.backup import restore as restorelib
from seed.backup.dump import needed_by
from seed.config.environment import Environment
from seed.db import postgres as dblib
from seed.deploy.release import current_release, release_revision
from seed.errors import HumanNeeded
from seed.journal.record import BACKUP, BackupRef
from seed.journal.store import Journal
from seed.remote.session import Session
from seed.run.operation import Operation
from seed.run.report import Scrubber, iso
from seed.undo import database as undo


def list_backups(env: Environment, local_root: Path) -> list[dict[str, Any]]:
    """Manifests plus `needed_by` and `present`, read-only (no lock, no journal record)."""
    session = Session(env)
    try:
        session.open()
        journal = Journal(env, session.state, local_root, Scrubber())
        reasons = needed_by(journal.records())
        manifests = backups.list_manifests(env, session.state)
        for manifest in manifests:
            manifest["needed_by"] = reasons.get(str(manifest["id"]), "")
            manifest["present"] = session.state.exists(str(manifest["path"]))
        return manifests
    finally:
        session.close()


def verified_backup(self: Operation, label: str, kind: str) -> backups.BackupRecord:
    """Pre-flight (pg_dump version, free space), figures of one exported snapshot, pg_dump
    of that snapshot (verified by a full read, sha256), manifest: a backup `restore` and
    `rollback` can use. Steps of `self` (a backup run, or an import before it loads)."""
    env, session = self.env, self.session
    state = session.state
    with self.step("pre-flight") as s:
        admin = self.admin = session.connect(admin=True, app_name=self.app_name)
        size = dblib.database_size(admin, env.db.name)
        server = dblib.server_version(admin)
        text = backups.usable_pg_dump(env, state, server)
        space = backups.backup_space(env, state, admin, size, with_restore=False)
        s.detail = f"{size / 1e6:.1f} MB database, {space.free / 1e9:.1f} GB free"
    # the counters before the snapshot: a write in between is counted, never missed
    undo.record_reading(self, BACKUP)
    snap_conn = session.connect(admin=True, app_name=self.app_name)
    with dblib.exported_snapshot(snap_conn) as snapshot:
        with self.step("snapshot") as s:
            figures = self.table_figures(snap_conn, snapshot=snapshot)
            applied = dblib.applied_migrations(snap_conn)
            props = restorelib.database_properties(snap_conn, env.db.name)
            s.detail = f"{len(figures)} tables, {sum(f.rows for f in figures.values())} rows"
        with self.step("backup") as s:
            started = time.monotonic()
            job = self.job_dir("backup")
            with self.out.progress("dumped", space.expected) as progress:
                path, sha, dump_size = backups.take_backup(
                    env, state, self.id, job, self.app_name, snapshot, progress=progress
                )
            record = backups.BackupRecord(
                id=self.id,
                path=path,
                size=dump_size,
                sha256=sha,
                seconds=time.monotonic() - started,
                environment=env.name,
                label=label,
                kind=kind,
                database_size=size,
                database_properties=props,
                compression=env.backup.compression,
                format=env.backup.format,
                snapshot=snapshot,
                pg_dump_version=text,
                server_version=server,
                database=env.db.name,
                code_sha=current_code_sha(self),
                applied_migrations=applied,
                tables={k: v.to_json() for k, v in figures.items()},
                created_at=iso(),
                created_by=self.report.who,
            )
            if env.backup.format == "directory":
                record.files = backups.backup_files(state, path)
            backups.write_manifest(state, record)
            self.report.backup = BackupRef.from_json(record.to_json())
            s.detail = f"{path} ({dump_size / 1e6:.1f} MB, sha256 {sha[:12]}, verified)"
    return record


def current_code_sha(op: Operation) -> str | None:
    """The full sha of the release `current` points at on the migrate host, if any."""
    migrator = op.session.migrator
    current = current_release(migrator, op.at(migrator))
    return release_revision(migrator, op.at(migrator), current) if current else None


def table_differences(
    snapshot: dict[str, dict[str, Any]], restored: dict[str, dict[str, Any]]
) -> list[str]:
    """What differs between a snapshot's table figures and a restored copy's: tables one
    side lacks, and tables whose rows or checksum differ (empty: identical)."""
    out = []
    missing = sorted(set(snapshot) - set(restored))
    extra = sorted(set(restored) - set(snapshot))
    changed = sorted(t for t in set(snapshot) & set(restored) if snapshot[t] != restored[t])
    for label, tables in (
        ("missing from the restored copy", missing),
        ("not in the snapshot", extra),
        ("different rows or checksum", changed),
    ):
        if tables:
            out.append(f"{label}: {', '.join(tables)}")
    return out


def verify_by_restoring(op: Operation, record: backups.BackupRecord) -> str:
    """Restore into a scratch database and compare every table with the snapshot figures."""
    env, session = op.env, op.session
    tag = restorelib.db_tag(op.id)
    scratch = restorelib.scratch_name(env.db.name, f"verify_{tag}")
    plan = restorelib.RestorePlan(env.db.name, scratch, "", record.path, record.sha256)
    pg = session.connect(admin=True, dbname="postgres", app_name=op.app_name)
    restorelib.drop_if_exists(pg, scratch)
    restorelib.create_like(pg, scratch, record.database_properties)
    try:
        job = op.job_dir("verify-restore")
        with (
            op.out.progress("restored", record.database_size) as progress,
            restorelib.size_meter(session, scratch, op.app_name, progress) as on_poll,
        ):
            restorelib.run_pg_restore(env, session.state, plan, job, op.app_name, on_poll=on_poll)
        conn = session.connect(admin=True, dbname=scratch, app_name=op.app_name)
        found = op.table_figures(conn, scratch)
        figures = {k: v.to_json() for k, v in found.items()}
        conn.close()
    finally:
        restorelib.drop_if_exists(pg, scratch)
    differ = table_differences(record.tables, figures)
    if differ:
        raise HumanNeeded(f"backup {record.id} restores DIFFERENT data: {'; '.join(differ)}")
    return f"restored into a scratch database: {len(figures)} tables equal to the snapshot"
