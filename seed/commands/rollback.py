"""`fab <env> rollback`: undo the last successful deploy (DESIGN: Rollback).

The target deploy's journal record says what "back" means: its verified backup
(file, sha256, before-state figures, migration set, database properties) and
the release `current` pointed at before it, per host. Writes since Seed last
left the database (write counters recorded in the newest journal record) make
it refuse unless `--discard-writes`: a restore would silently lose them.
"""

from __future__ import annotations

import contextlib
from typing import NoReturn

from seed.backup import dump as backups
from seed.backup import pitr
from seed.backup import restore as restorelib
from seed.db import postgres as dblib
from seed.deploy import release as rel
from seed.deploy import rolling
from seed.deploy.plan import CODE_ONLY, ONLINE
from seed.errors import HumanNeeded, PreflightFailed, SeedError, StepFailed
from seed.journal import recovery
from seed.journal.record import BACKUP, BackupRef, RollbackRecord, RunRecord
from seed.remote.ssh import Remote
from seed.run.context import RunContext
from seed.run.operation import Operation
from seed.undo import database as undo
from seed.undo import online as onlinelib
from seed.undo import reverse as reverselib


def choose_target(records: list[RunRecord], to: str | None) -> RunRecord:
    """The deploy to undo: the newest successful one, or `--to ID`. PreflightFailed if none."""
    deploys = [r for r in records if r.kind == "upgradedb"]
    good = [r for r in deploys if r.outcome == "succeeded"]
    if to:
        match = [r for r in deploys if r.deploy_id == to]
        if not match:
            raise PreflightFailed(f"--to {to}: no such deploy in the journal")
        target = match[0]
        if target.outcome != "succeeded":
            raise PreflightFailed(
                f"--to {to}: that deploy ended '{target.outcome}'; only a successful "
                "deploy can be rolled back"
            )
        if target.rolled_back_by:
            raise PreflightFailed(f"--to {to}: already rolled back by {target.rolled_back_by}")
        refuse_over_copy(records, target)
        return target
    if not good:
        raise PreflightFailed("nothing to roll back: the journal has no successful deploy")
    last = good[-1]
    refuse_over_copy(records, last)
    if last.rolled_back_by:
        earlier = [r for r in good[:-1] if not r.rolled_back_by]
        hint = f"; to go one deploy further back: --to {earlier[-1].deploy_id}" if earlier else ""
        raise PreflightFailed(
            f"nothing to roll back: the last deploy {last.deploy_id} was already rolled "
            f"back by {last.rolled_back_by}{hint}"
        )
    return last


def refuse_over_copy(records: list[RunRecord], deploy: RunRecord) -> None:
    """A copy (`copy-to`) replaced the database after `deploy`: rolling the deploy back
    would restore its backup over the copied data (or reverse migrations the copy does
    not have). Refuse (exit 4)."""
    after = records[records.index(deploy) + 1 :]
    copies = [
        r
        for r in after
        if r.kind == "copy" and (r.outcome == "succeeded" or r.replaced_database)  # swapped
    ]
    if copies:
        copy = copies[-1]
        raise PreflightFailed(
            f"deploy {deploy.deploy_id} cannot be rolled back: copy {copy.deploy_id} "
            f"replaced the database with a copy of {copy.source or '?'} since; deploy "
            "the release you want instead (`upgradedb --ref ...`)"
        )


