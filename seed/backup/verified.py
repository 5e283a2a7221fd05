"""A verified backup as steps of any operation (a `backup` run, an import before it loads,
a deploy before it migrates), its verification by a restore, and the listing of the
backups kept. Commands call these; they never call each other."""

from __future__ import annotations

import contextlib
import datetime as dt
import posixpath
import time
from pathlib import Path
from typing import Any

from seed.backup import dump as backups
from seed.backup import offhost, pitr
from seed.backup import restore as restorelib
from seed.backup.dump import needed_by
from seed.config.environment import Environment
from seed.db import postgres as dblib
from seed.deploy.release import current_release, release_revision
from seed.errors import HumanNeeded, PreflightFailed, SeedError, StepFailed
from seed.journal.record import BACKUP, SERVING, BackupRef, RunRecord
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
        records = journal.records()
        reasons = needed_by(records)
        manifests = backups.list_manifests(env, session.state)
        for manifest in manifests:
            manifest["needed_by"] = reasons.get(str(manifest["id"]), "")
            manifest["present"] = session.state.exists(str(manifest["path"]))
        if env.backup.strategy == "pitr":
            manifests += physical_backups(env, session, records, reasons)
        return sorted(manifests, key=lambda m: str(m.get("created_at", "")))
    finally:
        session.close()


def physical_backups(
    env: Environment, session: Session, records: list[RunRecord], reasons: dict[str, str]
) -> list[dict[str, Any]]:
    """backup.strategy pitr: the repository's backups, and the restore points the journal's
    deploys made, each saying whether it can still be restored (a backup before it, the
    archive reaching it)."""
    info = pitr.repo_info(env, session.repository)
    found: list[dict[str, Any]] = []
    for b in info.backups:
        found.append(
            {
                "id": b.label,
                "kind": b.type,
                "created_at": iso(dt.datetime.fromtimestamp(b.stopped, dt.UTC)),
                "size": b.repo_size,
                "sha256": "",
                "applied_migrations": [],
                "label": f"pgBackRest {b.type} backup of {b.size / 1e6:.1f} MB (lsn {b.lsn_stop})",
                "present": True,
                "needed_by": "",
            }
        )
    for record in records:
        ref = record.backup
        if ref is None or ref.details.get("kind") != "pitr":
            continue
        point = pitr.RestorePoint.from_json(ref.details["restore_point"])
        base = info.before(point.lsn)
        reaches = bool(info.archive_max) and info.archive_max[8:] >= point.wal[8:]
        found.append(
            {
                "id": point.name,
                "kind": "point",
                "created_at": point.created_at,
                "size": 0,
                "sha256": "",
                "applied_migrations": list((record.before or {}).get("applied_migrations", [])),
                "label": (
                    f"restore point before {record.ref}"
                    if record.kind == "upgradedb"
                    else f"restore point {ref.details.get('label') or 'of a backup'}"
                )
                + f" (lsn {point.lsn}, timeline {point.timeline}), from "
                + (base.label if base else "NO BACKUP"),
                "present": base is not None and reaches,
                "needed_by": reasons.get(ref.id, ""),
                "restore_point": point.to_json(),
                "deploy_id": record.deploy_id,
            }
        )
    return found


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


def physical_backup(op: Operation, label: str) -> dict[str, Any]:
    """backup.strategy pitr: a backup in the repository (full when there is none, else
    backup.pgbackrest.type), the before-state of one exported snapshot and a restore point
    right after it, its WAL segment archived. The counters read before the snapshot and
    after the point name the tables written in between: their snapshot figures may differ
    from the point's, and a verification does not compare them. Returns the backup's
    details (as in the report)."""
    env, session = op.env, op.session
    cfg = pitr.config(env)
    with op.step("pre-flight") as s:
        admin = op.admin = session.connect(admin=True, app_name=op.app_name)
        missing = pitr.missing_privileges(admin)
        if missing:
            raise PreflightFailed(
                f"the admin role {env.db.admin_user} may not run {', '.join(missing)}: "
                "restore points need a superuser or GRANT EXECUTE on them"
            )
        why = pitr.archiving(admin)
        if why:
            raise PreflightFailed(f"the cluster does not archive its WAL ({why})")
        info = pitr.repo_info(env, session.repository)
        s.detail = f"pgBackRest stanza {cfg.stanza} on {session.repository.label}, {info.cipher}"
    with op.step("physical backup") as s:
        kind = "full" if info.newest() is None else cfg.type
        started = time.monotonic()
        taken = pitr.take_backup(
            env, session.repository, kind, op.job_dir("pgbackrest-backup"), on_lost=op.reconnect_all
        )
        s.detail = (
            f"{taken.type} backup {taken.label} of {taken.size / 1e6:.1f} MB, "
            f"{taken.repo_size / 1e6:.1f} MB stored, in {time.monotonic() - started:.1f}s"
        )
    first = undo.record_reading(op, SERVING)  # before the snapshot: what moves after shows
    snap_conn = session.connect(admin=True, app_name=op.app_name)
    try:
        with dblib.exported_snapshot(snap_conn) as snapshot, op.step("snapshot") as s:
            figures = op.table_figures(snap_conn, snapshot=snapshot)
            applied = dblib.applied_migrations(snap_conn)
            props = restorelib.database_properties(snap_conn, env.db.name)
            s.detail = f"{len(figures)} tables, {sum(f.rows for f in figures.values())} rows"
    finally:
        snap_conn.close()
    with op.step("restore point") as s:
        point = pitr.create_restore_point(admin, pitr.point_name(op.id))
        waited = pitr.wait_archived(admin, point.wal, cfg.archive_timeout)
        # the point's moment: the writes rule counts what the app writes from here
        after = undo.record_reading(op, BACKUP)
        written = undo.Writes()
        undo.between(first, after, written)
        s.detail = f"{point.name} at {point.lsn}; WAL {point.wal} archived in {waited:.2f}s"
        if written:
            s.detail += f"; written meanwhile (not comparable): {written.listing()}"
    details = {
        "kind": "pitr",
        "restore_point": point.to_json(),
        "stanza": cfg.stanza,
        "repository": session.repository.label,
        "backup_label": taken.label,
        "label": label,
        "tables": {k: v.to_json() for k, v in figures.items()},
        "applied_migrations": [f"{a}.{n}" for a, n in applied],
        "database_properties": props,
        "written_meanwhile": sorted(written.tables),
    }
    op.report.backup = BackupRef(
        id=point.name, path=f"pgbackrest:{cfg.stanza}@{session.repository.label}", details=details
    )
    op.report.before = {
        "applied_migrations": details["applied_migrations"],
        "tables": details["tables"],
        "database_properties": props,
    }
    return details


