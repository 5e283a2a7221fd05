"""Going back (DESIGN: Rollback): written once, used by every path that goes back.

Here, side by side: the writes rule (what the app wrote since a backup, which a
restore of it would lose), the database restored (a snapshot swapped in, or a dump
restored as a new database and swapped in) and verified against the before-state,
the reverse of a deploy's migrations with its verification, and the code put back.
The automatic rollback (seed.commands.upgradedb), `rollback` and its recovery of interrupted
runs (seed.commands.rollback), `restore` (seed.commands.backups) and `copy-to`
(seed.commands.copy_to) call these; nothing else restores, swaps or verifies
(tests/unit/test_structure.py).
Each function is one action without steps of its own: the callers name the steps
(and so the fault points) as their users know them.

**The writes rule.** Seed reads the tables' write counters (rows inserted +
updated + deleted, and each table's file node) at two moments of every run that
stops or starts the app: at the *freeze* (maintenance on, the app's sessions
ended) and at the *handover* (just before the app may write again: right after a
migrate, or before the app is started after a restore). The app can only write
between a handover and the next freeze, so the app's writes since a backup are
the sum, over every such interval since the backup, of freeze minus handover,
plus now minus the last handover. Counters that cannot be compared count as
writes: another database (a swap, a copy), statistics reset, a reading missing
from the journal, counters that went backwards. A table whose file node changed
was rewritten (TRUNCATE; VACUUM FULL and CLUSTER look the same): it counts as
written, shown as `rewritten`. Readings are taken only once the app's sessions
have ended: PostgreSQL 15 publishes an idle session's counters up to 10 s late,
and a session that ended has published them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from seed.backup import dump as backups
from seed.backup import pitr
from seed.backup import restore as restorelib
from seed.db import postgres as dblib
from seed.deploy import migrate as migratelib
from seed.deploy import release as rel
from seed.errors import SeedError, StepFailed
from seed.journal.record import BACKUP, FREEZE, HANDOVER, Reading, RunRecord
from seed.remote.ssh import Remote, q
from seed.run.report import iso
from seed.undo import reverse as reverselib

if TYPE_CHECKING:
    from seed.run.operation import Operation

UNKNOWN = "?"
REWRITTEN = "rewritten"


def read_counters(conn: psycopg.Connection[Any], event: str) -> Reading:
    """The reading now, on the database `conn` is connected to (never raises: a failed
    reading is recorded as such and counts as unknown)."""
    try:
        conn.execute("select pg_stat_clear_snapshot()")
        db = conn.execute(
            "select d.oid::text || '/' || coalesce(s.stats_reset::text, '') from pg_database d "
            "left join pg_stat_database s on s.datid = d.oid where d.datname = current_database()"
        ).fetchone()
        rows = conn.execute(
            "select schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del, "
            "coalesce(pg_relation_filenode(relid), 0) from pg_stat_user_tables order by 1"
        ).fetchall()
    except psycopg.Error as exc:
        return Reading(event, iso(), error=str(exc).splitlines()[0] if str(exc) else "error")
    return Reading(
        event,
        iso(),
        database=str(db[0]) if db else "",
        counters={str(r[0]): int(r[1]) for r in rows},
        files={str(r[0]): int(r[2]) for r in rows},
    )


def record_reading(op: Operation, event: str) -> Reading:
    """A reading now, on the run's admin session (opened again if it was closed, e.g. by a
    swap), appended to its report's `counter_readings`."""
    conn = getattr(op, "admin", None)
    try:
        if conn is None or conn.closed:
            conn = op.admin = op.session.connect(admin=True, app_name=op.app_name)
        reading = read_counters(conn, event)
    except (SeedError, psycopg.Error) as exc:  # unknown: nothing compares with it
        reading = Reading(event, iso(), error=str(exc))
    op.report.counter_readings.append(reading)
    return reading


@dataclass
class Writes:
    """Per table: rows written, REWRITTEN, or UNKNOWN; `why` names what could not be compared."""

    tables: dict[str, int | str] = field(default_factory=dict)
    why: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tables)

    def add(self, table: str, moved: int | str) -> None:
        old = self.tables.get(table)
        if old is None:
            new = moved
        elif UNKNOWN in (old, moved):
            new = UNKNOWN
        elif REWRITTEN in (old, moved):
            new = REWRITTEN
        else:
            new = int(old) + int(moved)
        if new != 0:
            self.tables[table] = new

    def unknown(self, tables: set[str], why: str) -> None:
        for table in tables:
            self.tables[table] = UNKNOWN
        if why not in self.why:
            self.why.append(why)

    def listing(self) -> str:
        return ", ".join(f"{t} {n}" for t, n in sorted(self.tables.items()))

    def to_json(self) -> dict[str, Any]:
        return {"tables": dict(sorted(self.tables.items())), "why": self.why}


