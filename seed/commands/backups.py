"""Standalone database operations: `backup`, `backups`, `restore`, `cleanup`.

They share the deploy's pieces: the one-pass verified dump with an exported
snapshot (figures, migration set and properties taken from the very data the
dump holds), the restore with its swap and verification, the lock and journal.
"""

from __future__ import annotations

from seed.backup import dump as backups
from seed.backup import restore as restorelib
from seed.backup.dump import find_manifest, manifest_ref, protected_backups
from seed.backup.verified import verified_backup, verify_by_restoring
from seed.db import postgres as dblib
from seed.db.replication import refuse_if_replicated
from seed.errors import HumanNeeded, PreflightFailed
from seed.journal import recovery
from seed.journal.record import BackupRef
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
        self.download = download or ctx.env.backup.copy == "download"

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


class Restore(Operation):
    """`fab <env> restore [--backup ID|latest] [--discard-writes]`: database only."""

    kind = "restore"

    def __init__(
        self, ctx: RunContext, *, backup_id: str = "latest", discard_writes: bool = False
    ) -> None:
        super().__init__(ctx)
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
