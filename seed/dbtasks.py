"""Standalone database operations: `backup`, `backups`, `restore`, `cleanup`.

They share the deploy's pieces: the one-pass verified dump with an exported
snapshot (figures, migration set and properties taken from the very data the
dump holds), the restore with its swap and verification, the lock and journal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from seed import backup as backups
from seed import db as dblib
from seed import recovery, undo
from seed import restore as restorelib
from seed.config import Environment
from seed.errors import HumanNeeded, PreflightFailed
from seed.journal import Journal
from seed.operation import Operation
from seed.release import current_release, release_revision
from seed.replication import refuse_if_replicated
from seed.report import Output, Scrubber, iso
from seed.runrecord import BACKUP, BackupRef, RunRecord
from seed.session import Session


def find_manifest(manifests: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """`latest` or an id (or a unique id prefix); PreflightFailed when none matches."""
    if not manifests:
        raise PreflightFailed("no backups found: take one with `fab <env> backup`")
    if wanted in ("", "latest"):
        return manifests[-1]
    exact = [m for m in manifests if m["id"] == wanted]
    matches = exact or [m for m in manifests if str(m["id"]).startswith(wanted)]
    if len(matches) != 1:
        what = "no backup" if not matches else f"{len(matches)} backups"
        raise PreflightFailed(f"--backup {wanted}: {what} with that id (see `fab <env> backups`)")
    return matches[0]


def manifest_ref(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a run records of a backup it used: which, where, its sha256, the run that took it."""
    return {k: manifest[k] for k in ("id", "path", "sha256", "deploy_id") if manifest.get(k)}


def good_deploys(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.kind == "upgradedb" and r.outcome == "succeeded"]


def protected_backups(records: list[RunRecord]) -> set[str]:
    """Never deleted by retention: the backup of the last good deploy that took one (a
    code-only deploy may have none: the one a rollback past it needs stays)."""
    backups_of = [r.backup.id for r in good_deploys(records) if r.backup is not None]
    return set(backups_of[-1:])


def needed_by(records: list[RunRecord]) -> dict[str, str]:
    """backup id → why it must be kept (the backup of a deploy a rollback can still undo)."""
    reasons: dict[str, str] = {}
    good = good_deploys(records)
    for record in good:
        if record.backup is not None and not record.rolled_back_by:
            reasons[record.backup.id] = f"rollback of {record.deploy_id}"
    last = next((r for r in reversed(good) if r.backup is not None), None)
    if last is not None and last.backup is not None:
        reasons[last.backup.id] = f"last good deploy {last.deploy_id}"
    return reasons


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


class Backup(Operation):
    """`fab <env> backup [--label L] [--verify-restore] [--download]`."""

    kind = "backup"

    def check_interrupted(self) -> None:
        """A backup changes nothing: taking one while a recovery is pending is allowed (and
        may be wise). Only live parts of a dead run keep it out (the lock)."""
        if self.interrupted:
            self.out.line(f"note: {recovery.pending_message(self.env, self.interrupted)}")

    def __init__(
        self,
        env: Environment,
        command: str,
        local_root: Path,
        out: Output,
        report_path: Path | None = None,
        label: str = "",
        verify_restore: bool = False,
        download: bool = False,
    ) -> None:
        super().__init__(env, command, local_root, out, report_path)
        self.label = label
        self.verify_restore = verify_restore
        self.download = download or env.backup.copy == "download"

    def body(self) -> str:
        record = verified_backup(self, self.label, "manual")
        path, dump_size, sha = record.path, record.size, record.sha256
        if self.verify_restore:
            with self.step("verify restore") as s:
                s.detail = verify_by_restoring(self, record)
        if self.download:
            with self.step("download") as s:
                local = backups.download_backup(
                    self.session.state, record.to_json(), self.local_root / self.env.name
                )
                s.detail = f"{local} (sha256 checked)"
        label = f" '{self.label}'" if self.label else ""
        return f"backup {self.id}{label}: {path}, {dump_size / 1e6:.1f} MB, sha256 {sha[:12]}"