def between(start: Reading, end: Reading, writes: Writes) -> None:
    """Add what was written between two readings to `writes`."""
    tables = set(start.counters) | set(end.counters)
    if start.error or end.error:  # (no counters to name: every table the other one has)
        writes.unknown(tables or {"(all tables)"}, "a counter reading failed")
        return
    if start.database and end.database and start.database != end.database:
        writes.unknown(tables, "the database was replaced or its statistics reset since")
        return
    for table in sorted(tables):
        if table not in start.counters or table not in end.counters:
            if end.counters.get(table, 0) or start.counters.get(table, 0):
                writes.add(table, UNKNOWN)
            continue
        files = (start.files.get(table), end.files.get(table))
        if None not in files and files[0] != files[1]:  # (records before file nodes: counters)
            writes.add(table, REWRITTEN)
            continue
        delta = end.counters[table] - start.counters[table]
        if delta < 0:
            writes.unknown({table}, "counters went backwards (statistics reset)")
        elif delta:
            writes.add(table, delta)


def writes_since_backup(records: list[RunRecord], run_id: str, now: Reading) -> Writes:
    """The app's writes since the backup taken by run `run_id` (the writes rule), `now`
    being a reading taken with the app stopped and its sessions ended."""
    writes = Writes()
    ids = [r.deploy_id for r in records]
    if run_id not in ids:
        writes.unknown(
            set(now.counters), f"run {run_id} (which took the backup) is not in the journal"
        )
        return writes
    start = ids.index(run_id)
    open_at: Reading | None = None  # where the app's current writing interval began
    first = True
    for record in records[start:]:
        readings = record.counter_readings
        if first:
            first = False
            # the backup's own moment: a deploy froze the app for it (nothing open yet); a
            # backup of a serving database opens the interval at its reading
            mark = next((i for i, r in enumerate(readings) if r.event in (FREEZE, BACKUP)), None)
            if mark is None:
                if record.kind != "upgradedb":
                    writes.unknown(set(now.counters), f"run {run_id} recorded no counters")
                    return writes
                mark = -1  # a deploy from before readings: its freeze was not recorded
            elif readings[mark].event == BACKUP:
                open_at = readings[mark]
            readings = readings[mark + 1 :]
        for reading in readings:
            if reading.event == FREEZE:
                if open_at is not None:
                    between(open_at, reading, writes)
                open_at = None
            elif reading.event == HANDOVER:
                if open_at is not None:  # the app was started again without a freeze on record
                    writes.unknown(
                        set(open_at.counters) | set(reading.counters),
                        f"run {record.deploy_id} recorded no freeze before its handover",
                    )
                open_at = reading
    if open_at is not None:
        between(open_at, now, writes)
    return writes


def app_writes(op: Operation, records: list[RunRecord], backup_run: str) -> Writes:
    """The writes rule for run `op`, frozen now (its last freeze reading), since the backup
    of run `backup_run`; recorded in its report as `writes_since`."""
    writes = writes_since_backup(records, backup_run, op.last_freeze())
    op.report.writes_since = {"since": backup_run, **writes.to_json()}
    return writes


# -- reverse: the deploy's migrations undone with its own code ----------------------------


@dataclass
class Reversal:
    """What a reverse did, and the figures verify_reverse compares with."""

    output: str
    just_before: dict[str, Any]  # figures, just before the reverse, of tables no migration touched


def reverse(op: Operation, release: str, rp: reverselib.ReversePlan) -> Reversal:
    """`migrate <app> <target>` for every app of the deploy, with the release `release`
    (the deploy's own code: it knows how to go back). Figures of the tables no migration
    touched are taken first: they must come out of the reverse unchanged."""
    env = op.env
    tables = [t.qualified for t in dblib.list_tables(op.admin)]
    kept = set(reverselib.compared(tables)) - reverselib.touched(rp, tables)
    kept = {t for t in kept if t.split(".", 1)[-1] != "django_migrations"}  # compared as a set
    figures = op.table_figures(op.admin)
    just_before = {k: v.to_json() for k, v in figures.items() if k in kept}
    outcome = migratelib.reverse_migrations(
        env,
        op.session.migrator,
        op.at(op.session.migrator),
        op.at(op.session.migrator).release(release),
        op.job_dir("reverse"),
        op.app_name,
        rp.targets,
        on_output=op.out.detail,
        on_lost=op.reconnect_all,
    )
    return Reversal(op.out.scrub(outcome.output), just_before)


