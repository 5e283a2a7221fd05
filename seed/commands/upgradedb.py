"""The upgradedb pipeline (DESIGN: The upgradedb pipeline).

lock → pre-flight → maintenance on → before-state → verified backup → migrate →
post checks → switch → restart → health → maintenance off → journal → unlock.

Until the backup is verified nothing has changed: any failure undoes the
preparations (uploaded release folders, maintenance) and exits 4. After it, a
failure hands over to `after_failure`, which states exactly where things stand.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from seed.backup import dump as backups
from seed.backup import offhost, pitr
from seed.backup import restore as restorelib
from seed.backup.dump import protected_backups
from seed.backup.verified import copy_off_host, verified_backup
from seed.checks import check as checklib
from seed.checks import invariants
from seed.checks import run as checkrun
from seed.config.environment import Waiver
from seed.db import postgres as dblib
from seed.db.replication import refuse_if_replicated
from seed.deploy import migrate as migratelib
from seed.deploy import plan as deploy_plan
from seed.deploy import release as rel
from seed.deploy import rolling
from seed.deploy.target import Target, fetch_target, release_checks, release_waivers
from seed.errors import (
    Frozen,
    HumanNeeded,
    Interrupted,
    JournalUnwritable,
    LockLost,
    PreflightFailed,
    RolledBack,
    SeedError,
    StepFailed,
)
from seed.journal import recovery
from seed.journal.record import (
    BACKUP,
    FREEZE,
    SERVING,
    BackupRef,
    Method,
    Migrations,
    RollbackRecord,
    Snapshot,
)
from seed.journal.store import freeze_text
from seed.rehearse import lint as lintlib
from seed.rehearse.rehearsal import failed_checks, rehearse
from seed.remote.ssh import Remote, RemoteError, RemoteJob, q
from seed.run.context import RunContext
from seed.run.operation import Operation
from seed.run.report import human, iso, utcnow
from seed.undo import database as undo
from seed.undo import online as onlinelib
from seed.undo import reverse as reverselib


class StoppedForWrites(HumanNeeded):
    """The automatic rollback would lose rows the new release wrote: it stops (exit 6)."""


@dataclass
class DeployOptions:
    ref: str | None
    resume: bool = False  # finish an interrupted deploy whose post checks had passed
    mode: str | None = None  # --mode: code-only | maintenance (only more safety than the plan)


class Upgrade(Operation):
    """One `upgradedb` run. `run()` returns the report or raises a SeedError (exit code)."""

    kind = "upgradedb"

    def __init__(self, ctx: RunContext, opts: DeployOptions) -> None:
        super().__init__(ctx)
        env = ctx.env
        self.opts = opts
        self.scrub = ctx.out.scrub
        self.deploy_id = self.id
        self.ref = opts.ref or env.app.ref
        # what has been done so far (for undo and for "where things stand")
        self.uploaded: list[Remote] = []
        self.previous: dict[str, str | None] = {}
        self.maintenance_on = False
        self.restarted = False
        self.switched: list[Remote] = []
        self.backup: backups.BackupRecord | None = None
        self.migrate_job: RemoteJob | None = None
        self.snapshot_db: str | None = None
        self.before: dict[str, Any] = {}
        self.rid = ""
        self.sha = ""
        self.pg_dump_text = ""
        self.resuming: recovery.RunState | None = None
        self.reverse_plan: reverselib.ReversePlan | None = None
        self.plan: deploy_plan.DeployPlan | None = None  # from pre-flight
        self.target: Target | None = None
        self.dump_expected: int | None = None  # the backup's likely size (pre-flight)
        self.database_size = 0
        self.rolling_back = RollbackRecord("")  # the automatic rollback's record (after_failure)
        self.online_record: dict[str, Any] = {}  # an online deploy's (report.online)
        # backup.strategy pitr: the before-state fingerprinted while serving, with each
        # table's columns then (a table written or altered since is fingerprinted again)
        self.serving_figures: dict[str, dblib.TableFigures] = {}
        self.serving_columns: dict[str, tuple[str, ...]] = {}
        self._switched_lock = threading.Lock()

    # -- the run ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Resolve the ref and build the release archive on the control machine."""
        env, ref = self.env, self.ref
        if self.opts.resume:
            return  # the interrupted deploy's record says what to finish
        self.report.ref = ref
        with self.step("resolve ref") as s:
            self.target = fetch_target(env, ref, self.local_root)
            self.sha = self.target.sha
            self.archive, self.requirements = self.target.archive, self.target.requirements
            self.checks = checkrun.CheckRun(
                release_checks(env, self.target), env.db.statement_timeout
            )
            self.rid = rel.release_id(self.sha, f"{utcnow():%Y%m%d%H%M%S}")
            self.report.sha_after = self.sha
            self.report.release_after = self.rid
            s.detail = f"{ref} = {self.sha[:12]}"

    def body(self) -> str:
        if self.resuming is not None:
            return self.resume(self.resuming)  # finishing a dead deploy is not a new one
        freeze = self.journal.read_freeze() if self.journal is not None else None
        if freeze is not None:
            raise Frozen(
                f"{self.env.name} is frozen for deploys {freeze_text(freeze)}; "
                f"`seed {self.env.name} unfreeze` lifts it (rollback stays allowed)"
            )
        self.record()
        try:
            self.preflight(self.archive, self.requirements)
            if self.code_only:
                self.code_only_backup()
                self.release_checks()
            elif self.online:
                self.online_backup()
            elif self.pitr_window:
                self.pitr_before_window()
                self.freeze_and_mark()
            else:
                self.freeze_and_back_up()
        except SeedError as exc:
            self.undo_preparations()
            raise PreflightFailed(
                f"deploy of {self.ref} refused at pre-flight: {exc}; nothing changed"
            ) from None
        except Interrupted:
            raise  # stop at once: recovery puts back what was prepared
        except BaseException:
            self.undo_preparations()
            raise
        if self.code_only:
            return self.roll_out()
        if self.online:
            return self.online_apply()
        try:
            self.apply()
        except SeedError as exc:
            self.after_failure(exc)
        except Exception as exc:  # a lost connection, a driver error: roll back all the same
            self.after_failure(StepFailed(f"{type(exc).__name__}: {exc}"))
        self.report.state = {
            "code": f"current is {self.rid}",
            "database": f"migrated ({len(self.migrations.applied)} applied)",
            "app": "serving" if self.env.app.restart else "not restarted (no app.restart)",
        }
        return self.success_message(self.ref)

    # -- finishing an interrupted deploy ----------------------------------------------------

    def check_interrupted(self) -> None:
        """With --resume: exactly one interrupted run, a deploy that died after its post checks
        had passed (the database migrated and verified); otherwise recovery is `rollback`."""
        if not self.opts.resume:
            return super().check_interrupted()
        blocking = [r for r in self.interrupted if r.blocking]
        if not blocking:
            raise PreflightFailed(f"nothing to resume: no interrupted deploy of {self.env.name}")
        run = blocking[-1]
        if run.record.mode == deploy_plan.ONLINE:
            raise PreflightFailed(
                f"cannot resume {run.id}: it was an online deploy; run `fab {self.env.name} "
                "rollback` (code back, then its migrations reversed, while the site serves), "
                "then deploy again"
            )
        if run.record.mode == deploy_plan.CODE_ONLY:
            raise PreflightFailed(
                f"cannot resume {run.id}: it was a code-only deploy (nothing migrated to keep); "
                f"run `fab {self.env.name} rollback` (it switches the hosts back while the site "
                "serves), then deploy again"
            )
        steps = {s.name: s.outcome for s in run.record.steps}
        verified = steps.get("post checks") == "ok" or bool(run.record.resumes)
        stopped = run.record.rollback is not None and run.record.rollback.stopped_for_writes
        rolling_back = any(str(n).startswith("rollback") for n in steps) and not stopped
        if len(blocking) > 1 or run.kind != "upgradedb" or not verified or rolling_back:
            raise PreflightFailed(
                f"cannot resume: {run.describe()}, before its migrated database had passed its "
                f"post checks; run `fab {self.env.name} rollback` to return to the state before it"
            )
        self.resuming = run
        return None

    def resume(self, run: recovery.RunState) -> str:
        """Take over the interrupted deploy's record and finish it: switch, restart, health,
        maintenance off. A failure rolls back exactly as the deploy itself would have."""
        env, session = self.env, self.session
        record = run.record
        with self.step("resume") as s:
            r = self.report
            r.ref, r.sha_before, r.sha_after = record.ref, record.sha_before, record.sha_after
            r.release_before, r.release_after = record.release_before, record.release_after
            r.previous_releases, r.migrations = record.previous_releases, record.migrations
            r.before, r.backup, r.database = record.before, record.backup, record.database
            r.snapshot, r.reverse, r.rollback_plan = (
                record.snapshot,
                record.reverse,
                (record.rollback_plan),
            )
            r.resumes = run.id
            readings = record.counter_readings
            if readings and readings[-1].event == FREEZE:
                # it stopped the app (its rollback stopped for writes): this run hands over
                r.counter_readings = readings[-1:]
            r.checks = list(record.checks)
            if record.backup is None or record.migrations is None or record.before is None:
                raise PreflightFailed(
                    f"cannot resume {run.id}: its record has no backup, migrations or "
                    f"before-state; run `fab {env.name} rollback`"
                )
            self.ref = str(record.ref)
            self.sha = str(record.sha_after)
            self.rid = str(record.release_after)
            self.previous = dict(record.previous_releases or {})
            self.before = dict(record.before)
            backup = record.backup
            self.backup = backups.BackupRecord(
                id=backup.id, path=backup.path, size=backup.size or 0,
                sha256=backup.sha256, seconds=backup.seconds or 0.0,
            )  # fmt: skip
            self.snapshot_db = record.snapshot.database if record.snapshot else None
            self.reverse_plan = reverselib.ReversePlan.from_json(record.reverse)
            self.uploaded = session.app_remotes()
            steps = {x.name: x.outcome for x in record.steps}
            self.maintenance_on = bool(env.app.maintenance_on) and "maintenance on" in steps
            self.admin = session.connect(admin=True, app_name=self.app_name)
            self.app = session.connect(admin=False, app_name=self.app_name)
            expected = sorted(self.before.get("applied_migrations", []) + self.migrations.applied)
            applied = sorted(f"{a}.{n}" for a, n in dblib.applied_migrations(self.admin))
            if applied != expected:
                raise PreflightFailed(
                    f"cannot resume {run.id}: the database's migrations are not the ones it "
                    f"applied; run `fab {env.name} rollback`"
                )
            for remote in self.uploaded:
                if not remote.is_dir(self.at(remote).release(self.rid)):
                    raise PreflightFailed(
                        f"cannot resume {run.id}: release {self.rid} is gone from "
                        f"{remote.label}; run `fab {env.name} rollback`"
                    )
            self.mark_interrupted(run, "resumed")
            s.detail = f"{run.id} ({self.ref}, {self.sha[:12]}): {len(applied)} migrations applied"
        try:
            self.apply_code()
        except SeedError as exc:
            self.after_failure(exc)
        except Exception as exc:
            self.after_failure(StepFailed(f"{type(exc).__name__}: {exc}"))
        self.report.state = {
            "code": f"current is {self.rid}",
            "database": "migrated (by the resumed deploy)",
            "app": "serving" if env.app.restart else "not restarted (no app.restart)",
        }
        return f"resumed {run.id}: " + self.success_message(self.ref)

    # -- before anything changes ------------------------------------------------------------

    def preflight(self, archive: Path, requirements: bytes) -> None:
        env, session = self.env, self.session
        with self.step("database") as s:
            admin = session.connect(admin=True, app_name=self.app_name)
            app = session.connect(admin=False, app_name=self.app_name)
            server = dblib.server_version(admin)
            size = dblib.database_size(admin, env.db.name)
            self.report.database = {"server_version": server, "size_bytes": size}
            self.database_size = size
            self.admin, self.app = admin, app
            if env.backup.strategy != "pitr":
                # a rollback is a restore + rename swap: refuse a deploy that could not roll
                # back (pitr restores the cluster: its own pre-flight checks what that rewinds)
                refuse_if_replicated(env, admin)
            s.detail = f"PostgreSQL {server // 10000}, {size / 1e6:.1f} MB, both roles connect"
        with self.step("upload release") as s:
            lock = threading.Lock()

            def upload(remote: Remote) -> bool:
                previous = rel.current_release(remote, self.at(remote))
                with lock:
                    self.previous[remote.label] = previous
                    self.uploaded.append(remote)
                version = rel.upload_release_and_python(
                    remote, self.at(remote), self.rid, archive, self.sha, env.app.python
                )
                rel.link_shared_dirs(remote, self.at(remote), self.rid, env.app.shared_dirs)
                vhash = rel.venv_hash(requirements, version)
                job = self.job_dir(f"venv-{remote.host.name}-{remote.host.port}")
                reused = rel.ensure_venv(
                    env, remote, self.at(remote), self.rid, vhash, job, requirements
                )
                rel.write_env_file(env, remote, self.at(remote), self.rid)
                return reused

            done = self.on_hosts(session.app_remotes(), upload, "upload release")
            reused = sum(done.values())
            self.report.previous_releases = dict(self.previous)
            prev = self.previous.get(session.migrator.label)
            self.report.release_before = prev
            self.report.sha_before = (
                rel.release_revision(session.migrator, self.at(session.migrator), prev)
                if prev
                else None
            )
            s.detail = f"{self.rid} on {len(self.uploaded)} host(s), venv reused on {reused}"
            self.availability.start(
                [r.label for r in session.serving_remotes() if self.previous.get(r.label)]
            )
        if env.app.build or env.hooks.of("before", "build") or env.hooks.of("after", "build"):
            with self.step("build") as s, self.hooked("build", self.uploaded):
                s.detail = self.build()
        with self.step("migration plan") as s:
            plan = deploy_plan.plan_deploy(
                session.migrator,
                self.at(session.migrator),
                self.at(session.migrator).release(self.rid),
                env,
                self.app_name,
                with_sql=env.lint.enabled,
                mode=self.opts.mode,
                waivers=self.waivers(),
                checks=self.checks.checks,
            )
            plan.refuse_unknown()
            self.plan = plan
            self.report.mode, self.report.mode_why = plan.mode, plan.mode_why
            self.report.migrations = plan.to_record()
            self.reverse_plan = plan.reverse
            method, why = plan.rollback_method, plan.rollback_why
            self.report.reverse = self.reverse_plan.to_json()
            self.report.rollback_plan = Method(method, why)
            s.detail = f"{len(plan.pending)} to apply: " + (", ".join(plan.pending) or "none")
            s.detail += (
                f"; mode {plan.mode} ({plan.mode_why})"
                if self.code_only
                else f"; mode {plan.mode} ({plan.mode_why}); a rollback would {method} ({why})"
            )
        if self.pitr_window:
            with self.step("backup pre-flight") as s:
                s.detail = self.pitr_preflight()
        elif not self.code_only or env.backup.code_only == "online":
            with self.step("backup pre-flight") as s:
                text = self.pg_dump_text = backups.usable_pg_dump(env, session.state, server)
                space = backups.backup_space(env, session.state, admin, size)
                self.dump_expected = space.expected
                s.detail = (
                    f"{text}; {space.free / 1e9:.1f} GB free in {env.backup.dir}; {space.restore}"
                )
        if env.lint.enabled:
            with self.step("lint") as s:
                s.detail = self.lint(plan)
        if env.rehearse.before_upgradedb and plan.pending:
            # the pending migrations on a restored copy, timed and extrapolated; over
            # budget: refused here, before anything changed (exit 4)
            rehearsal = rehearse(self, session, self.target, env.rehearse.scale_from)
            if rehearsal["over_budget"]:
                raise PreflightFailed(
                    f"rehearsal over budget: {'; '.join(rehearsal['over_budget'])}"
                )
            failed = failed_checks(rehearsal)
            if failed:
                raise PreflightFailed(f"checks failed on the rehearsal: {', '.join(failed)}")
        with self.step("parse checks") as s:
            self.checks.digester = self.digester
            self.checks.plan(self.app)
            n_pre = len(self.checks.by_when("pre"))
            s.detail = f"{n_pre} pre, {len(self.checks.checks) - n_pre} post check(s)"
            if self.checks.no_baseline:
                s.detail += f", {len(self.checks.no_baseline)} without baseline"
        self.record()

    def waivers(self) -> list[Waiver]:
        """The environment file's lint waivers and the release's own (deploy/lint.yml)."""
        if self.target is not None:  # the release's own file, from the local mirror: no SSH
            return release_waivers(self.env, self.target)
        migrator = self.session.migrator
        path = posixpath.join(self.at(migrator).release(self.rid), lintlib.REPO_WAIVERS)
        text = migrator.get_bytes(path) if migrator.exists(path) else None
        return [*self.env.lint.waivers, *lintlib.repo_waivers(text, f"{path} on {migrator.label}")]

    def lint(self, plan: deploy_plan.DeployPlan) -> str:
        """The safety gate on the pending migrations; blocked → exit 4 (nothing changed).
        Returns its summary."""
        env = self.env
        waivers = self.waivers()
        result = lintlib.lint(
            plan.migrations,
            lintlib.table_rows(self.app),
            env.lint,
            waivers,
            first_deploy=not plan.state.applied and not any(self.previous.values()),
            rollback_method=env.rollback_method,
        )
        self.report.lint = {**result.to_json(), "summary": result.summary()}
        for finding in result.findings:
            self.out.detail(finding.describe())
        if result.blocking:
            raise PreflightFailed(result.refusal())
        return result.summary()

    def stop_writes(self) -> None:
        """Maintenance on (the app's workers stopped), the app role's sessions ended, and
        the freeze reading: from here on nothing the app writes is missed."""
        env, session = self.env, self.session
        with self.step("maintenance on") as s:
            live = [r for r in session.serving_remotes() if self.previous.get(r.label)]
            if env.app.maintenance_on and live:
                on = env.app.maintenance_on
                self.maintenance_on = True  # some hosts may have stopped even if one fails
                self.availability.out(*(r.label for r in live))
                self.app_command("maintenance_on", on, live)
            elif not live:
                s.detail = "no live release yet"
            s.detail = (s.detail + "; " if s.detail else "") + self.drain_sessions()
            undo.record_reading(self, FREEZE)  # the app's sessions ended: all writes count

    def freeze_and_back_up(self) -> None:
        env = self.env
        self.stop_writes()
        for attempt in (1, 2):
            reconnects = self.reconnects
            try:
                self.snapshot_and_back_up()
                break
            except SeedError:
                # the exported snapshot lives in a session the lost connection took along:
                # writes are stopped, so the before-state and the backup are simply taken again
                if attempt == 2 or self.reconnects == reconnects:
                    raise
                self.out.line(
                    "the snapshot went with the connection: before-state and backup again"
                )
                self.checks.results.clear()
                self.checks.baselines.clear()
                self.report.checks.clear()
        if env.backup.strategy == "snapshot+dump":
            with self.step("snapshot copy") as s:
                s.detail = self.take_database_snapshot()
        self.record()

    def take_schema_fingerprint(self, snapshot: str) -> None:
        """What a reverse must give back exactly (DESIGN: Rollback, Reverse): `pg_dump -s` of
        the snapshot, hashed, when the plan's rollback is a reverse."""
        if self.plan is None or self.plan.rollback_method != "reverse":
            return
        self.before["schema_sha256"] = backups.schema_fingerprint(
            self.env, self.session.state, self.job_dir("schema"), self.app_name, snapshot
        )
        assert self.report.before is not None
        self.report.before["schema_sha256"] = self.before["schema_sha256"]

    def snapshot_and_back_up(self) -> None:
        session = self.session
        snap_conn = session.connect(admin=True, app_name=self.app_name)
        # one exported snapshot for the figures, the baselines and pg_dump --snapshot
        with dblib.exported_snapshot(snap_conn) as snapshot:
            with self.step("before-state") as s:
                figures = self.table_figures(snap_conn, snapshot=snapshot)
                applied = dblib.applied_migrations(snap_conn)
                self.take_baselines(snapshot, applied, figures)
                self.take_schema_fingerprint(snapshot)
                rows = sum(v.rows for v in figures.values())
                s.detail = f"{len(figures)} tables, {rows} rows, {len(applied)} migrations"
            self.take_backup(snapshot, applied, figures)
        snap_conn.close()

    def take_database_snapshot(self) -> str:
        """CREATE DATABASE ... TEMPLATE <db> while writes are stopped: a rollback is then a
        rename swap. In addition to the dump, never instead (same cluster, not a backup)."""
        env, session = self.env, self.session
        tag = restorelib.db_tag(self.deploy_id)
        name = restorelib.scratch_name(env.db.name, f"snap_{tag}")
        for conn in (self.admin, self.app):
            conn.close()  # the template must have no sessions: ours included
        pg = session.connect(admin=True, dbname="postgres", app_name=self.app_name)
        seconds = restorelib.snapshot_copy(
            pg, env.db.name, name, self.before["database_properties"], env.backup.snapshot_copy
        )
        self.snapshot_db = name
        self.report.snapshot = Snapshot(name, env.backup.snapshot_copy, round(seconds, 3))
        self.admin = session.connect(admin=True, app_name=self.app_name)
        self.app = session.connect(admin=False, app_name=self.app_name)
        return f"{name} in {seconds:.2f}s (downtime), {env.backup.snapshot_copy}"

    # -- backup.strategy pitr: a restore point in the window instead of a dump -------------

    @property
    def pitr_window(self) -> bool:
        """A maintenance deploy under backup.strategy pitr (online and code-only deploys
        have no window: they keep their dump from a snapshot while serving)."""
        return (
            self.env.backup.strategy == "pitr"
            and self.plan is not None
            and self.plan.mode == deploy_plan.MAINTENANCE
        )

    def pitr_preflight(self) -> str:
        """Before anything changes: the admin role may make restore points, the cluster
        archives its WAL without failing, a restore would rewind nothing the file does not
        allow, and the repository answers, encrypted as the file says."""
        env = self.env
        cfg = pitr.config(env)
        missing = pitr.missing_privileges(self.admin)
        if missing:
            raise PreflightFailed(
                f"the admin role {env.db.admin_user} may not run {', '.join(missing)} "
                "(superuser-only on PostgreSQL 15): make it a superuser, or GRANT EXECUTE ON "
                "FUNCTION pg_create_restore_point(text), pg_switch_wal() TO it"
            )
        why = pitr.archiving(self.admin)
        if why:
            raise PreflightFailed(
                f"the cluster of {env.db.name} does not archive its WAL ({why}): "
                "backup.strategy pitr needs archive_mode = on and archive_command = "
                f"'pgbackrest --stanza={cfg.stanza} archive-push %p'"
            )
        pitr.refuse_shared_cluster(env, self.admin)
        repo = self.session.repository
        version = pitr.same_version(env, self.session.state, repo)
        info = pitr.repo_info(env, repo)
        newest = info.newest()
        return f"{version}, stanza {cfg.stanza} on {repo.label}, {info.cipher}: " + (
            f"{len(info.backups)} backup(s), newest {newest.label} "
            f"({(time.time() - newest.stopped) / 3600:.1f} h old)"
            if newest
            else "no backup yet (a full one comes first)"
        )

    def pitr_before_window(self) -> None:
        """While the site serves: a backup when the newest is older than max_age (full when
        there is none), `pgbackrest check` (the archive works end to end), and the whole
        before-state fingerprinted from an exported snapshot; the counters read just before
        it tell the window which tables were written since."""
        env, session = self.env, self.session
        cfg = pitr.config(env)
        with self.step("physical backup") as s:
            info = pitr.repo_info(env, session.repository)
            kind = pitr.backup_type(env, info, time.time())
            newest = info.newest()
            if kind is None and newest is not None:
                age = (time.time() - newest.stopped) / 3600
                s.detail = (
                    f"newest {newest.label} is {age:.1f} h old (max_age {cfg.max_age_hours:g} h)"
                    ": none taken"
                )
            else:
                started = time.monotonic()
                with self.hooked("backup", []):
                    taken = pitr.take_backup(
                        env,
                        session.repository,
                        kind or "full",
                        self.job_dir("pgbackrest-backup"),
                        on_lost=self.reconnect_all,
                    )
                s.detail = (
                    f"{taken.type} backup {taken.label} of {human(taken.size)}, "
                    f"{human(taken.repo_size)} stored, in {time.monotonic() - started:.1f}s"
                )
            s.detail += "; " + pitr.check_archive(env, session.state)
        undo.record_reading(self, SERVING)  # before the snapshot: what is written after moves
        snap_conn = session.connect(admin=True, app_name=self.app_name)
        try:
            with (
                dblib.exported_snapshot(snap_conn) as snapshot,
                self.step("before-state (serving)") as s,
            ):
                self.serving_figures = self.table_figures(snap_conn, snapshot=snapshot)
                listed = dblib.list_tables(snap_conn)
                self.serving_columns = {t.qualified: t.columns for t in listed}
                rows = sum(v.rows for v in self.serving_figures.values())
                s.detail = (
                    f"{len(self.serving_figures)} tables, {rows} rows, fingerprinted while the "
                    "site served"
                )
        finally:
            snap_conn.close()
        self.record()

    def freeze_and_mark(self) -> None:
        """The window: writes stopped; the tables written (or altered) since the serving
        fingerprint fingerprinted again, the rest kept; the migration set, database
        properties and the checks' baselines; then the restore point, its WAL segment
        archived before anything changes. What the window holds does not grow with the
        database, only with what was written meanwhile."""
        env, session = self.env, self.session
        cfg = pitr.config(env)
        self.stop_writes()
        readings = self.report.counter_readings
        serving = next(r for r in reversed(readings) if r.event == SERVING)
        written = undo.Writes()
        undo.between(serving, readings[-1], written)
        snap_conn = session.connect(admin=True, app_name=self.app_name)
        try:
            with dblib.exported_snapshot(snap_conn) as snapshot, self.step("before-state") as s:
                tables = {t.qualified: t.columns for t in dblib.list_tables(snap_conn)}
                again = {
                    t
                    for t, columns in tables.items()
                    if written.why
                    or t in written.tables
                    or t not in self.serving_figures
                    or self.serving_columns.get(t) != columns
                }
                fresh = (
                    self.table_figures(snap_conn, snapshot=snapshot, only=again) if again else {}
                )
                kept = self.serving_figures
                figures = {t: fresh[t] if t in again else kept[t] for t in tables}
                applied = dblib.applied_migrations(snap_conn)
                self.take_baselines(snapshot, applied, figures)
                self.take_schema_fingerprint(snapshot)
                s.detail = (
                    f"{len(figures)} tables ({len(again)} written since the serving "
                    f"fingerprint, fingerprinted again), {len(applied)} migrations"
                )
        finally:
            snap_conn.close()
        with self.step("restore point") as s:
            started = time.monotonic()
            point = pitr.create_restore_point(self.admin, pitr.point_name(self.deploy_id))
            waited = pitr.wait_archived(self.admin, point.wal, cfg.archive_timeout)
            repo = session.repository
            path = f"pgbackrest:{cfg.stanza}@{repo.label}"
            self.backup = backups.BackupRecord(
                id=point.name,
                path=path,
                size=0,
                sha256="",
                seconds=time.monotonic() - started,
                environment=env.name,
                label=f"before {self.ref}",
                kind="deploy",
                deploy_id=self.deploy_id,
                database_properties=self.before["database_properties"],
                database=env.db.name,
                applied_migrations=applied,
                tables=self.before["tables"],
                created_at=iso(),
                created_by=self.report.who,
                verified="restore point; its WAL segment archived",
            )
            self.report.backup = BackupRef(
                id=point.name,
                path=path,
                seconds=round(self.backup.seconds, 3),
                deploy_id=self.deploy_id,
                details={
                    "kind": "pitr",
                    "restore_point": point.to_json(),
                    "stanza": cfg.stanza,
                    "repository": repo.label,
                    "verified": self.backup.verified,
                },
            )
            s.detail = (
                f"{point.name} at {point.lsn} (timeline {point.timeline}); WAL {point.wal} "
                f"archived in {waited:.2f}s"
            )
        self.record()

    def take_baselines(
        self, snapshot: str, applied: list[tuple[str, str]], figures: dict[str, Any]
    ) -> None:
        """Run pre checks and measure the baselines of post checks, in the snapshot."""
        env = self.env
        self.before = {
            "applied_migrations": [f"{a}.{n}" for a, n in applied],
            "tables": {k: v.to_json() for k, v in figures.items()},
            "database_properties": restorelib.database_properties(self.admin, env.db.name),
        }
        failed = self.checks.before_state(self.app, snapshot)
        self.report.checks.extend(r.to_json() for r in self.checks.results)
        self.report.before = {**self.before, "baselines": self.checks.baselines_json()}
        if failed:
            raise PreflightFailed("; ".join(failed))

    def drain_sessions(self) -> str:
        """No other session of the app role may remain once writes are stopped."""
        n = self.end_app_sessions()
        return f"terminated {n} remaining app session(s)" if n else "no app sessions left"

    def take_backup(
        self, snapshot: str, applied: list[tuple[str, str]], figures: dict[str, Any]
    ) -> None:
        env, session = self.env, self.session
        with self.step("backup") as s:
            started = time.monotonic()
            backup_id = self.deploy_id
            with self.hooked("backup", []), self.out.progress("dumped", self.dump_expected) as p:
                path, sha, size = backups.take_backup(
                    env,
                    session.state,
                    backup_id,
                    self.job_dir("backup"),
                    self.app_name,
                    snapshot,
                    on_lost=self.reconnect_all,
                    progress=p,
                )
            record = backups.BackupRecord(
                id=backup_id,
                path=path,
                size=size,
                sha256=sha,
                seconds=time.monotonic() - started,
                environment=env.name,
                label=f"before {self.ref}",
                kind="deploy",
                deploy_id=self.deploy_id,
                database_size=self.database_size,
                database_properties=self.before["database_properties"],
                compression=env.backup.compression,
                format=env.backup.format,
                snapshot=snapshot,
                pg_dump_version=self.pg_dump_text,
                server_version=dblib.server_version(self.admin),
                database=env.db.name,
                code_sha=self.report.sha_before,
                applied_migrations=applied,
                tables={k: v.to_json() for k, v in figures.items()},
                created_at=iso(),
                created_by=self.report.who,
            )
            if env.backup.format == "directory":
                record.files = backups.backup_files(session.state, path)
            manifest = backups.write_manifest(session.state, record)
            self.backup = record
            self.report.backup = BackupRef(
                id=backup_id,
                path=path,
                sha256=sha,
                size=size,
                seconds=round(record.seconds, 3),
                details={"manifest": manifest, "verified": record.verified},
            )
            s.detail = f"{path} ({size / 1e6:.1f} MB, sha256 {sha[:12]}, verified)"
            if env.backup.copy != "none":
                s.detail += "; copied off the host after maintenance off (backup.copy)"

    def undo_preparations(self) -> None:
        """Nothing changed yet: remove uploaded release folders and a snapshot, end
        maintenance."""
        if self.snapshot_db and self.lock_conn is not None:
            with contextlib.suppress(psycopg.Error):
                restorelib.drop_if_exists(self.lock_conn, self.snapshot_db)
        for remote in self.uploaded:
            with contextlib.suppress(SeedError, OSError):
                rel.remove_release(remote, self.at(remote), self.rid)
        if self.maintenance_on:
            with contextlib.suppress(Exception):
                self.hand_over()
        if self.maintenance_on and self.env.app.maintenance_off:
            for remote in self.session.serving_remotes():
                with contextlib.suppress(SeedError, OSError):
                    rel.run_hook(
                        remote, self.at(remote), self.env.app.maintenance_off, "maintenance off"
                    )
                    self.availability.back(remote.label)
            self.maintenance_on = False

    # -- a code-only deploy (no migration pending): the site serves throughout ----------------

    @property
    def code_only(self) -> bool:
        return self.plan is not None and self.plan.mode == deploy_plan.CODE_ONLY

    def build(self) -> str:
        """`app.build` in the new release's folder on every host that got it (with its env
        file and venv), before anything switches."""
        command = self.env.app.build
        if not command:
            return "build hooks only"

        def one(remote: Remote) -> None:
            layout = self.at(remote)
            path = layout.release(self.rid)
            remote.check(
                f"cd {q(path)} && {rel.source_env(layout, path)} && "
                f"{rel.exports(rel.host_names(remote, self.rid))}"
                f"PATH={q(path)}/.venv/bin:$PATH {command}",
                f"app.build {command!r}",
                timeout=1800,
                private_env=self.env.command_values(),
            )

        self.on_hosts(self.uploaded, one, "build")
        return f"{command} on {len(self.uploaded)} host(s)"

    def code_only_backup(self) -> None:
        """backup.code_only: `online` takes a verified backup from an exported snapshot while
        the site serves (seed.backup.verified.verified_backup); `skip` takes none and names the
        newest verified one."""
        env = self.env
        if env.backup.code_only == "online":
            record = verified_backup(self, f"before {self.ref} (code-only, online)", "deploy")
            self.backup = record
            return
        with self.step("backup") as s:
            manifests = backups.list_manifests(env, self.session.state)
            newest = manifests[-1] if manifests else None
            if newest is not None:
                self.report.newest_backup = {
                    k: newest[k] for k in ("id", "path", "created_at") if k in newest
                }
            s.outcome = "skipped"
            s.detail = "code-only deploy: the database is not changed (backup.code_only: skip)"
            s.detail += (
                f"; newest verified backup {newest['id']} ({newest.get('created_at', '?')})"
                if newest
                else "; no backup on record"
            )

    def release_checks(self) -> None:
        """Before anything switches: the new release's Django checks (`migrate --check` proves
        it has nothing to migrate) and the pre checks against the live database. A failure
        refuses the deploy with nothing changed."""
        env = self.env
        with self.step("release checks") as s:
            for check in self.checks.checks:
                if check.when == "post" and check.expect.needs_before:
                    self.checks.no_baseline[check.name] = (
                        "skipped: a code-only deploy takes no before-state (the app writes "
                        "throughout)"
                    )
            self.checks.after_state(self.app, when=("pre",))
            self.checks.add(
                invariants.django_invariants(
                    env,
                    self.session.migrator,
                    self.at(self.session.migrator).release(self.rid),
                    rel.release_env(self.at(self.session.migrator).release(self.rid)),
                    env.invariants,
                    self.app_name,
                )
            )
            failure = self.report_checks(0, "release check")
            if failure:
                raise PreflightFailed(failure)
            s.detail = f"{len(self.checks.results)} passed"

    def report_checks(self, first: int, what: str) -> str | None:
        """Results from `first` on into the report and the output; when some failed, what
        failed: `<what> <the first one> (+N more)`."""
        failed = []
        for result in self.checks.results[first:]:
            self.report.checks.append(result.to_json())
            self.out.detail(checklib.MARKS[result.outcome] + result.describe())
            if not result.passed:
                failed.append(result.describe())
        if not failed:
            return None
        return f"{what} {failed[0]}" + (f" (+{len(failed) - 1} more)" if len(failed) > 1 else "")

    def note_switched(self, remote: Remote) -> None:
        """A host whose `current` may have moved (rolling.roll tells, from its threads): the
        undo puts it back."""
        with self._switched_lock:
            if remote not in self.switched:
                self.switched.append(remote)

    def roll_out(self) -> str:
        """Every serving host switched in batches while the site serves, then the post checks
        that need no before-state; a failure puts the switched hosts back (exit 5)."""
        env, session = self.env, self.session
        serving = session.serving_remotes()
        try:
            rolling.roll(self, serving, lambda r: self.rid, "switch", self.note_switched)
            self.restarted = True
            with self.step("post checks") as s:
                first = len(self.checks.results)
                self.checks.after_state(self.app)
                self.checks.add(
                    invariants.database_invariants(
                        self.app, env.invariants, env.db.statement_timeout
                    )
                )
                failure = self.report_checks(first, "post")
                if failure:
                    raise StepFailed(failure)
                s.detail = f"{len(self.checks.results) - first} checked"
        except SeedError as exc:
            self.code_only_failure(exc)
        except Exception as exc:  # a lost connection, a driver error: put the code back
            self.code_only_failure(StepFailed(f"{type(exc).__name__}: {exc}"))
        self.tidy_up()
        self.report.state = {
            "code": f"current is {self.rid}",
            "database": "untouched (code-only deploy)",
            "app": f"serving {self.rid} on {len(serving)} host(s)",
        }
        groups = len(rolling.batches(serving, env.app.batch_size(len(serving))))
        n_checks = sum(1 for c in self.report.checks if c["passed"] and not c["skipped"])
        backup = f"backup {self.backup.id}" if self.backup else "no backup (code-only)"
        return (
            f"deployed {self.ref} ({self.sha[:12]}) to {env.name}: code-only, "
            f"{len(serving)} host(s) in {groups} batch(es), downtime "
            f"{self.availability.seconds():.1f} s, {n_checks} check(s) passed, {backup}"
        )

    def failure_cause(self, exc: SeedError) -> str:
        """`<step>: <error>`, or a post check's own words ("post check 'x' (expected …)")."""
        failed = next((s for s in reversed(self.report.steps) if s.outcome == "failed"), None)
        where = failed.name if failed else "?"
        own_words = where == "post checks" and not isinstance(exc, JournalUnwritable)
        return str(exc) if own_words else f"{where}: {exc}"

    def rollback_failed(self, message: str) -> NoReturn:
        """Exit 6: the deploy failed and could not be undone; a person must look."""
        self.finish("rollback failed", HumanNeeded.code, message)
        raise HumanNeeded(message) from None

    def begin_undo(self, method: str, why: str) -> None:
        """From here the run goes back: its rollback record (sharing the state), hooks in the
        rollback direction, and it finishes what it starts even when interrupted."""
        self.rolling_back = RollbackRecord(method, why, state=self.state)
        self.report.rollback = self.rolling_back
        self.direction = "rollback"
        self.undoing = True

    def switch_back_while_serving(self) -> list[Remote]:
        """Connections back if they were lost, then every host this run switched back to its
        previous release in batches (drain, switch, reload, health, undrain). Returns them."""
        if not self.session.alive():
            with self.step("rollback: reconnect") as s:
                s.detail = self.recover_connections()
        hosts = list(reversed(self.switched))
        if hosts:
            rolling.roll(self, hosts, lambda r: self.previous.get(r.label), "rollback: switch")
        return hosts

    def code_only_failure(self, exc: SeedError) -> NoReturn:
        """A code-only deploy failed: the hosts already switched go back to their previous
        release the same way (drain, switch, reload, health, undrain); the database was never
        changed. Exit 5; exit 6 when a host could not be put back."""
        ref, cause = self.ref, self.failure_cause(exc)
        self.out.line(f"deploy of {ref} failed at {cause}; switching back", style="bold red")
        self.state = {
            "database": "untouched (code-only deploy: nothing to restore)",
            "code": f"{len(self.switched)} host(s) switched to {self.rid}",
            "app": "serving",
        }
        self.report.state = self.state
        self.begin_undo("code", "a code-only deploy changed only the code")
        try:
            hosts = self.switch_back_while_serving()
            with self.step("rollback: remove release") as s:
                removed = undo.remove_release(self, self.rid, self.uploaded)
                s.detail = f"removed from {removed} host(s)"
            self.state["code"] = undo.code_text(self.previous)
            self.state["app"] = f"serving the previous release on {len(hosts)} host(s)"
        except Exception as err:
            self.rollback_failed(
                f"deploy of {ref} failed at {cause}; putting the code back FAILED: {err}. "
                f"Code: {self.state['code']}. App: {self.state['app']}. The database was not "
                f"touched. Run `fab {self.env.name} rollback` once the host is reachable"
            )
        down = self.availability.seconds()
        message = (
            f"deploy of {ref} failed at {cause}; rolled back: {self.state['code']} on every "
            f"host switched ("
            + ("the site never stopped serving" if down == 0 else f"down {down:.1f} s")
            + "); the database was not touched"
        )
        self.finish("rolled back", RolledBack.code, message)
        raise RolledBack(message)

    # -- an online deploy (expand-only migrations): migrated while the old release serves ----

    @property
    def online(self) -> bool:
        return self.plan is not None and self.plan.mode == deploy_plan.ONLINE

    def online_backup(self) -> None:
        """Before anything changes, while the site serves: the before-state and a verified
        backup of one exported snapshot, the dump finished before migrate starts (pg_dump
        holds ACCESS SHARE on every table until it ends: a migration's lock would queue
        behind it, and the app's queries behind the migration). Checks that compare with
        the before-state are skipped: the app's writes would fail them."""
        assert self.plan is not None and self.plan.online is not None
        for check in self.checks.checks:
            if not check.holds_online:
                self.checks.no_baseline[check.name] = (
                    "skipped: an online deploy runs while the app writes, and this check "
                    "compares with the before-state (`required: true` makes such a deploy "
                    "maintenance)"
                )
        self.online_record = {
            **self.plan.online.to_json(),
            "invalid_indexes_before": onlinelib.invalid_indexes(self.app),
        }
        self.report.online = self.online_record
        # the counters just before the snapshot: what is written after it is counted
        undo.record_reading(self, BACKUP)
        self.snapshot_and_back_up()
        self.record()

    def drop_new_invalid(self) -> list[str]:
        """Indexes a failed CREATE INDEX CONCURRENTLY left INVALID, dropped (by the app's
        role, which owns the tables its migrations changed)."""
        before = list(self.online_record.get("invalid_indexes_before") or [])
        conn = self.session.connect(admin=False, app_name=self.app_name)
        try:
            dropped = onlinelib.drop_new_invalid(conn, before)
        finally:
            conn.close()
        if dropped:
            self.out.detail(f"dropped INVALID index(es) left by a failed build: {dropped}")
            self.online_record.setdefault("invalid_dropped", []).extend(dropped)
        return dropped

    def online_apply(self) -> str:
        """migrate under lock_timeout while the old release serves, the post checks that hold
        while the app writes, then every host switched in batches; a failure is undone by
        `online_failure` (code back, then the migrations reversed), the site serving."""
        env, session = self.env, self.session
        serving = session.serving_remotes()
        try:
            with self.step("migrate") as s:
                try:
                    s.detail = self.migrate(on_retry=self.drop_new_invalid)
                except SeedError:
                    self.drop_new_invalid()
                    raise
                s.detail += " while the site served"
                added = onlinelib.Added.from_json(self.online_record)
                self.online_record["after_migrate"] = onlinelib.added_figures(self.admin, added)
                self.record()
            with self.step("post checks") as s:
                s.detail = self.post_checks()
            rolling.roll(self, serving, lambda r: self.rid, "switch", self.note_switched)
            self.restarted = True
        except SeedError as exc:
            self.online_failure(exc)
        except Exception as exc:  # a lost connection, a driver error: undo all the same
            self.online_failure(StepFailed(f"{type(exc).__name__}: {exc}"))
        self.tidy_up()
        self.report.state = {
            "code": f"current is {self.rid}",
            "database": f"migrated online ({len(self.migrations.applied)} applied)",
            "app": f"serving {self.rid} on {len(serving)} host(s)",
        }
        groups = len(rolling.batches(serving, env.app.batch_size(len(serving))))
        n_checks = sum(1 for c in self.report.checks if c["passed"] and not c["skipped"])
        skipped = sum(1 for c in self.report.checks if c["skipped"])
        backup = self.backup.id if self.backup else "?"
        return (
            f"deployed {self.ref} ({self.sha[:12]}) to {env.name}: online, "
            f"{len(self.migrations.applied)} migration(s) applied while serving, "
            f"{len(serving)} host(s) in {groups} batch(es), downtime "
            f"{self.availability.seconds():.1f} s, {n_checks} check(s) passed"
            + (f" ({skipped} skipped: they compare with before)" if skipped else "")
            + f", backup {backup}"
        )

    def online_failure(self, exc: SeedError) -> NoReturn:
        """An online deploy failed: the hosts it switched go back (drain, switch, reload,
        health, undrain: the site serves throughout), INVALID indexes it left are dropped,
        and its migrations are reversed with its own code, then verified (seed.undo.online).
        A reverse that would drop values the new release wrote into the added columns or
        tables stops before it (exit 6: the old release serves on the expanded schema; `fab
        <env> rollback --discard-writes` finishes). Never a restore: the backup predates the
        migrate, and the app kept writing. Exit 5 when verified."""
        ref, cause = self.ref, self.failure_cause(exc)
        self.out.line(f"deploy of {ref} failed at {cause}; undoing while serving", style="bold red")
        applied = list(self.migrations.applied)
        self.state = {
            "database": f"migrated ({len(applied)} applied)" if applied else "not migrated",
            "code": f"{len(self.switched)} host(s) switched to {self.rid}",
            "app": "serving",
        }
        self.report.state = self.state
        self.begin_undo(
            "reverse",
            "an online deploy is undone by reversing its migrations (a restore would lose what "
            "the app wrote meanwhile)",
        )
        try:
            hosts = self.switch_back_while_serving()
            self.state["code"] = undo.code_text(self.previous)
            self.state["app"] = "serving the previous release"
            with self.step("rollback: invalid indexes") as s:
                dropped = self.drop_new_invalid()
                s.detail = f"dropped {', '.join(dropped)}" if dropped else "none left"
            self.reverse_online(served=bool(hosts))
            with self.step("rollback: remove release") as s:
                removed = undo.remove_release(self, self.rid, self.uploaded)
                s.detail = f"removed from {removed} host(s)"
        except StoppedForWrites as err:
            self.rollback_failed(f"deploy of {ref} failed at {cause}; NOT fully undone: {err}")
        except Exception as err:
            self.rollback_failed(
                f"deploy of {ref} failed at {cause}; UNDO FAILED: {err}. "
                f"Database: {self.state['database']}. Code: {self.state['code']}. "
                f"App: {self.state['app']}. Backup: {self._backup_text()} (restoring it loses "
                "what the app wrote since: --discard-writes)"
            )
        down = self.availability.seconds()
        message = (
            f"deploy of {ref} failed at {cause}; undone while serving (downtime {down:.1f} s): "
            f"code back, {self.state['database']}"
        )
        self.finish("rolled back", RolledBack.code, message)
        raise RolledBack(message)

    def reverse_online(self, served: bool) -> None:
        """The online deploy's migrations reversed with its code and verified (the state's
        `database` says how); StoppedForWrites when `served` (the new release answered
        requests) and it wrote into what the reverse would drop."""
        rp = self.reverse_plan
        assert rp is not None
        if served:
            with self.step("rollback: values written") as s:
                added = onlinelib.Added.from_json(self.online_record)
                now = onlinelib.added_figures(self.admin, added)
                found = onlinelib.written_into(self.online_record.get("after_migrate") or {}, now)
                if found:
                    self.state["database"] = (
                        "expanded (migrations applied, not reversed); the previous release "
                        "serves on it"
                    )
                    self.rolling_back.stopped_for_writes = True
                    raise StoppedForWrites(
                        f"the new release wrote into what a reverse would drop "
                        f"({onlinelib.listing(found)}); the previous release serves on the "
                        f"expanded schema. Reverse anyway, losing them: `fab {self.env.name} "
                        "rollback --discard-writes`; or deploy again"
                    )
                s.detail = "none: the reverse drops only what the migrations added"
        before = set(self.before["applied_migrations"])
        applied = [f"{a}.{n}" for a, n in dblib.applied_migrations(self.admin)]
        applied = [m for m in applied if m not in before]  # (a lost link: the record may lag)
        with self.step("rollback: reverse migrations") as s, self.hooked("migrate", []):
            if applied:
                reversal = undo.reverse(self, self.rid, rp)
                self.rolling_back.output = reversal.output
                s.detail = ", ".join(f"{a} → {t}" for a, t in sorted(rp.targets.items()))
            else:
                reversal = undo.Reversal("", {})
                s.outcome, s.detail = "skipped", "no migration was applied"
            self.state["database"] = "reversed (not verified yet)"
        with self.step("rollback: verify reverse") as s:
            since = next(r for r in self.report.counter_readings if r.event == BACKUP)
            try:
                verified = onlinelib.verify(self, self.before, reversal, since)
            except undo.ReverseNotVerified as exc:
                self.rolling_back.verification = exc.verification
                self.state["database"] = f"reversed but NOT verified: {exc}"
                raise
            self.rolling_back.verification = verified
            written = verified["written_since"]
            self.state["database"] = (
                "migrations reversed; verified: schema, migration set and "
                f"{verified['compared']} table(s) nobody wrote since equal to the "
                "before-state"
                + (f"; {len(written)} table(s) the app wrote kept as written" if written else "")
            )
            s.detail = self.state["database"]

    # -- changing things --------------------------------------------------------------------

    def apply(self) -> None:
        with self.step("migrate") as s:
            s.detail = self.migrate()
        with self.step("post checks") as s:
            s.detail = self.post_checks()
            # writes from here on are the app's (a restore must not silently discard them)
            self.hand_over()
        self.apply_code()

    def migrate(self, on_retry: Callable[[], object] | None = None) -> str:
        """`manage.py migrate` as a remote job under lock_timeout with bounded retries
        (`on_retry` runs before each retry), with the migrate hooks; the report's
        migrations updated. Returns the step's detail."""
        env, session = self.env, self.session
        self.run_hooks("before", "migrate", [])
        outcome = migratelib.apply_migrations(
            env,
            session.migrator,
            self.at(session.migrator),
            self.at(session.migrator).release(self.rid),
            self.job_dir("migrate"),
            self.app_name,
            on_output=self.out.detail,
            on_start=self.track_migrate_job,
            on_lost=self.reconnect_all,
            on_retry=on_retry,
        )
        self.migrations.output = self.scrub(outcome.output)
        self.migrations.attempts = outcome.attempts
        after = dblib.applied_migrations(self.admin)
        before = set(self.before["applied_migrations"])
        newly = [f"{a}.{n}" for a, n in after if f"{a}.{n}" not in before]
        self.migrations.applied = newly
        if outcome.exit_code != 0:
            last = [ln for ln in outcome.output.strip().splitlines() if ln.strip()]
            raise RemoteError(
                f"migrate failed (exit {outcome.exit_code}) after applying "
                f"{len(newly)} migration(s): {last[-1] if last else ''}"
            )
        self.run_hooks("after", "migrate", [])
        tries = f" in {outcome.attempts} attempts (lock timeouts)" if outcome.attempts > 1 else ""
        return f"{len(newly)} applied{tries}"

    def post_checks(self) -> str:
        """The post checks (against the before-state's baselines; those without one are
        skipped), the database and Django invariants; StepFailed naming the first failure.
        Returns the step's detail."""
        env, session = self.env, self.session
        first = len(self.checks.results)
        self.checks.after_state(self.app)
        self.checks.add(
            invariants.database_invariants(self.app, env.invariants, env.db.statement_timeout)
        )
        self.checks.add(
            invariants.django_invariants(
                env,
                session.migrator,
                self.at(self.session.migrator).release(self.rid),
                rel.release_env(self.at(self.session.migrator).release(self.rid)),
                env.invariants,
                self.app_name,
            )
        )
        failure = self.report_checks(first, "post")
        self.report.after_checks = self.checks.after_values()
        if failure:
            raise StepFailed(failure)
        done = [c for c in self.report.checks if c["when"] == "post"]
        errors = sum(1 for c in done if c.get("outcome") == "error")
        skipped = sum(1 for c in done if c["skipped"]) - errors
        detail = f"{len(done) - skipped - errors} passed"
        return (
            detail
            + (f", {skipped} skipped" if skipped else "")
            + (f", {errors} could not run (invariants.on_error: warn)" if errors else "")
        )

    def apply_code(self) -> None:
        """The migrated database passed its checks: switch, restart, health, maintenance off,
        retention and prune (also all that `--resume` has left to do)."""
        env, session = self.env, self.session
        serving = session.serving_remotes()
        self.hand_over()  # (done after the post checks, unless resuming a stopped rollback)
        with self.step("switch"):
            lock = threading.Lock()

            def switch(remote: Remote) -> None:
                rel.switch_current(remote, self.at(remote), self.rid)
                with lock:
                    self.switched.append(remote)

            with self.hooked("switch", serving):
                self.on_hosts(serving, switch, "switch")
        with self.step("restart") as s:
            if env.app.restart:
                self.restarted = True
                self.app_command("restart", env.app.restart, serving)
            else:
                s.outcome, s.detail = "skipped", "no app.restart command"
        with self.step("health") as s:
            if env.app.health:
                self.on_hosts(serving, lambda r: self.http_health(r, self.rid), "health")
                s.detail = f"answered as expected on {len(serving)} host(s)"
            else:
                s.outcome, s.detail = "skipped", "no app.health configured"
        with self.step("maintenance off") as s:
            if self.maintenance_on and env.app.maintenance_off:
                self.app_command("maintenance_off", env.app.maintenance_off, serving)
                self.maintenance_on = False
            else:
                s.outcome = "skipped"
            if env.app.restart or env.app.maintenance_off:
                self.availability.back(*(r.label for r in serving))
        self.tidy_up()

    def tidy_up(self) -> None:
        """After a good deploy: the dump copied off the state host (backup.copy), old backups
        and databases (retention), old release folders."""
        env, session = self.env, self.session
        if self.backup is not None and self.backup.sha256 and env.backup.copy != "none":
            with self.step("backup copy") as s:
                try:
                    s.detail = copy_off_host(self, self.backup.to_json())
                except (SeedError, OSError) as exc:  # the deploy succeeded all the same
                    s.outcome, s.detail = "skipped", f"WARNING: no off-host copy: {exc}"
                    self.out.line(f"warning: {s.detail}", style="yellow")
        with self.step("retention") as s:
            try:
                s.detail = self.apply_retention()
            except (SeedError, psycopg.Error) as exc:  # the deploy succeeded all the same
                s.outcome, s.detail = "skipped", f"warning: {exc}"
        with self.step("prune") as s:
            removed = 0
            try:
                needed = self.releases_the_journal_needs()
                for remote in session.app_remotes():
                    protect = {p for p in [self.previous.get(remote.label), self.rid] if p}
                    protect |= needed.get(remote.label, set())
                    removed += len(
                        rel.prune_releases(remote, self.at(remote), env.app.keep_releases, protect)
                    )
                s.detail = f"{removed} old release folder(s) removed"
            except SeedError as exc:  # the deploy succeeded; an old folder left is harmless
                s.outcome, s.detail = "skipped", f"warning: {exc}"

    def apply_retention(self) -> str:
        """After a good deploy: backups beyond backup.keep go (never this deploy's, nor the
        one a rollback of the last deploy that took one needs), and databases replaced by
        earlier rollbacks are dropped."""
        env = self.env
        manifests = backups.list_manifests(env, self.session.state)
        assert self.journal is not None
        keep = protected_backups(self.journal.records())
        if self.backup is not None:
            keep.add(self.backup.id)
        doomed = backups.retention(manifests, env.backup.keep, keep)
        for manifest in doomed:
            backups.delete_backup(self.session.state, manifest)
            if env.backup.copy == "host" and env.roles.copy is not None:
                with contextlib.suppress(SeedError, OSError):
                    offhost.delete_copy(
                        self.session.remotes[env.roles.copy], manifest, env.backup.copy_dir
                    )
        expired = ""
        if env.backup.strategy == "pitr":
            expired = "; " + pitr.expire(env, self.session.repository, self.needed_points())
        assert self.lock_conn is not None  # connected to `postgres`
        dropped = restorelib.drop_replaced(self.lock_conn, env.db.name)
        if self.snapshot_db:
            restorelib.drop_if_exists(self.lock_conn, self.snapshot_db)
            dropped.append(self.snapshot_db)
            self.snapshot_db = None
        return (
            f"{len(doomed)} old backup(s) deleted, {len(dropped)} replaced or snapshot "
            "database(s) dropped" + expired
        )

    def needed_points(self) -> dict[str, pitr.RestorePoint]:
        """The restore points a rollback may still need (why → point): those of the good
        deploys not undone, the last good one's, and this deploy's own."""
        assert self.journal is not None
        records = self.journal.records()
        reasons = backups.needed_by(records)
        found: dict[str, pitr.RestorePoint] = {}
        for record in records:
            ref = record.backup
            if ref is not None and ref.details.get("kind") == "pitr" and ref.id in reasons:
                found[reasons[ref.id]] = pitr.RestorePoint.from_json(ref.details["restore_point"])
        mine = self.report.backup
        if mine is not None and mine.details.get("kind") == "pitr":
            found[f"this deploy {self.deploy_id}"] = pitr.RestorePoint.from_json(
                mine.details["restore_point"]
            )
        return found

    def releases_the_journal_needs(self) -> dict[str, set[str]]:
        """Per host, the releases a `rollback --to` could still switch back to: those before
        the newest `backup.keep` successful deploys (older ones have no backup kept)."""
        assert self.journal is not None
        needed: dict[str, set[str]] = {}
        good = [
            r
            for r in self.journal.records()
            if r.kind == "upgradedb" and r.outcome == "succeeded" and not r.rolled_back_by
        ]
        for record in good[-self.env.backup.keep :]:
            for host, release in (record.previous_releases or {}).items():
                if release:
                    needed.setdefault(host, set()).add(release)
        return needed

    def after_failure(self, exc: SeedError) -> None:
        """A failure after the backup: roll database and code back, verify, say what happened.

        Exit 5 when the environment is verified identical to the before-state; exit 6
        (a person is needed) when any part could not be put back or verified, with
        the state of each part in the message and the report.
        """
        ref, cause = self.ref, self.failure_cause(exc)
        self.out.line(f"deploy of {ref} failed at {cause}; rolling back", style="bold red")
        self.state = {
            "database": "migrated (not restored yet)",
            "code": "unknown",
            "app": "unknown",
        }
        method, why = reverselib.choose(
            self.env.rollback_method, self.reverse_plan, self.failed_non_atomic()
        )
        if method == "reverse" and "schema_sha256" not in self.before:
            method, why = "restore", "no schema fingerprint was taken"
        self.begin_undo(method, why)  # (hooks run again around each step undone)
        try:
            if not self.session.alive():
                with self.step("rollback: reconnect") as s:
                    s.detail = self.recover_connections()
            with self.step("rollback: stop app") as s:
                if self.restarted and self.env.app.maintenance_on:
                    serving = self.session.serving_remotes()
                    self.availability.out(*(r.label for r in serving))
                    with self.hooked("maintenance_on", serving):
                        for remote in serving:
                            on = self.env.app.maintenance_on
                            rel.run_hook(remote, self.at(remote), on, "stop app")
                    self.maintenance_on = True
                    s.detail = self.drain_sessions()
                else:
                    s.outcome, s.detail = "skipped", "new code never served"
                undo.record_reading(self, FREEZE)
            written = self.writes_while_serving(method) if self.restarted else set()
            if method == "reverse":
                method = self.try_reverse(written)  # with the new code, before it is switched away
            with self.step("rollback: code") as s, self.hooked("switch", self.switched):
                s.detail = self.state["code"] = self.restore_code()
            if method == "restore":
                with self.step("rollback: database") as s, self.hooked("migrate", []):
                    s.detail = self.restore_database()
                with self.step("rollback: verify") as s:
                    s.detail = self.verify_rolled_back()
            with self.step("rollback: start app") as s:
                s.detail = self.state["app"] = self.start_previous()
        except StoppedForWrites as err:
            self.rollback_failed(f"deploy of {ref} failed at {cause}; NOT rolled back: {err}")
        except Exception as err:
            self.rollback_failed(
                f"deploy of {ref} failed at {cause}; ROLLBACK FAILED: {err}. "
                f"Database: {self.state['database']}. Code: {self.state['code']}. "
                f"App: {self.state['app']}. Backup: {self._backup_text()}"
            )
        message = f"deploy of {ref} failed at {cause}; rolled back; verified identical"
        warnings = self.report.hook_failures
        if warnings:
            message += f" (while undoing, {len(warnings)} hook(s) failed: {warnings[0]})"
        self.finish("rolled back", RolledBack.code, message)
        raise RolledBack(message)

    def writes_while_serving(self, method: str) -> set[str]:
        """The new release served: what the app wrote since the migrate (the writes rule). A
        restore would lose it: the rollback reverses when that is exact (the rows stay), and
        otherwise stops here with maintenance on and nothing more changed (StoppedForWrites,
        exit 6, recovery pending)."""
        with self.step("rollback: writes since") as s:
            writes = undo.app_writes(self, [self.report], self.id)
            if not writes:
                s.detail = "none: the restore loses nothing"
                return set()
            if method == "reverse":
                s.detail = f"{writes.listing()}: reversing keeps them"
                return set(writes.tables)
            self.rolling_back.stopped_for_writes = True
            self.state["database"] = (
                f"migrated by this deploy, then written by its release ({writes.listing()})"
            )
            self.state["app"] = "stopped (maintenance on)"
            raise StoppedForWrites(
                f"the new release wrote rows after the migrate ({writes.listing()}) and its "
                "migrations cannot be reversed exactly, so a restore would lose them; "
                "nothing more was changed (maintenance stays on). Either finish the deploy: "
                f"`fab {self.env.name} upgradedb --resume`, or restore its backup and lose "
                f"those rows: `fab {self.env.name} rollback --discard-writes`"
            )

    def failed_non_atomic(self) -> str:
        """The non-atomic migration a failed migrate stopped in, if any: half-applied, only
        the backup can undo it."""
        applied = set(self.report.migrations.applied if self.report.migrations else [])
        for m in self.plan.migrations if self.plan else []:
            name = f"{m['app']}.{m['name']}"
            if name not in applied:
                return "" if m.get("atomic", True) else name
        return ""

    def try_reverse(self, written: set[str]) -> str:
        """Reverse the deploy's migrations with its own (new) code and verify the result is
        the before-state (tables the app wrote since aside: `written`, kept as written);
        anything else falls back to the restore, unless the app wrote: then a restore
        would lose rows, and the failure stands (exit 6). Returns the method that remains
        to be done: "" (reversed) or "restore"."""
        rp = self.reverse_plan
        assert rp is not None
        try:
            with self.step("rollback: reverse migrations") as s, self.hooked("migrate", []):
                reversal = undo.reverse(self, self.rid, rp)
                self.rolling_back.output = reversal.output
                self.state["database"] = "migrations reversed (not verified yet)"
                s.detail = ", ".join(f"{a} → {t}" for a, t in sorted(rp.targets.items()))
            with self.step("rollback: verify reverse") as s:
                try:
                    found = undo.verify_reverse(self, self.before, reversal, written)
                except undo.ReverseNotVerified as exc:
                    self.rolling_back.verification = exc.verification
                    raise
                self.rolling_back.verification = found
                kept = f"; rows the app wrote since kept ({', '.join(sorted(written))})"
                self.state["database"] = (
                    "migrations reversed; verified identical to the before-state"
                    + (kept if written else "")
                )
                s.detail = (
                    f"{found['tables']} tables, {found['rows']} rows, {found['migrations']} "
                    "migrations and the schema equal"
                )
            return ""
        except LockLost:
            raise
        except (SeedError, psycopg.Error) as exc:
            if written:
                self.state["database"] = f"reverse FAILED ({exc}); the app's writes kept"
                raise
            self.out.line(f"reverse did not give the before-state back ({exc}): restoring")
            self.rolling_back.method, self.rolling_back.reverse_failed = "restore", str(exc)
            self.state["database"] = "reverse failed; restoring the backup"
            self.open_sessions()
            return "restore"

    def track_migrate_job(self, job: RemoteJob) -> None:
        self.migrate_job = job

    def recover_connections(self) -> str:
        """A connection was lost: connect again, take the lock back (its session died with
        the tunnel), and wait for a migrate still running remotely: never restore under it."""
        assert self.journal is not None
        self.reconnect_all()
        waited = ""
        if self.migrate_job is not None:
            code, _ = self.migrate_job.wait()
            waited = f"; migrate job had ended (exit {code})"
        return "connections and lock re-established" + waited

    def _backup_text(self) -> str:
        assert self.backup is not None
        if not self.backup.sha256:  # a restore point (backup.strategy pitr)
            return f"restore point {self.backup.id} in {self.backup.path}"
        return f"{self.backup.path} (sha256 {self.backup.sha256[:12]}, verified)"

    def restore_code(self) -> str:
        """`current` back to the recorded previous release on every host switched; the
        failed release's folder removed."""
        try:
            undo.put_back_code(self, self.previous, self.switched, only_changed=False)
        finally:
            undo.remove_release(self, self.rid, self.uploaded)
        prev_any = next((p for p in self.previous.values() if p), None)
        return f"current is {prev_any}" if prev_any else "no release (first deploy)"

    def restore_database(self) -> str:
        """Swap the snapshot in when there is one (falling back to the dump), else restore
        the deploy's backup as the live database (seed.undo.database); keep the old one."""
        if self.snapshot_db:
            try:
                replaced, moved = undo.swap_snapshot(self, self.snapshot_db)
            except (SeedError, psycopg.Error) as exc:
                self.out.line(f"snapshot swap failed ({exc}); restoring the dump instead")
                self.open_sessions()
            else:
                snapshot, self.snapshot_db = self.snapshot_db, None
                self.rolling_back.method = "snapshot swap"
                self.rolling_back.replaced_database = replaced
                self.rolling_back.sequences_moved_forward = moved
                self.state["database"] = (
                    f"snapshot {snapshot} swapped in; the failed database is kept as "
                    f"{replaced} (connections disabled)"
                )
                return f"snapshot {snapshot} swapped in, {replaced} kept"
        assert self.backup is not None
        details = self.report.backup.details if self.report.backup else {}
        if details.get("kind") == "pitr":
            self.state["database"] = "being restored to the restore point (cluster stopped)"
            parts = undo.restore_to_point(self, details)
            self.rolling_back.point_in_time = parts
            self.state["database"] = (
                f"cluster restored to {parts['point']} (from backup {parts['backup']})"
            )
            return pitr.parts_text(parts)
        try:
            restored = undo.restore_dump(
                self, self.backup.path, self.backup.sha256, self.before["database_properties"]
            )
        except restorelib.RestoreFailed as exc:
            if exc.live_untouched:
                self.state["database"] = "NOT restored: still the migrated database"
            else:
                self.state["database"] = str(exc)
            raise
        replaced = restored.plan.replaced
        self.state["database"] = (
            f"restored from {self.backup.path}; the failed database is kept as "
            f"{replaced} (connections disabled)"
        )
        self.rolling_back.replaced_database = replaced
        self.rolling_back.sequences_moved_forward = restored.sequences_moved_forward
        return f"{self.backup.path} restored, {replaced} kept"

    def verify_rolled_back(self) -> str:
        """Every table's count + checksum, the migration set and database properties as before."""
        verification = undo.verify_database(self, self.before)
        self.rolling_back.verification = verification
        if verification["problems"]:
            problems = "; ".join(verification["problems"])
            self.state["database"] += "; VERIFICATION FAILED: " + problems
            raise StepFailed(problems)
        self.state["database"] += "; verified identical to the before-state"
        return (
            f"{verification['tables']} tables, {verification['rows']} rows, "
            f"{verification['migrations']} migrations equal"
        )

    def start_previous(self) -> str:
        """End maintenance on the previous release and check its health."""
        live = [r for r in self.session.serving_remotes() if self.previous.get(r.label)]
        if not live:
            return "not started (no previous release)"
        served = self.start_app(live)
        self.maintenance_on = False
        return f"previous release {served}"

    def success_message(self, ref: str) -> str:
        n_checks = sum(1 for c in self.report.checks if c["passed"] and not c["skipped"])
        total = sum(s.seconds for s in self.report.steps)
        backup = self.backup.id if self.backup else "?"
        return (
            f"deployed {ref} ({self.sha[:12]}) to {self.env.name}: "
            f"{len(self.migrations.applied)} migration(s) applied, {n_checks} check(s) passed, "
            f"backup {backup}, in {total:.1f}s"
        )

    @property
    def migrations(self) -> Migrations:
        """The report's migrations (planned at pre-flight, or taken over by a resume)."""
        assert self.report.migrations is not None
        return self.report.migrations