def verified_backup(self: Operation, label: str, kind: str) -> backups.BackupRecord:
    """Pre-flight (pg_dump version, free space), figures of one exported snapshot, pg_dump
    of that snapshot (verified by a full read, sha256), manifest: a backup `restore` and
    `rollback` can use. Steps of `self` (a backup run, or an import before it loads)."""
    env, session = self.env, self.session
    state = session.state
    with self.step("pre-flight") as s:
        admin = self.admin = session.connect(admin=True, app_name=self.app_name)
        size = dblib.database_size(admin, env.db.name)
        text, major = backups.pg_dump_version(env, state)
        server = dblib.server_version(admin)
        if major < server // 10000:
            raise PreflightFailed(
                f"pg_dump on {state.label} is {text!r}, older than the server "
                f"({server // 10000}); set backup.pg_bin to a newer one"
            )
        space = backups.backup_space(env, state, admin, size, with_restore=False)
        s.detail = f"{size / 1e6:.1f} MB database, {space.free / 1e9:.1f} GB free"
    # the counters before the snapshot: a write in between is counted, never missed
    undo.record_reading(self, BACKUP)
    snap_conn = session.connect(admin=True, app_name=self.app_name)
    with dblib.exported_snapshot(snap_conn) as snapshot:
        with self.step("snapshot") as s:
            figures = dblib.parallel_figures(
                snap_conn, self.admin_factory(), env.db.fingerprint_sessions, snapshot
            )
            applied = dblib.applied_migrations(snap_conn)
            props = restorelib.database_properties(snap_conn, env.db.name)
            s.detail = f"{len(figures)} tables, {sum(f.rows for f in figures.values())} rows"
        with self.step("backup") as s:
            started = time.monotonic()
            job = self.job_dir("backup")
            path, sha, dump_size = backups.take_backup(
                env, state, self.id, job, self.app_name, snapshot
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
        restorelib.run_pg_restore(env, session.state, plan, job, op.app_name)
        conn = session.connect(admin=True, dbname=scratch, app_name=op.app_name)
        found = dblib.parallel_figures(conn, op.admin_factory(scratch), env.db.fingerprint_sessions)
        figures = {k: v.to_json() for k, v in found.items()}
        conn.close()
    finally:
        restorelib.drop_if_exists(pg, scratch)
    differ = sorted(
        t for t in set(figures) | set(record.tables) if figures[t] != record.tables.get(t)
    )
    if differ:
        raise HumanNeeded(f"backup {record.id} restores DIFFERENT data: {', '.join(differ)}")
    return f"restored into a scratch database: {len(figures)} tables equal to the snapshot"


class Restore(Operation):
    """`fab <env> restore [--backup ID|latest] [--discard-writes]`: database only."""

    kind = "restore"

    def __init__(
        self,
        env: Environment,
        command: str,
        local_root: Path,
        out: Output,
        report_path: Path | None = None,
        backup_id: str = "latest",
        discard_writes: bool = False,
    ) -> None:
        super().__init__(env, command, local_root, out, report_path)
        self.backup_id = backup_id
        self.discard_writes = discard_writes
        self.state: dict[str, str] = {"database": "untouched", "app": "?"}
        self.report.state = self.state

    def body(self) -> str:
        env, session = self.env, self.session
        assert self.journal is not None
        records = self.journal.records()
        with self.step("choose backup") as s:
            manifests = backups.list_manifests(env, session.state)
            manifest = find_manifest(manifests, self.backup_id)
            self.report.backup = used = BackupRef.from_json(manifest_ref(manifest))
            if "database_properties" not in manifest:
                raise PreflightFailed(f"backup {manifest['id']} has no complete manifest")
            s.detail = f"{manifest['id']} {manifest.get('label', '')} ({manifest['created_at']})"
        with self.step("pre-flight") as s:
            restorelib.verify_backup(env, session.state, manifest["path"], manifest["sha256"])
            admin = session.connect(admin=True, app_name=self.app_name)
            refuse_if_replicated(env, admin)
            size = dblib.database_size(admin, env.db.name)
            space = backups.restore_space(env, session.state, admin, size)
            admin.close()
            s.detail = f"backup verified (sha256, full read); {space}"
        assert used is not None
        self.freeze_checking_writes(records, used.run, self.discard_writes, self.state)
        try:
            before = backups.manifest_before_state(manifest)
            self.replace_database(manifest["path"], manifest["sha256"], before, self.state)
            with self.step("start app") as s:
                s.detail = self.state["app"] = self.start_app(self.running)
        except Exception as exc:
            message = (
                f"restore of {manifest['id']} FAILED: {exc}. Database: {self.state['database']}. "
                f"App: {self.state['app']}"
            )
            self.finish("failed", HumanNeeded.code, message)
            raise HumanNeeded(message) from None
        migrations = len(manifest["applied_migrations"])
        return (
            f"restored backup {manifest['id']} into {env.db.name}: verified identical to the "
            f"backup ({migrations} migrations applied in it); the code was not changed"
        )


class Cleanup(Operation):
    """`fab <env> cleanup`: drop replaced databases, delete backups beyond retention."""

    kind = "cleanup"

    def body(self) -> str:
        env, session = self.env, self.session
        assert self.journal is not None and self.lock_conn is not None
        with self.step("replaced databases") as s:
            dropped = restorelib.drop_replaced(self.lock_conn, env.db.name)
            s.detail = ", ".join(dropped) or "none"
        with self.step("old backups") as s:
            manifests = backups.list_manifests(env, session.state)
            protect = protected_backups(self.journal.records())
            doomed = backups.retention(manifests, env.backup.keep, protect)
            for manifest in doomed:
                backups.delete_backup(session.state, manifest)
            s.detail = ", ".join(str(m["id"]) for m in doomed) or "none"
        return (
            f"cleanup of {env.name}: {len(dropped)} replaced database(s) dropped, "
            f"{len(doomed)} backup(s) deleted, {len(manifests) - len(doomed)} kept"
        )