def verify_reverse(
    op: Operation,
    before: dict[str, Any],
    reversal: Reversal,
    written: set[str],
    properties: bool = True,
) -> dict[str, Any]:
    """After a reverse: the migration set and the schema (pg_dump -s) are the before-state's;
    every table the app did not write since (`written`) has the before-state's count and
    checksum (content types and permissions aside: post_migrate adds them); tables no
    migration touched are as they were just before the reverse (rows written since kept).
    Database-level properties are compared too unless `properties` is False (a rollback of
    an older deploy: they are Seed's to restore, not the reverse's). Returns the
    verification; ReverseNotVerified names what differs."""
    env = op.env
    if not properties:
        now_props = restorelib.database_properties(op.admin, env.db.name)
        before = {**before, "database_properties": now_props}
    skip = set(reverselib.NOT_COMPARED) | {t.split(".", 1)[-1] for t in written}
    found = restorelib.verify_like_before(env, op.admin, before, op.admin_factory(), skip=skip)
    schema = backups.schema_fingerprint(
        env, op.session.state, op.job_dir("schema-after"), op.app_name
    )
    if schema != before.get("schema_sha256"):
        found["problems"].append("the schema (pg_dump -s) differs from the before-state")
    now = op.table_figures(op.admin)
    changed = sorted(
        t
        for t, figures in reversal.just_before.items()
        if not dblib.same_figures(now[t].to_json() if t in now else None, figures)
    )
    if changed:
        found["problems"].append(f"tables no migration touched changed: {', '.join(changed)}")
    found.update(
        method="reverse",
        identical=not found["problems"],
        written_since=sorted(written),
        untouched_tables=len(reversal.just_before),
    )
    if found["problems"]:
        raise ReverseNotVerified(found)
    return found


class ReverseNotVerified(StepFailed):
    """The reverse ran but did not give the before-state back."""

    def __init__(self, verification: dict[str, Any]) -> None:
        super().__init__("; ".join(verification["problems"]))
        self.verification = verification


# -- the database back: restore (snapshot or dump), verify ----------------------------------


