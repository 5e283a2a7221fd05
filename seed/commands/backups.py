"""Standalone database operations: `backup`, `backups`, `restore`, `cleanup`.

They share the deploy's pieces: the one-pass verified dump with an exported
snapshot (figures, migration set and properties taken from the very data the
dump holds), the restore with its swap and verification, the lock and journal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seed.backup import dump as backups
from seed.backup import pitr
from seed.backup import restore as restorelib
from seed.backup.dump import find_manifest, manifest_ref, protected_backups
from seed.backup.verified import (
    copy_off_host,
    physical_backup,
    verified_backup,
    verify_by_restoring,
    verify_point_by_restoring,
)
from seed.db import postgres as dblib
from seed.db.replication import refuse_if_replicated
from seed.errors import HumanNeeded, PreflightFailed
from seed.journal import recovery
from seed.journal.record import BackupRef, RunRecord
from seed.run.context import RunContext
from seed.run.operation import Operation


class Backup(Operation):
    """`fab <env> backup [--label L] [--verify-restore] [--download]`."""

    kind = "backup"
    changes_environment = False  # a failed backup leaves the environment as it was (exit 4)

    def check_interrupted(self) -> None:
        """A backup changes nothing: taking one while a recovery is pending is allowed (and
        may be wise). Only live parts of a dead run keep it out (the lock)."""
        if self.interrupted:
            self.out.line(f"note: {recovery.pending_message(self.env, self.interrupted)}")

    def __init__(
        self,
        ctx: RunContext,
        *,
        label: str = "",
        verify_restore: bool = False,
        download: bool = False,
    ) -> None:
        super().__init__(ctx)
        self.label = label
        self.verify_restore = verify_restore
        self.download = download

    def body(self) -> str:
        if self.env.backup.strategy == "pitr":
            return self.physical()
        record = verified_backup(self, self.label, "manual")
        path, dump_size, sha = record.path, record.size, record.sha256
        if self.verify_restore:
            with self.step("verify restore") as s:
                s.detail = verify_by_restoring(self, record)
        if self.download or self.env.backup.copy != "none":
            with self.step("backup copy") as s:
                s.detail = copy_off_host(self, record.to_json(), download=self.download)
        label = f" '{self.label}'" if self.label else ""
        return f"backup {self.id}{label}: {path}, {dump_size / 1e6:.1f} MB, sha256 {sha[:12]}"

    def physical(self) -> str:
        """backup.strategy pitr: a pgBackRest backup and a restore point (verified_backup's
        counterpart), restored into a scratch cluster and compared with --verify-restore."""
        if self.download:
            raise PreflightFailed(
                "--download copies a dump; backup.strategy pitr takes physical backups into "
                "the pgBackRest repository (on another host already)"
            )
        details = physical_backup(self, self.label)
        if self.verify_restore:
            with self.step("verify restore") as s:
                s.detail = verify_point_by_restoring(self, details)
        point = details["restore_point"]
        label = f" '{self.label}'" if self.label else ""
        return (
            f"backup {self.id}{label}: pgBackRest backup {details['backup_label']} and restore "
            f"point {point['name']} (lsn {point['lsn']})"
        )


class Restore(Operation):
    """`fab <env> restore [--backup ID|latest] [--discard-writes]`: database only."""

    kind = "restore"

    def __init__(
        self,
        ctx: RunContext,
        *,
        backup_id: str = "latest",
        discard_writes: bool = False,
        confirm: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(ctx)
        self.backup_id = backup_id
        self.discard_writes = discard_writes
        self.confirm = confirm  # (action, why): asks, or raises Refused (exit 2)
        self.state: dict[str, str] = {"database": "untouched", "app": "?"}
        self.report.state = self.state

    def body(self) -> str:
        env, session = self.env, self.session
        assert self.journal is not None
        records = self.journal.records()
        if env.backup.strategy == "pitr" and (
            self.backup_id.startswith(pitr.POINT_PREFIX)
            or (self.backup_id == "latest" and not backups.list_manifests(env, session.state))
        ):
            return self.to_point(records)
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
            live = {tuple(m) for m in dblib.applied_migrations(admin)}
            admin.close()
            s.detail = f"backup verified (sha256, full read); {space}"
            differ = self.migrations_differ(manifest, live)
        if differ:
            # the code being served expects the live migration set: after the restore it
            # runs against another schema until a deploy or rollback matches them again
            self.out.line(f"warning: {differ}", style="yellow")
            if self.confirm is not None:
                self.confirm(f"restore {manifest['id']} anyway", differ)
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

    def to_point(self, records: list[RunRecord]) -> str:
        """backup.strategy pitr: the cluster restored to a restore point (a `backup` run's or
        a deploy's; `latest`: the newest), verified against the before-state recorded with
        it. Refused like a dump restore when the app wrote since (--discard-writes)."""
        env, session = self.env, self.session
        with self.step("choose backup") as s:
            points = [
                r
                for r in records
                if r.backup is not None
                and r.backup.details.get("kind") == "pitr"
                and r.outcome in ("succeeded", "rolled back")
                and r.before is not None
            ]
            wanted = [
                r
                for r in points
                if self.backup_id == "latest" or r.backup.id.startswith(self.backup_id)  # type: ignore[union-attr]
            ]
            if len(wanted) != 1 and not (self.backup_id == "latest" and wanted):
                raise PreflightFailed(
                    f"no single restore point matches {self.backup_id!r} "
                    f"({len(wanted)} do): `fab {env.name} backups` lists them"
                )
            record = wanted[-1]
            used = record.backup
            assert used is not None and record.before is not None
            self.report.backup = used
            s.detail = f"{used.id} ({record.kind} {record.deploy_id}, {record.started_at})"
        with self.step("pre-flight") as s:
            s.detail = pitr.check_restorable(env, session.repository, used.details)
            admin = session.connect(admin=True, app_name=self.app_name)
            pitr.refuse_shared_cluster(env, admin)
            live = {f"{a}.{n}" for a, n in dblib.applied_migrations(admin)}
            admin.close()
        saved = set(record.before.get("applied_migrations") or [])
        if saved != live:
            differ = (
                f"restore point {used.id} has other migrations than the live database "
                f"({len(saved - live)} only in the point, {len(live - saved)} only live)"
            )
            self.out.line(f"warning: {differ}", style="yellow")
            if self.confirm is not None:
                self.confirm(f"restore {used.id} anyway", differ)
        self.freeze_checking_writes(records, used.run, self.discard_writes, self.state)
        try:
            self.replace_database(used.path, "", record.before, self.state, used.details)
            with self.step("start app") as s:
                s.detail = self.state["app"] = self.start_app(self.running)
        except Exception as exc:
            message = (
                f"restore of {used.id} FAILED: {exc}. Database: {self.state['database']}. "
                f"App: {self.state['app']}"
            )
            self.finish("failed", HumanNeeded.code, message)
            raise HumanNeeded(message) from None
        return (
            f"restored the cluster to {used.id}: {env.db.name} verified identical to the "
            "before-state recorded with it; the code was not changed"
        )

    @staticmethod
    def migrations_differ(manifest: dict[str, Any], live: set[tuple[str, ...]]) -> str:
        """'' when the backup has the live database's migration set; else what differs."""
        saved = {tuple(m) for m in manifest.get("applied_migrations") or []}
        if saved == live:
            return ""

        def names(found: set[tuple[str, ...]]) -> str:
            listed = sorted(".".join(m) for m in found)
            more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
            return ", ".join(listed[:5]) + more if listed else "none"

        return (
            f"backup {manifest['id']} was taken with other migrations than the database the "
            f"served code runs on (only in the backup: {names(saved - live)}; only in the "
            f"live database: {names(live - saved)})"
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
