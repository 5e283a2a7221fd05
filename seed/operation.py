"""What every state-changing command shares: connect, lock, journal, report, freeze.

`Operation.run()` connects to every host, takes the environment's lock, runs the
subclass's `body()` and always leaves an honest record (journal on the state
host, report under .seed/<env>/reports/, and `--report PATH`), whatever happens.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets as pysecrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from seed import db as dblib
from seed import release as rel
from seed import restore as restorelib
from seed.config import Environment
from seed.errors import PreflightFailed, SeedError
from seed.fanout import HostOutcomes, fan_out
from seed.journal import Journal, acquire_lock, release_lock
from seed.remote import Remote
from seed.report import Output, Report, iso, utcnow, write_json
from seed.session import Session

T = TypeVar("T")


def new_deploy_id() -> str:
    """`<UTC time>-<4 hex>`: sorts by time, unique enough for one environment."""
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{pysecrets.token_hex(2)}"


def baseline_counters(records: list[dict[str, Any]]) -> tuple[str, dict[str, int]] | None:
    """Write counters as Seed last left the database (newest record that has them)."""
    for record in reversed(records):
        after = record.get("after") or {}
        if "write_counters" in after:
            return str(record["deploy_id"]), dict(after["write_counters"])
    return None


class Operation:
    """Base of rollback, restore, backup and cleanup runs."""

    kind = "operation"
    read_only = False  # True: no lock, no journal record (the report stays local)

    def __init__(
        self,
        env: Environment,
        command: str,
        local_root: Path,
        out: Output,
        report_path: Path | None = None,
    ) -> None:
        self.env = env
        self.command = command
        self.local_root = local_root
        self.report_path = report_path
        self.out = out
        self.id = new_deploy_id()
        self.app_name = f"seed-{env.name}-{self.id}"
        self.report = Report(env.name, command, self.id)
        self.report.data["kind"] = self.kind
        self.layout = rel.Layout(env.app.deploy_to)
        self.session = Session(env)
        self.journal: Journal | None = None
        self.lock_conn: psycopg.Connection[Any] | None = None
        self.running: list[Remote] = []
        self.host_outcomes = HostOutcomes()
        self.current: dict[str, str | None] = {}

    def admin_factory(self, dbname: str | None = None) -> dblib.ConnFactory:
        """Opens admin sessions (e.g. for parallel table figures)."""
        return lambda: self.session.connect(admin=True, dbname=dbname, app_name=self.app_name)

    def on_hosts(self, remotes: list[Remote], fn: Callable[[Remote], T], step: str) -> dict[str, T]:
        """`fn` on every host at once (at most app.parallel), each host's outcome in the
        report's `hosts`; every host finishes, then the first failure is raised."""
        results = fan_out(remotes, fn, self.env.app.parallel, self.host_outcomes, step)
        self.report.data["hosts"] = self.host_outcomes.data
        return results

    def step(self, name: str) -> Any:
        return self.out.step(self.report, name)

    def record(self) -> None:
        """Write the report as it stands to the journal (progress, or the end)."""
        if self.journal is not None:
            with contextlib.suppress(SeedError, OSError):
                self.journal.write(self.id, self.report.to_json())

    def finish(self, outcome: str, code: int, message: str) -> None:
        self.report.outcome = outcome
        self.report.exit_code = code
        self.report.message = self.out.scrub(message)
        self.report.finished_at = iso()
        self.record()
        local = self.local_root / self.env.name / "reports" / f"{self.id}.json"
        write_json(local, self.report.to_json(), self.out.scrub)
        if self.report_path:
            write_json(self.report_path, self.report.to_json(), self.out.scrub)

    def prepare(self) -> None:
        """Work done before connecting to any server (nothing by default)."""

    def body(self) -> str:
        """The operation itself; returns the success message."""
        raise NotImplementedError

    def after_success(self) -> None:
        """Hook run after the success record is written."""

    def run(self) -> Report:
        env = self.env
        mode = "read-only" if self.read_only else self.id
        self.out.line(f"seed {self.kind} {env.name} ({env.description}): {mode}")
        try:
            self.prepare()
            with self.step("connect") as s:
                self.session.open()
                s.detail = ", ".join(r.label for r in self.session.remotes.values())
                s.detail += self.session.accepted_keys_note(self.report)
            if not self.read_only:
                self.journal = Journal(env, self.session.state, self.local_root, self.out.scrub)
                with self.step("lock"):
                    self.journal.ensure()
                    self.lock_conn = self.session.connect(
                        admin=True, dbname="postgres", app_name=self.app_name
                    )
                    acquire_lock(self.lock_conn, self.journal, self.id, self.command)
            message = self.body()
            self.finish("succeeded", 0, message)
            self.after_success()
            return self.report
        except SeedError as exc:
            if self.report.outcome == "running":
                self.finish("failed", exc.code, str(exc))
            raise
        except BaseException as exc:  # a bug or an interrupt: still leave an honest record
            if self.report.outcome == "running":
                with contextlib.suppress(Exception):
                    self.finish("failed", 1, f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            if self.lock_conn is not None and self.journal is not None:
                with contextlib.suppress(Exception):
                    release_lock(self.lock_conn, self.journal, self.id)
            self.session.close()
            self.out.summary(self.report)

    # -- writes stopped while the database is replaced ----------------------------------------

    def freeze(self) -> None:
        """Stop the app (maintenance on) and end the app role's sessions, so that no write
        can slip in after the writes check and every write is counted."""
        env, session = self.env, self.session
        with self.step("maintenance on") as s:
            self.current = {
                r.label: rel.current_release(r, self.layout) for r in session.serving_remotes()
            }
            self.running = [r for r in session.serving_remotes() if self.current.get(r.label)]
            if env.app.maintenance_on:
                on = env.app.maintenance_on
                self.on_hosts(
                    self.running,
                    lambda r: rel.run_hook(r, self.layout, on, "maintenance on"),
                    "maintenance on",
                )
            self.admin = session.connect(admin=True, app_name=self.app_name)
            ended = dblib.drain_sessions(self.admin, env.db.user, env.db.name, env.db.drain_timeout)
            s.detail = f"app stopped on {len(self.running)} host(s), {ended} session(s) ended"

    def unfreeze(self) -> None:
        """Nothing changed: start the app again where it was running."""
        command = self.env.app.maintenance_off or self.env.app.restart
        if command and self.env.app.maintenance_on:
            for remote in self.running:
                with contextlib.suppress(SeedError, OSError):
                    rel.run_hook(remote, self.layout, command, "maintenance off")

    def freeze_checking_writes(
        self, records: list[dict[str, Any]], discard: bool, state: dict[str, str]
    ) -> None:
        """freeze(), then check_writes(); a refusal unfreezes (nothing changed) and re-raises.
        `state["app"]` says where the app stands."""
        self.freeze()
        state["app"] = "stopped (maintenance on)"
        try:
            self.check_writes(records, discard)
        except SeedError:
            self.unfreeze()
            state["app"] = "running as before"
            raise

    def check_writes(self, records: list[dict[str, Any]], discard: bool) -> None:
        """Refuse (exit 4) when the database was written since Seed last left it."""
        with self.step("writes since") as s:
            baseline = baseline_counters(records)
            now = dblib.write_counters(self.admin)
            if baseline is None:
                moved: dict[str, int | None] = {t: None for t in now}
                since = "(no record)"
            else:
                since, counters = baseline
                moved = dblib.writes_since(counters, now)
            self.report.data["writes_since"] = {"since": since, "tables": moved}
            if moved:
                listing = ", ".join(f"{t} {'?' if n is None else n}" for t, n in moved.items())
                if not discard:
                    raise PreflightFailed(
                        f"writes happened since {since}: {listing}; a restore would lose "
                        "them. Rerun with --discard-writes to roll back anyway"
                    )
                s.detail = f"discarding writes: {listing}"
            else:
                s.detail = f"no writes since {since}"

    def start_app(self, hosts: list[Remote]) -> str:
        """maintenance off (or restart) and the health check on `hosts`."""
        env = self.env
        if not hosts:
            return "not started (no release to serve)"
        command = env.app.maintenance_off or env.app.restart

        def start(remote: Remote) -> None:
            if command:
                rel.run_hook(remote, self.layout, command, "starting the app")
            if env.app.health:
                rel.health_check(env, remote, self.layout)

        self.on_hosts(hosts, start, "start app")
        return f"serving on {len(hosts)} host(s)"

    def record_after(self) -> None:
        """Write counters as this operation leaves the database (for a later writes check)."""
        with contextlib.suppress(psycopg.Error):
            counters = dblib.write_counters(self.admin)
            self.report.data.setdefault("after", {})["write_counters"] = counters

    # -- the restore both rollback and restore do ------------------------------------------

    def replace_database(
        self, backup_path: str, sha256: str, before: dict[str, Any], state: dict[str, str]
    ) -> None:
        """Restore `backup_path` as the live database, then verify it against `before`
        (tables, migration set, database properties). `state` says where things stand."""
        env, session = self.env, self.session
        with self.step("database") as s:

            def close_live() -> None:
                self.admin.close()

            try:
                restored = restorelib.restore_as_live(
                    env,
                    session,
                    backup_path,
                    sha256,
                    before["database_properties"],
                    self.id.lower().replace("-", "_"),
                    posixpath.join(env.state_dir, "jobs", self.id, "restore"),
                    self.app_name,
                    before_swap=close_live,
                )
            except restorelib.RestoreFailed as exc:
                state["database"] = (
                    "untouched (restore failed before the swap)" if exc.live_untouched else str(exc)
                )
                raise
            replaced = restored.plan.replaced
            state["database"] = f"restored from {backup_path}; old kept as {replaced}"
            self.report.data["replaced_database"] = replaced
            s.detail = f"{backup_path} restored, {replaced} kept"
        with self.step("verify") as s:
            self.admin = session.connect(admin=True, app_name=self.app_name)
            verification = restorelib.verify_like_before(
                env, self.admin, before, self.admin_factory()
            )
            self.report.data["verification"] = verification
            if verification["problems"]:
                state["database"] += "; VERIFICATION FAILED"
                raise SeedError("; ".join(verification["problems"]))
            state["database"] += "; verified identical to the backup's snapshot"
            s.detail = (
                f"{verification['tables']} tables, {verification['rows']} rows, "
                f"{verification['migrations']} migrations equal"
            )