def verify_point_by_restoring(op: Operation, details: dict[str, Any]) -> str:
    """A restore point restored into a scratch cluster on the db host (archiving off, its
    own port and authentication file), every table compared with the snapshot's figures
    (but those written meanwhile), then the scratch cluster stopped and removed."""
    env, session = op.env, op.session
    db = session.state
    point = pitr.RestorePoint.from_json(details["restore_point"])
    info = pitr.repo_info(env, session.repository)
    chosen = info.before(point.lsn)
    if chosen is None:
        raise StepFailed(f"no backup in the repository ended before {point.name}")
    row = op.admin.execute("select setting from pg_config where name = 'BINDIR'").fetchone()
    bindir = str(row[0]) if row else ""
    directory = pitr.scratch_dir(env, op.id)
    parent = posixpath.dirname(directory)
    free = backups.free_bytes(db, parent)
    if free < chosen.size * 1.1:
        raise StepFailed(
            f"{parent} on {db.label} has {free / 1e9:.1f} GB free, the scratch cluster needs "
            f"{chosen.size * 1.1 / 1e9:.1f} GB: set backup.pgbackrest.verify_dir"
        )
    found = db.check(pitr.free_port_script(), "finding a free port for the scratch cluster")
    port = int(found.stdout.strip())
    try:
        job = pitr.start_job(
            env,
            db,
            op.job_dir("pitr-verify"),
            pitr.scratch_script(env, point, chosen.label, directory, port, bindir),
        )
        code, output = job.wait()
        if code != 0:
            raise StepFailed(
                f"restoring {point.name} into a scratch cluster on {db.label} failed "
                f"(exit {code}): "
                + " / ".join(line.strip() for line in output.strip().splitlines()[-3:])
            )
        with db.tunnel("127.0.0.1", port) as local:
            endpoint = dblib.Endpoint("127.0.0.1", local)

            def connect(dbname: str = "postgres") -> Any:
                return dblib.connect(env, endpoint, admin=True, dbname=dbname, app_name=op.app_name)

            pitr.wait_promoted(connect, point)
            conn = connect(env.db.name)
            try:
                restored = {k: v.to_json() for k, v in dblib.snapshot_figures(conn).items()}
                applied = [f"{a}.{n}" for a, n in dblib.applied_migrations(conn)]
            finally:
                conn.close()
    finally:
        left = "?"
        with contextlib.suppress(SeedError):
            cleanup = pitr.scratch_cleanup(env, directory, bindir)
            db.run(cleanup, private_env=env.command_values())
            left = "" if not db.exists(directory) else "still there"
        if left:
            op.out.line(
                f"warning: the scratch cluster {directory} on {db.label} is {left}: "
                "stop it and remove it by hand",
                style="yellow",
            )
    skip = set(details.get("written_meanwhile") or [])
    recorded = {k: v for k, v in details["tables"].items() if k not in skip}
    compared = {k: v for k, v in restored.items() if k not in skip}
    differ = table_differences(recorded, compared)
    if sorted(applied) != sorted(details["applied_migrations"]):
        differ.append("the migration set differs")
    if differ:
        raise HumanNeeded(
            f"restore point {point.name} restores DIFFERENT data: {'; '.join(differ)}"
        )
    marks = pitr.marks(output)
    took = marks.get("started", 0) - marks.get("restore", 0)
    return (
        f"restored {point.name} from {chosen.label} into a scratch cluster in {took:.1f}s: "
        f"{len(compared)} tables equal to the snapshot"
        + (f" ({len(skip)} written meanwhile, not compared)" if skip else "")
    )


def copy_off_host(op: Operation, manifest: dict[str, Any], download: bool = False) -> str:
    """The dump of `manifest` copied off the state host as backup.copy says (or `download`:
    to the control machine), sha256-checked where it lands; noted in the run's report."""
    env, session = op.env, op.session
    if download or env.backup.copy == "download":
        local = backups.download_backup(session.state, manifest, op.local_root / env.name)
        host, path = "the control machine", str(local)
    else:
        assert env.roles.copy is not None
        target = session.remotes[env.roles.copy]
        host, path = (
            target.label,
            offhost.copy_dump(session.state, target, manifest, env.backup.copy_dir)["path"],
        )
    where = path if host == "the control machine" else f"{host}:{path}"
    if op.report.backup is not None:
        op.report.backup.copy = where
    return (
        f"copied to {where}"
        + (" (control machine)" if where == path else "")
        + (", sha256 checked there")
    )


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