class Rollback(Operation):
    """One `rollback` run. `run()` returns the report or raises a SeedError (exit code)."""

    kind = "rollback"
    direction = "rollback"

    def __init__(
        self,
        ctx: RunContext,
        *,
        to: str | None = None,
        discard_writes: bool = False,
        stop_jobs: bool = False,
        method: str | None = None,
    ) -> None:
        super().__init__(ctx)
        self.to = to
        self.discard_writes = discard_writes
        self.stop_jobs = stop_jobs
        self.method = method
        self.target: RunRecord | None = None  # the deploy being undone
        self.written: set[str] = set()  # tables the app wrote since its backup
        self.state: dict[str, str] = {"database": "untouched", "code": "untouched", "app": "?"}
        self.report.state = self.state

    def counts_as_holder(self, run: recovery.RunState) -> bool:
        """Recovery waits for (or stops) a dead run's jobs and ends its sessions itself;
        only its fab process alive on this machine means it is not dead."""
        return bool(run.process)

    def check_interrupted(self) -> None:
        """Interrupted runs are what this rollback is for (see `recover`)."""

    def body(self) -> str:
        assert self.journal is not None
        if self.interrupted:
            message = self.recover()
            if message:
                return message
        records = self.journal.records()
        with self.step("choose deploy") as s:
            target = self.target = choose_target(records, self.to)
            self.report.target = target.deploy_id
            s.detail = f"undo {target.deploy_id} ({target.ref}, {(target.sha_after or '')[:12]})"
        if target.mode == CODE_ONLY:
            return self.undo_code_only(target)
        if target.mode == ONLINE and self.method != "restore":
            return self.undo_online(target, records)
        if target.mode == ONLINE and not self.discard_writes:
            raise PreflightFailed(
                f"deploy {target.deploy_id} ran online: its backup was taken while the app "
                "served, before the migrate, and the app kept writing since; restoring it loses "
                "those writes, so --method restore needs --discard-writes (without --method, "
                "the rollback reverses the migrations and keeps them)"
            )
        with self.step("method") as s:
            method, why = self.choose_method(target, records)
            self.report.rollback = RollbackRecord(method, why)
            s.detail = f"{method}: {why}"
        backup = self.preflight()
        if method == "reverse":
            # rows written since the deploy stay: no refusal, only writes stopped; the tables
            # the app wrote are verified against the reverse alone, the rest exactly
            self.freeze()
            self.state["app"] = "stopped (maintenance on)"
            writes = undo.app_writes(self, records, backup.run)
            self.written = set(writes.tables)
        else:
            self.freeze_checking_writes(records, backup.run, self.discard_writes, self.state)
        try:
            self.execute(database=method)
        except Exception as exc:
            if isinstance(exc, restorelib.RestoreFailed) and exc.live_untouched:
                # nothing was changed: the deploy's code and database serve on, as before
                self.unfreeze()
                self.state["app"] = "started again on the deploy's release (nothing changed)"
            self.fail(exc)
        how = (
            "migrations reversed with its code (rows written since kept), verified"
            if method == "reverse"
            else "restored from its backup and verified identical"
        )
        return (
            f"rolled back deploy {target.deploy_id} ({target.ref}): database {how}; "
            f"code {self.state['code']}"
        )

    def choose_method(self, target: RunRecord, records: list[RunRecord]) -> tuple[str, str]:
        """reverse or restore for this target (rollback.method, or --method)."""
        method = self.method or self.env.rollback_method
        rp = reverselib.ReversePlan.from_json(target.reverse)
        chosen, why = reverselib.choose(method, rp)
        if chosen != "reverse":
            return chosen, why
        newest = [
            r
            for r in records
            if r.kind == "upgradedb" and r.outcome == "succeeded" and not r.rolled_back_by
        ]
        if not newest or newest[-1].deploy_id != target.deploy_id:
            return "restore", "later deploys exist: only the newest deploy can be reversed"
        if "schema_sha256" not in (target.before or {}):
            return "restore", "the deploy took no schema fingerprint"
        rid = target.release_after
        if not rid or not self.session.migrator.is_dir(self.at(self.session.migrator).release(rid)):
            return "restore", f"its release {rid} is gone from the migrate host"
        return chosen, why

    def after_success(self) -> None:
        """Record on the undone deploy who rolled it back (so it is not undone twice)."""
        assert self.journal is not None
        if self.target is None:  # a recovery of a deploy that never succeeded
            return
        self.target.rolled_back_by = self.id
        with contextlib.suppress(SeedError, OSError):
            self.journal.write(self.target.deploy_id, self.target)

    def preflight(self) -> BackupRef:
        """The target's backup verified and the releases before it still there; returns
        the backup."""
        session, target = self.session, self.target
        assert target is not None
        backup = target.backup
        if backup is None or not backup.path or "database_properties" not in (target.before or {}):
            raise PreflightFailed(
                f"deploy {target.deploy_id} has no usable backup record; cannot restore"
            )
        with self.step("verify backup") as s:
            if backup.details.get("kind") == "pitr":
                s.detail = pitr.check_restorable(self.env, session.repository, backup.details)
            else:
                restorelib.verify_backup(self.env, session.state, backup.path, backup.sha256)
                s.detail = f"{backup.path} sha256 {backup.sha256[:12]}, full read ok"
        self.check_releases(target)
        return backup

    def check_releases(self, target: RunRecord) -> None:
        """The releases `current` pointed at before `target` are still on their hosts."""
        session = self.session
        with self.step("releases") as s:
            self.previous: dict[str, str | None] = dict(target.previous_releases or {})
            for remote in session.serving_remotes():
                prev = self.previous.get(remote.label)
                if prev and not remote.is_dir(self.at(remote).release(prev)):
                    raise PreflightFailed(
                        f"the release before {target.deploy_id} ({prev}) is gone from "
                        f"{remote.label}; cannot put the code back"
                    )
            s.detail = ", ".join(f"{k}: {v or 'none'}" for k, v in self.previous.items())

    def undo_code_only(self, target: RunRecord) -> str:
        """A code-only deploy changed only the code: every host it switched goes back to its
        previous release the way it came (drain, switch, reload, health, undrain: the site
        keeps serving); the database stays as it is, with everything the app wrote."""
        why = "a code-only deploy changed only the code; the database (all the app wrote) stays"
        with self.step("method") as s:
            self.report.rollback = RollbackRecord("code", why, state=self.state)
            s.detail = f"code: {why}"
        self.check_releases(target)
        self.state["database"] = "untouched (the deploy undone was code-only)"
        self.switch_back(target.release_after)
        return (
            f"rolled back code-only deploy {target.deploy_id} ({target.ref}): code "
            f"{self.state['code']}; downtime {self.availability.seconds():.1f} s; the database "
            "was not touched"
        )

    def undo_online(self, target: RunRecord, records: list[RunRecord]) -> str:
        """An online deploy: its code back host by host while the site serves, then its
        migrations reversed with its own code and verified as an online reverse is
        (seed.undo.online: schema, migration set, tables nobody wrote since). Values the
        new release wrote into the added columns or tables would be dropped by the reverse:
        refused (exit 4, nothing changed) unless --discard-writes."""
        env, session = self.env, self.session
        why = (
            "an online deploy is undone by putting the code back, then reversing its "
            "migrations (what the app wrote into the tables it had stays)"
        )
        with self.step("method") as s:
            self.report.rollback = RollbackRecord("reverse", why, state=self.state)
            s.detail = f"reverse: {why}"
        newest = [
            r
            for r in records
            if r.kind == "upgradedb" and r.outcome == "succeeded" and not r.rolled_back_by
        ]
        rid, before = target.release_after, target.before or {}
        migrator = session.migrator
        refusal = ""
        if not newest or newest[-1].deploy_id != target.deploy_id:
            refusal = "later deploys exist: only the newest deploy can be reversed"
        elif "schema_sha256" not in before or target.online is None:
            refusal = "the deploy recorded no schema fingerprint or online record"
        elif not rid or not migrator.is_dir(self.at(migrator).release(rid)):
            refusal = f"its release {rid} is gone from the migrate host"
        if refusal:
            raise PreflightFailed(
                f"cannot reverse online deploy {target.deploy_id}: {refusal}; "
                f"`fab {env.name} rollback --method restore --discard-writes` restores its "
                "backup, losing what the app wrote since"
            )
        assert rid is not None
        self.check_releases(target)
        self.admin = session.connect(admin=True, app_name=self.app_name)
        added = onlinelib.Added.from_json(target.online)
        after_migrate = dict((target.online or {}).get("after_migrate") or {})

        def written() -> dict[str, int]:
            now = onlinelib.added_figures(self.admin, added)
            return onlinelib.written_into(after_migrate, now)

        with self.step("values written") as s:
            found = written()
            s.detail = onlinelib.listing(found) or "none: the reverse drops only what it added"
            if found and not self.discard_writes:
                raise PreflightFailed(
                    f"the release of {target.deploy_id} wrote into what a reverse drops "
                    f"({onlinelib.listing(found)}); --discard-writes reverses anyway, losing "
                    "them; nothing was changed"
                )
        self.undoing = True
        self.switch_back(None)
        if not self.discard_writes:
            with self.step("values written again") as s:
                found = written()  # written after the check, before the code went back
                if found:
                    self.state["database"] = "expanded (not reversed); the previous release serves"
                    self.fail(
                        StepFailed(
                            f"values were written while the code went back "
                            f"({onlinelib.listing(found)}); rerun with --discard-writes"
                        )
                    )
                s.detail = "none"
        rp = reverselib.ReversePlan.from_json(target.reverse)
        assert rp is not None
        try:
            with self.step("reverse migrations") as s, self.hooked("migrate", []):
                reversal = undo.reverse(self, rid, rp)
                self.report.rollback.output = reversal.output
                s.detail = ", ".join(f"{a} → {t}" for a, t in sorted(rp.targets.items()))
            with self.step("verify reverse") as s:
                since = next(r for r in target.counter_readings if r.event == BACKUP)
                try:
                    found_v = onlinelib.verify(self, before, reversal, since, properties=False)
                except undo.ReverseNotVerified as exc:
                    self.report.verification = exc.verification
                    self.state["database"] = f"reversed but NOT verified: {exc}"
                    raise
                self.report.verification = found_v
                n_written = len(found_v["written_since"])
                self.state["database"] = (
                    "migrations reversed; verified: schema, migration set and tables nobody "
                    "wrote since as before"
                    + (f"; {n_written} table(s) the app wrote kept as written" if n_written else "")
                )
                s.detail = self.state["database"]
        except Exception as exc:
            if self.state["database"] == "untouched":
                self.state["database"] = "reverse FAILED part way"
            self.fail(exc)
        with self.step("remove undone release") as s:
            s.detail = self.remove_release(rid)
        return (
            f"rolled back online deploy {target.deploy_id} ({target.ref}) while serving: code "
            f"{self.state['code']}; database {self.state['database']}; downtime "
            f"{self.availability.seconds():.1f} s"
        )

    def switch_back(self, rid: str | None) -> list[Remote]:
        """Hosts not on their recorded previous release go back to it in batches
        (seed.deploy.rolling), then the undone release's folder goes. Returns the hosts switched."""
        session = self.session
        current = {r.label: rel.current_release(r, self.at(r)) for r in session.serving_remotes()}
        self.availability.start([label for label, c in current.items() if c])
        hosts = [
            r for r in session.serving_remotes() if current[r.label] != self.previous.get(r.label)
        ]
        rolling.roll(self, hosts, lambda r: self.previous.get(r.label), "switch back")
        self.state["code"] = undo.code_text(self.previous)
        self.state["app"] = f"serving on {sum(1 for p in self.previous.values() if p)} host(s)"
        if rid is not None:  # (None: the caller still needs it, and removes it itself)
            with self.step("remove undone release") as s:
                s.detail = self.remove_release(rid)
        return hosts

    def execute(self, database: str = "restore") -> None:
        """`database`: restore (the backup), reverse (the migrations, with the deploy's
        code) or none (already as before). The database goes first: if it cannot be put
        back, code and database still belong together."""
        session, target = self.session, self.target
        assert target is not None and target.backup is not None and target.before is not None
        if database == "reverse":
            self.reverse_database()
        elif database == "restore":
            with self.hooked("migrate", []):
                backup = target.backup
                self.replace_database(
                    backup.path, backup.sha256, target.before, self.state, backup.details
                )
        with self.step("code") as s, self.hooked("switch", session.serving_remotes()):
            hosts = session.serving_remotes()
            undo.put_back_code(self, self.previous, hosts, only_changed=False)
            self.state["code"] = undo.code_text(self.previous)
            s.detail = self.state["code"]
        with self.step("start app") as s:
            hosts = [r for r in session.serving_remotes() if self.previous.get(r.label)]
            s.detail = self.state["app"] = self.start_app(hosts)
        with self.step("remove undone release") as s:
            s.detail = self.remove_release(target.release_after)

    def remove_release(self, rid: str | None) -> str:
        """The undone (or never finished) release's folder goes (undo.remove_release)."""
        if not rid:
            return "none recorded"
        removed = undo.remove_release(self, rid, self.session.app_remotes())
        return f"{rid} removed from {removed} host(s)"

    def reverse_database(self) -> None:
        """`migrate <app> <target>` with the deploy's own code (undo.reverse); then the
        migration set and the schema must be the before-state's, tables the app did not write
        since as in the before-state, tables no migration touched as just before."""
        env, target = self.env, self.target
        assert target is not None and target.before is not None and target.release_after
        rp = reverselib.ReversePlan.from_json(target.reverse)
        assert rp is not None and self.report.rollback is not None
        hint = (
            f"; `fab {env.name} rollback --method restore --discard-writes` restores the "
            "backup instead"
        )
        with self.step("reverse migrations") as s, self.hooked("migrate", []):
            try:
                reversal = undo.reverse(self, target.release_after, rp)
            except SeedError as exc:
                self.state["database"] = "reverse migrate FAILED part way"
                raise StepFailed(f"{exc}{hint}") from None
            self.report.rollback.output = reversal.output
            s.detail = ", ".join(f"{a} → {t}" for a, t in sorted(rp.targets.items()))
        with self.step("verify reverse") as s:
            try:
                found = undo.verify_reverse(
                    self, target.before, reversal, self.written, properties=False
                )
            except undo.ReverseNotVerified as exc:
                self.report.verification = exc.verification
                self.state["database"] = f"reversed but NOT verified: {exc}"
                raise StepFailed(f"{exc}{hint}") from None
            self.report.verification = found
            self.state["database"] = (
                "migrations reversed; verified (schema, migration set, tables)"
                + (
                    f"; rows written since kept in {len(self.written)} table(s)"
                    if self.written
                    else ""
                )
            )
            s.detail = (
                f"{found['migrations']} migrations, schema and {found['tables']} table(s) as before"
            )

    def fail(self, exc: BaseException, what: str = "") -> NoReturn:
        """Exit 6 with where each part stands."""
        what = what or f"rollback of {self.target.deploy_id if self.target else '?'}"
        message = (
            f"{what} FAILED: {exc}. Database: {self.state['database']}. "
            f"Code: {self.state['code']}. App: {self.state['app']}"
        )
        self.finish("failed", HumanNeeded.code, message)
        raise HumanNeeded(message) from None

    # -- recovery of interrupted runs ------------------------------------------------------

    def recover(self) -> str:
        """Runs that died half way (journal records still `running`): settle what of them
        still runs, then put the environment back to the state before the oldest of them,
        verified. Returns the message, or '' when none needed more than settling (the
        ordinary rollback then goes on)."""
        env = self.env
        runs = self.interrupted
        assert self.lock_conn is not None
        with self.step("interrupted runs") as s:
            self.report.recovering = [r.id for r in runs]
            s.detail = "; ".join(r.describe() for r in runs)
        with self.step("stop jobs") as s:
            done = recovery.settle_jobs(runs, self.stop_jobs, self.out.detail)
            ended = recovery.end_sessions(self.lock_conn, env, runs)
            dropped = []
            for run in runs:
                for name in recovery.leftovers(self.lock_conn, env, run.id):
                    restorelib.drop_if_exists(self.lock_conn, name)
                    dropped.append(name)
            reopened = recovery.reopen_database(self.lock_conn, env.db.name)
            parts = [*done, f"{ended} session(s) ended"]
            parts += [f"dropped {', '.join(dropped)}"] if dropped else []
            parts += [f"connections to {env.db.name} allowed again"] if reopened else []
            s.detail = "; ".join(parts)
        blocking = [r for r in runs if r.blocking]
        if not blocking:
            for run in runs:
                self.mark_interrupted(run, "its jobs stopped")
            return ""
        # the oldest is the run that broke things; later ones died recovering it
        first = blocking[0]
        try:
            if first.kind == "upgradedb" and first.record.mode == CODE_ONLY:
                message = self.recover_code_only(first.record)
            elif first.kind == "upgradedb" and first.record.mode == ONLINE:
                message = self.recover_online(first.record)
            elif first.kind == "upgradedb":
                message = self.recover_deploy(first.record)
            elif first.kind == "rollback" and first.record.target:
                message = self.recover_rollback(first.record)
            else:
                message = self.recover_restore(first.record)
        except PreflightFailed:
            raise
        except Exception as exc:
            self.fail(exc, f"recovery of {first.kind} {first.id}")
        for run in runs:
            self.mark_interrupted(run, "recovered")
        return message

    def recover_deploy(self, record: RunRecord) -> str:
        """A deploy that died at any point: database back to its before-state (restored from
        its verified backup only when it differs), `current` back to the recorded previous
        release, its release folder removed, the app started and checked."""
        session = self.session
        steps = {s.name: s.outcome for s in record.steps}
        before = record.before
        previous: dict[str, str | None] = dict(record.previous_releases or {})
        rid = record.release_after
        self.freeze()
        self.state["app"] = "stopped (maintenance on)"
        restore = False
        with self.step("compare database") as s:
            if before is None:
                applied = [f"{a}.{n}" for a, n in dblib.applied_migrations(self.admin)]
                recorded = record.migrations.applied_before if record.migrations else None
                if "migrate" in steps or (recorded is not None and applied != recorded):
                    raise HumanNeeded(
                        f"deploy {record.deploy_id} has no before-state yet its migrations "
                        "may have run; a person must look"
                    )
                s.detail = self.state["database"] = (
                    "untouched (the deploy died before its before-state)"
                )
            else:
                found = undo.verify_database(self, before)
                restore = not found["identical"]
                if restore:
                    s.detail = "differs from the before-state: " + "; ".join(found["problems"])
                    self.state["database"] = "as the interrupted deploy left it"
                else:
                    s.detail = self.state["database"] = (
                        "unchanged: verified identical to the before-state"
                    )
        if restore:
            backup = record.backup
            if backup is None or not backup.path:
                raise HumanNeeded(
                    f"the database differs from deploy {record.deploy_id}'s before-state and "
                    "that deploy has no backup record"
                )
            assert before is not None
            self.check_writes_since_deploy(record)
            with self.hooked("migrate", []):
                self.replace_database(
                    backup.path, backup.sha256, before, self.state, backup.details
                )
        with self.step("code") as s, self.hooked("switch", session.serving_remotes()):
            hosts = session.serving_remotes()
            undo.put_back_code(self, previous, hosts, only_changed=True)
            removed = self.remove_release(rid)
            self.previous = {r.label: rel.current_release(r, self.at(r)) for r in hosts}
            self.state["code"] = undo.code_text(self.previous)
            s.detail = f"{self.state['code']}; {removed}"
        with self.step("start app") as s:
            hosts = [r for r in session.serving_remotes() if self.previous.get(r.label)]
            s.detail = self.state["app"] = self.start_app(hosts)
        return (
            f"recovered interrupted deploy {record.deploy_id} ({record.ref}): "
            f"database {self.state['database']}; code {self.state['code']}"
        )

    def recover_code_only(self, record: RunRecord) -> str:
        """A code-only deploy that died: it changed no data, so only the code goes back, host
        by host while the site serves (seed.deploy.rolling); hosts it may have drained and not
        switched yet are put back into traffic (app.undrain is idempotent by contract)."""
        self.state["database"] = "untouched (the interrupted deploy was code-only)"
        self.code_back_while_serving(record, record.release_after)
        return (
            f"recovered interrupted code-only deploy {record.deploy_id} ({record.ref}): code "
            f"{self.state['code']}; the database was not touched"
        )

    def recover_online(self, record: RunRecord) -> str:
        """An online deploy that died: the site served throughout, so the recovery does too.
        Code back host by host (hosts it drained but did not switch go back into traffic),
        INVALID indexes it left dropped, and the migrations it applied reversed with its own
        code and verified as an online reverse (seed.undo.online); a reverse that would drop
        values its release wrote needs --discard-writes."""
        session = self.session
        self.admin = session.connect(admin=True, app_name=self.app_name)
        online = record.online or {}
        with self.step("invalid indexes") as s:
            app = session.connect(admin=False, app_name=self.app_name)
            try:
                before_invalid = list(online.get("invalid_indexes_before") or [])
                dropped = onlinelib.drop_new_invalid(app, before_invalid) if online else []
            finally:
                app.close()
            s.detail = f"dropped {', '.join(dropped)}" if dropped else "none left"
        before = record.before
        applied_before = set((before or {}).get("applied_migrations") or [])
        now = [f"{a}.{n}" for a, n in dblib.applied_migrations(self.admin)]
        applied = [m for m in now if m not in applied_before] if before else []
        if applied:
            found = onlinelib.written_into(
                dict(online.get("after_migrate") or {}),
                onlinelib.added_figures(self.admin, onlinelib.Added.from_json(online)),
            )
            if found and online.get("after_migrate") is not None and not self.discard_writes:
                raise PreflightFailed(
                    f"deploy {record.deploy_id} died after its release served and wrote into "
                    f"what a reverse drops ({onlinelib.listing(found)}); --discard-writes "
                    "reverses anyway, losing them"
                )
        self.undoing = True
        self.code_back_while_serving(record, None)  # (its release reverses the migrations)
        rid = record.release_after
        if applied:
            rp = reverselib.ReversePlan.from_json(record.reverse)
            if rp is None or not rid or before is None:
                raise HumanNeeded(
                    f"deploy {record.deploy_id} applied {', '.join(applied)} and recorded no "
                    "reverse plan or release: a person must look"
                )
            with self.step("reverse migrations") as s, self.hooked("migrate", []):
                reversal = undo.reverse(self, rid, rp)
                s.detail = ", ".join(f"{a} → {t}" for a, t in sorted(rp.targets.items()))
            with self.step("verify reverse") as s:
                since = next(r for r in record.counter_readings if r.event == BACKUP)
                found_v = onlinelib.verify(self, before, reversal, since)
                self.report.verification = found_v
                s.detail = self.state["database"] = (
                    "migrations reversed; verified as an online reverse"
                )
        else:
            self.state["database"] = "not migrated by the interrupted deploy"
        with self.step("remove undone release") as s:
            s.detail = self.remove_release(rid)
        return (
            f"recovered interrupted online deploy {record.deploy_id} ({record.ref}) while "
            f"serving: code {self.state['code']}; database {self.state['database']}"
        )

    def code_back_while_serving(self, record: RunRecord, remove: str | None) -> None:
        """A dead run's hosts back to their recorded previous release, host by host while the
        site serves (seed.deploy.rolling; `remove`: the release folder to remove after), and
        hosts it may have drained without switching back into traffic (app.undrain is
        idempotent by contract)."""
        self.previous = dict(record.previous_releases or {})
        switched = self.switch_back(remove)
        undrain = self.env.app.undrain
        rest = [r for r in self.session.serving_remotes() if r not in switched]
        if undrain and rest:
            with self.step("undrain") as s:
                self.on_hosts(
                    rest,
                    lambda r: rel.run_hook(
                        r, self.at(r), undrain, f"undrain on {r.label}", rel.host_names(r)
                    ),
                    "undrain",
                )
                s.detail = ", ".join(r.label for r in rest)

    def check_writes_since_deploy(self, record: RunRecord) -> None:
        """The interrupted deploy may have served its new code: rows the app wrote since its
        backup (the writes rule) would be lost by a restore. Refuse (the app is started again
        as found) unless --discard-writes."""
        assert self.journal is not None
        records = self.journal.records()
        writes = undo.app_writes(self, records, record.deploy_id)
        if not writes or self.discard_writes:
            return
        self.unfreeze()
        self.state["app"] = "running as the interrupted deploy left it"
        raise PreflightFailed(
            f"deploy {record.deploy_id} died after serving its new code and rows were written "
            f"since its migrate ({writes.listing()}); restoring its backup would lose them. "
            f"Finish it with `fab {self.env.name} upgradedb --resume`, or roll back anyway with "
            "--discard-writes"
        )

    def recover_rollback(self, record: RunRecord) -> str:
        """A rollback that died: do it again (the restore is skipped when the interrupted one
        had already swapped the restored database in)."""
        assert self.journal is not None
        records = self.journal.records()
        target = next((r for r in records if r.deploy_id == record.target), None)
        if target is None:
            raise HumanNeeded(
                f"deploy {record.target} (the rollback's target) is not in the journal"
            )
        self.target = target
        self.report.target = target.deploy_id
        backup = self.preflight()
        steps = {s.name: s.outcome for s in record.steps}
        if steps.get("writes since") == "ok":  # checked then, and writes stopped since
            self.freeze()
            self.state["app"] = "stopped (maintenance on)"
        else:
            self.freeze_checking_writes(records, backup.run, self.discard_writes, self.state)
        assert target.before is not None
        with self.step("compare database") as s:
            found = undo.verify_database(self, target.before)
            s.detail = (
                "already restored: identical to the before-state"
                if found["identical"]
                else "not restored yet"
            )
            if found["identical"]:
                self.state["database"] = "restored (by the interrupted rollback); verified"
        self.execute(database="none" if found["identical"] else "restore")
        return (
            f"recovered interrupted rollback {record.deploy_id}: deploy {target.deploy_id} "
            f"rolled back; database verified identical to its before-state; code "
            f"{self.state['code']}"
        )

    def recover_restore(self, record: RunRecord) -> str:
        """A `restore` that died: the live database is either the old one (it died before the
        swap, which is one transaction) or the restored backup. Which one is read from the
        catalog (the swap renames the old one to `<db>_replaced_<tag>`), never guessed; a
        half-restored copy is dropped. Then the app starts."""
        env, session = self.env, self.session
        backup_id = record.backup.id if record.backup else None
        self.freeze()
        with self.step("compare database") as s:
            plan = restorelib.plan_restore(env, restorelib.db_tag(record.deploy_id))
            pg = session.connect(admin=True, dbname="postgres", app_name=self.app_name)
            try:
                swapped = plan.replaced in restorelib.replaced_databases(pg, env.db.name)
                if not swapped:
                    restorelib.drop_if_exists(pg, plan.new)  # as much disk as the database
            finally:
                pg.close()
            if not swapped:
                which = (
                    "the old database (the restore died before its swap; its half-restored "
                    "copy is dropped)"
                )
            else:
                which = (
                    f"backup {backup_id}, restored (the old database is kept as {plan.replaced})"
                )
                manifest = backups.read_manifest(env, session.state, backup_id)
                if manifest is not None:
                    found = undo.verify_database(self, backups.manifest_before_state(manifest))
                    which += (
                        ", verified identical"
                        if found["identical"]
                        else f", written since the swap: {'; '.join(found['problems'])}"
                    )
            s.detail = self.state["database"] = which
        with self.step("start app") as s:
            s.detail = self.state["app"] = self.start_app(self.running)
        self.state["code"] = "untouched (a restore does not change code)"
        return f"recovered interrupted restore {record.deploy_id}: database is {which}"