def verify_database(
    op: Operation, before: dict[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Every table's count + checksum, the migration set and the database-level properties
    compared with `before` (tables named in `skip` aside); `problems` says what differs."""
    return restorelib.verify_like_before(op.env, op.admin, before, op.admin_factory(), skip)


def before_swap(op: Operation) -> None:
    """Right before a swap: the lock confirmed (a run that lost it must not swap), the
    run's own sessions to the live database closed."""
    op.ensure_lock()
    op.close_sessions()


def restore_dump(
    op: Operation, backup_path: str, sha256: str, props: dict[str, Any]
) -> restorelib.Restored:
    """The backup restored as a new database created like the original, its properties
    re-made, then swapped in for the live one (kept as `<db>_replaced_<tag>`). Right before
    the swap the run's lock is confirmed (a restore takes minutes: a run that lost its lock
    meanwhile leaves the live database alone), its own sessions to the live database are
    closed, and opened again after."""
    try:
        size = None  # the live database's size: about what the restored copy will hold
        with contextlib.suppress(psycopg.Error, AttributeError):
            size = dblib.database_size(op.admin, op.env.db.name)
        with op.out.progress("restored", size) as progress:
            return restorelib.restore_as_live(
                op.env,
                op.session,
                backup_path,
                sha256,
                props,
                restorelib.db_tag(op.id),
                op.job_dir("restore"),
                op.app_name,
                before_swap=lambda: before_swap(op),
                on_lost=op.reconnect_all,
                progress=progress,
            )
    finally:
        with contextlib.suppress(SeedError, psycopg.Error):  # the next step says it fails
            op.open_sessions()


def restore_to_point(op: Operation, details: dict[str, Any]) -> dict[str, Any]:
    """The whole cluster restored to a run's restore point (backup.strategy pitr): from the
    newest backup in the repository that ended before the point (expire may have removed
    the one the run took), the cluster stopped, restored with --delta, started, replayed
    to the point and promoted. The run's lock lives in the cluster: confirmed before, taken
    back after (LockLost if another run took it meanwhile); its sessions closed and opened
    again. Returns the backup's label and seconds per part."""
    env, session = op.env, op.session
    point = pitr.RestorePoint.from_json(details["restore_point"])
    info = pitr.repo_info(env, session.repository)
    chosen = info.before(point.lsn)
    if chosen is None:
        raise StepFailed(
            f"no backup in the pgBackRest repository ended before restore point {point.name} "
            f"(lsn {point.lsn}): they expired; the cluster was not touched"
        )
    op.ensure_lock()
    op.close_sessions()
    if op.lock_conn is not None:
        with contextlib.suppress(Exception):
            op.lock_conn.close()
    parts: dict[str, Any] = {"backup": chosen.label, "point": point.name}
    parts.update(
        pitr.restore_cluster(
            env, session.state, point, chosen.label, op.job_dir("pitr-restore"), op.out.detail
        )
    )
    parts["replay"] = round(
        pitr.wait_promoted(
            lambda: session.connect(admin=True, dbname="postgres", app_name=op.app_name), point
        ),
        3,
    )
    op.retake_lock(why="the cluster was restarted")
    op.open_sessions()
    return parts


def swap_snapshot(op: Operation, snapshot_db: str) -> tuple[str, list[str]]:
    """The snapshot copy taken in the maintenance window swapped in for the live database
    (kept as `<db>_replaced_<tag>`), its sequences moved to max(snapshot, live) first.
    Returns the replaced database's name and the sequences moved."""
    env, session = op.env, op.session
    plan = restorelib.RestorePlan(
        live=env.db.name,
        new=snapshot_db,
        replaced=restorelib.scratch_name(env.db.name, f"replaced_{restorelib.db_tag(op.id)}"),
        backup_path=snapshot_db,
        backup_sha256="",
    )
    pg = session.connect(admin=True, dbname="postgres", app_name=op.app_name)
    try:
        moved = restorelib.prepare_snapshot(
            pg,
            lambda: session.connect(admin=True, dbname=plan.new, app_name=op.app_name),
            plan.new,
            restorelib.sequence_values(op.admin),
        )
        before_swap(op)
        restorelib.swap(pg, plan)
    finally:
        pg.close()
        op.open_sessions()
    return plan.replaced, moved


def swap_in(op: Operation, plan: restorelib.RestorePlan) -> None:
    """A database made elsewhere (a masked copy) swapped in for the live one, in one
    transaction connected to `postgres`; the live one kept as `plan.replaced`."""
    before_swap(op)
    pg = op.session.connect(admin=True, dbname="postgres", app_name=op.app_name)
    try:
        restorelib.swap(pg, plan)
    finally:
        pg.close()


# -- the code back ---------------------------------------------------------------------------


def put_back_code(
    op: Operation, previous: dict[str, str | None], hosts: list[Remote], only_changed: bool
) -> None:
    """`current` back to the recorded previous release on `hosts` (removed where there was
    none: a first deploy). With `only_changed`, hosts the record does not name, or already
    on their previous release, are left alone. Every host is tried; SeedError names each
    host that is not back."""
    problems = []
    for remote in hosts:
        if only_changed and remote.label not in previous:
            continue  # never switched: `current` is as it was
        prev = previous.get(remote.label)
        try:
            if only_changed and rel.current_release(remote, op.at(remote)) == prev:
                continue
            if prev:
                rel.switch_current(remote, op.at(remote), prev)
            else:
                remote.check(f"rm -f {q(op.at(remote).current)}", "removing current")
        except SeedError as err:
            problems.append(str(err))
    if problems:
        raise StepFailed("code could not be put back: " + "; ".join(problems))


def remove_release(op: Operation, rid: str, hosts: list[Remote]) -> int:
    """The undone release's folder removed from `hosts`, as Capistrano's cleanup_rollback
    does ("back" is the file tree as it was too), except where `current` still points at
    it (a host whose code could not be put back keeps serving). Never raises: a folder
    left behind is harmless. Returns on how many hosts it was removed."""
    removed = 0
    for remote in hosts:
        with contextlib.suppress(SeedError, OSError):
            if rel.current_release(remote, op.at(remote)) != rid and remote.is_dir(
                op.at(remote).release(rid)
            ):
                rel.remove_release(remote, op.at(remote), rid)
                removed += 1
    return removed


def code_text(previous: dict[str, str | None]) -> str:
    prev = next((p for p in previous.values() if p), None)
    return f"current is {prev}" if prev else "no release (as before the first deploy)"
