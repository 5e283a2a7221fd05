"""A rehearsal of the pending migrations (`fab <env> rehearse`: seed.commands.rehearse; and a
pre-flight step of upgradedb): time them on a copy of the database, watch their locks,
extrapolate to production's size.

The environment's newest verified backup (`--backup ID`) is restored into a scratch
database `<db>_rehearse_<id>` next to it; the target code is unpacked into a
temporary folder on the migrate host with an env file whose PGDATABASE is that
scratch database. Each pending migration then runs alone (`migrate APP NAME`),
through a script that first asks its own connection for `current_database()` and
refuses anything but the scratch database. While it runs, this machine samples
`pg_locks` for the migration's session (every `SAMPLE_SECONDS`): which tables it
locks, in which mode, for how long. Before and after: each table's relfilenode (a
changed one is a rewrite), its insert/update/delete counters (rows touched) and its
row count. Durations and lock times are scaled by rows(`--scale-from`) / rows(here)
of the tables the migration touched. The post checks then run on the rehearsed
database, and the scratch database and folder are dropped, whatever happens.

`rehearse.max_lock_seconds` (a write-blocking lock, predicted at scale) and
`rehearse.max_total_seconds` (all migrations, predicted) make it a gate: over budget
→ exit 7 alone, exit 4 as a pre-flight step of upgradedb (`rehearse.before_upgradedb`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import psycopg

from seed.backup import dump as backups
from seed.backup import restore as restorelib
from seed.backup.dump import find_manifest
from seed.checks import run as checkrun
from seed.config.environment import Environment, load_environment
from seed.deploy import release as rel
from seed.deploy.plan import plan_deploy
from seed.deploy.target import Target, target_release
from seed.errors import PreflightFailed, SeedError
from seed.rehearse import lint as lintlib
from seed.remote.session import Session
from seed.remote.ssh import q
from seed.run.operation import Operation

SAMPLE_SECONDS = 0.05
# lock modes that block writes to the table (SHARE and stronger)
BLOCKS_WRITES = (
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
STRENGTH = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    *BLOCKS_WRITES,
)
LOCKS_SQL = """
select c.relname, l.mode
from pg_locks l
join pg_stat_activity a on a.pid = l.pid
join pg_class c on c.oid = l.relation
join pg_namespace n on n.oid = c.relnamespace
where a.application_name = %s and l.locktype = 'relation' and l.granted
  and c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
  and l.database = (select oid from pg_database where datname = current_database())
"""
TABLES_SQL = """
select c.relname, c.relfilenode, greatest(c.reltuples::bigint, 0),
       coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0)
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join pg_stat_user_tables s on s.relid = c.oid
where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
"""


class LockSampler:
    """Samples the granted table locks of one application_name, in a thread."""

    def __init__(self, conn: psycopg.Connection[Any], app_name: str) -> None:
        self.conn = conn
        self.app_name = app_name
        self.seen: dict[tuple[str, str], list[float]] = {}  # (table, mode) -> [first, last]
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: str | None = None

    def __enter__(self) -> LockSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops sampling and closes its connection (also when the migration failed)."""
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(psycopg.Error):
            self.conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.conn.execute(LOCKS_SQL, (self.app_name,)).fetchall()
            except psycopg.Error as exc:
                self.error = str(exc).splitlines()[0]
                return
            now = time.monotonic() - self.started
            self.samples += 1
            for table, mode in rows:
                span = self.seen.setdefault((str(table), str(mode)), [now, now])
                span[1] = now
            self._stop.wait(SAMPLE_SECONDS)

    def locks(self) -> list[dict[str, Any]]:
        """Per table, the strongest mode seen and how long it was held (first to last
        sample, plus one interval), strongest first."""
        strongest: dict[str, tuple[str, float]] = {}
        for (table, mode), (first, last) in self.seen.items():
            held = last - first + SAMPLE_SECONDS
            current = strongest.get(table)
            rank = STRENGTH.index(mode) if mode in STRENGTH else -1
            if current is None or rank > STRENGTH.index(current[0]):
                strongest[table] = (mode, held)
        out = [
            {
                "table": table,
                "mode": mode,
                "seconds": round(held, 3),
                "blocks_writes": mode in BLOCKS_WRITES,
            }
            for table, (mode, held) in strongest.items()
        ]
        return sorted(out, key=lambda x: (-STRENGTH.index(x["mode"]), x["table"]))


@dataclass
class Rehearsed:
    """One migration, rehearsed."""

    migration: str
    seconds: float
    locks: list[dict[str, Any]]
    rewrites: list[str]
    rows_touched: dict[str, int]
    rows: dict[str, int]  # rows of the touched tables here
    scale: float = 1.0
    predicted_seconds: float = 0.0
    predicted_locks: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "seconds": round(self.seconds, 3),
            "locks": self.locks,
            "rewrites": self.rewrites,
            "rows_touched": self.rows_touched,
            "rows": self.rows,
            "scale": round(self.scale, 3),
            "predicted_seconds": round(self.predicted_seconds, 3),
            "predicted_locks": self.predicted_locks,
        }

    def describe(self) -> str:
        lock = next((x for x in self.locks if x["blocks_writes"]), None)
        text = f"{self.migration}: {self.seconds:.2f} s"
        if lock:
            text += f", {lock['mode']} on {lock['table']} {lock['seconds']:.2f} s"
        if self.rewrites:
            text += f", rewrote {', '.join(self.rewrites)}"
        touched = sum(self.rows_touched.values())
        if touched:
            text += f", {touched:,} rows touched"
        if self.scale != 1.0:
            text += f"; at scale x{self.scale:.1f}: ~{self.predicted_seconds:.1f} s"
            plock = next((x for x in self.predicted_locks if x["blocks_writes"]), None)
            if plock:
                text += f", {plock['mode']} ~{plock['seconds']:.1f} s"
        return text


def extrapolate(item: Rehearsed, target_rows: dict[str, int]) -> None:
    """Scale by the largest rows(target)/rows(here) among the touched tables (linear:
    rewrites, updates and scans are; an index build is n log n, a little more)."""
    ratios = {
        t: target_rows[t] / max(1, here)
        for t, here in item.rows.items()
        if t in target_rows and here > 0
    }
    item.scale = max(ratios.values(), default=1.0)
    item.predicted_seconds = item.seconds * item.scale
    item.predicted_locks = [
        {**lock, "seconds": round(lock["seconds"] * ratios.get(lock["table"], 1.0), 3)}
        for lock in item.locks
    ]


def table_state(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int, int]]:
    """table -> (relfilenode, rows estimate, insert+update+delete counter)."""
    conn.execute("select pg_stat_clear_snapshot()")
    rows = conn.execute(TABLES_SQL).fetchall()
    return {str(t): (int(f), int(n), int(c)) for t, f, n, c in rows}


def exact_rows(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, int]:
    out = {}
    for table in tables:
        row = conn.execute(
            psycopg.sql.SQL("select count(*) from {}").format(psycopg.sql.Identifier(table))
        ).fetchone()
        out[table] = int(row[0]) if row else 0
    return out


def rehearse(
    op: Operation,
    session: Session,
    target: Target | None,
    scale_from: str | None,
    backup_id: str = "latest",
) -> dict[str, Any]:
    """The rehearsal itself, as steps of `op` (a `rehearse` run, or an upgradedb's
    pre-flight); returns the report's `rehearsal` section."""
    env = op.env
    assert target is not None
    scratch = restorelib.scratch_name(env.db.name, f"rehearse_{restorelib.db_tag(op.id)}")
    section: dict[str, Any] = {"ref": target.ref, "sha": target.sha, "scratch": scratch}
    op.report.rehearsal = section
    app_name = f"{op.app_name}-rh"
    with op.step("rehearsal backup") as s:
        manifests = backups.list_manifests(env, session.state)
        manifest = find_manifest(manifests, backup_id)
        restorelib.verify_backup(env, session.state, manifest["path"], manifest["sha256"], False)
        section["backup"] = manifest["id"]
        s.detail = f"{manifest['id']} ({manifest.get('created_at', '?')})"
    with op.step("scale") as s:
        target_rows, source = scale_rows(op, session, scale_from)
        section["scale_from"] = source
        s.detail = f"row counts of {source} ({len(target_rows)} tables)"
    # the scratch database's cluster: the environment's own, or rehearse.cluster
    base, own = env, session
    if env.rehearse.cluster:
        host, port = env.rehearse.cluster
        base = replace(env, db=replace(env.db, host=host, port=port))
        with op.step("rehearsal cluster") as s:
            own = Session(base)
            own.open()
            s.detail = f"{host}:{port} (rehearse.cluster)"
        section["cluster"] = f"{host}:{port}"
    try:
        return _rehearse_on(
            op, own, base, manifest, scratch, target, target_rows, section, app_name
        )
    finally:
        if own is not session:
            own.close()


def _rehearse_on(
    op: Operation,
    session: Session,
    env: Environment,
    manifest: dict[str, Any],
    scratch: str,
    target: Target,
    target_rows: dict[str, int],
    section: dict[str, Any],
    app_name: str,
) -> dict[str, Any]:
    """Restore, migrate one by one, check, drop — on `env`'s cluster (maybe
    rehearse.cluster) through `session`."""
    pg = session.connect(admin=True, dbname="postgres", app_name=op.app_name)
    try:
        with op.step("rehearsal database") as s:
            restorelib.drop_if_exists(pg, scratch)
            restorelib.create_like(pg, scratch, manifest["database_properties"])
            plan = restorelib.RestorePlan(env.db.name, scratch, "", manifest["path"], "")
            job = op.job_dir("rehearse-restore")
            restorelib.run_pg_restore(env, session.state, plan, job, op.app_name)
            s.detail = f"backup {manifest['id']} restored into {scratch}"
        with op.step("rehearsal before-state") as s:
            checks, s.detail = before_checks(op, session, scratch, target)
        scratch_env = replace(env, db=replace(env.db, name=scratch))
        layout = op.at(session.migrator)
        with target_release(scratch_env, session, layout, target) as unpacked:
            items = run_migrations(op, session, scratch_env, unpacked, app_name, target_rows)
        section["migrations"] = [i.to_json() for i in items]
        total = sum(i.seconds for i in items)
        predicted = sum(i.predicted_seconds for i in items)
        section["seconds"] = round(total, 3)
        section["predicted_seconds"] = round(predicted, 3)
        section["over_budget"] = over_budget(env, items, predicted)
        with op.step("rehearsal checks") as s:
            s.detail = after_checks(op, session, scratch, checks)
    finally:
        with contextlib.suppress(SeedError, psycopg.Error, OSError):
            restorelib.drop_if_exists(pg, scratch)
            pg.close()
    worst = max(
        (lk for i in items for lk in i.predicted_locks if lk["blocks_writes"]),
        key=lambda lk: lk["seconds"],
        default=None,
    )
    section["summary"] = (
        f"rehearsed {len(items)} migration(s) of {target.ref}: {total:.1f} s here, about "
        f"{predicted:.1f} s at the size of {section['scale_from']}"
        + (
            f"; longest write-blocking lock: {worst['mode']} on {worst['table']} ~"
            f"{worst['seconds']:.1f} s"
            if worst
            else "; no write-blocking lock seen"
        )
    )
    return section


def failed_checks(section: dict[str, Any]) -> list[str]:
    """Names of the checks that failed on the rehearsed database."""
    return [
        str(c["name"])
        for c in section.get("checks", [])
        if not c.get("passed") and not c.get("skipped")
    ]


def scale_rows(
    op: Operation, session: Session, scale_from: str | None
) -> tuple[dict[str, int], str]:
    """Rows per table of the environment to extrapolate to (its live pg_class/stats)."""
    if not scale_from or scale_from == op.env.name:
        conn = session.connect(admin=True, app_name=op.app_name)
        try:
            return lintlib.table_rows(conn), op.env.name
        finally:
            conn.close()
    other = load_environment(scale_from, op.env.path.parent)
    remote_session = Session(other)
    try:
        remote_session.open()
        conn = remote_session.connect(admin=True, app_name=op.app_name)
        return lintlib.table_rows(conn), other.name
    finally:
        remote_session.close()


def run_migrations(
    op: Operation,
    session: Session,
    scratch_env: Environment,
    unpacked: Any,
    app_name: str,
    target_rows: dict[str, int],
) -> list[Rehearsed]:
    remote = session.migrator
    scratch = scratch_env.db.name
    with op.step("rehearsal plan") as s:
        plan = plan_deploy(remote, unpacked.layout, unpacked.path, scratch_env, op.app_name)
        s.detail = f"{len(plan.pending)} to rehearse: {', '.join(plan.pending) or 'none'}"
    script = resources.files("seed.remote.scripts").joinpath("django_migrate_one.py").read_bytes()
    script_path = f"{unpacked.path}/.seed-migrate-one.py"
    remote.put_bytes(script, script_path, mode=0o600)
    watch = session.connect(admin=True, dbname=scratch, app_name=op.app_name)
    items: list[Rehearsed] = []
    try:
        for m in plan.migrations:
            name = f"{m['app']}.{m['name']}"
            with op.step(f"rehearse {name}") as s:
                before = table_state(watch)
                command = (
                    f"cd {q(unpacked.path)} && {rel.source_env(unpacked.layout, unpacked.path)}"
                    f" && export PGAPPNAME={q(app_name)} && .venv/bin/python "
                    f"{q(script_path)} {q(m['app'])} {q(m['name'])} {q(scratch)}"
                )
                started = time.monotonic()
                sampling = session.connect(
                    admin=True, dbname=scratch, app_name=f"{op.app_name}-watch"
                )
                with LockSampler(sampling, app_name) as sampler:
                    res = remote.run(command, timeout=24 * 3600)
                seconds = time.monotonic() - started
                if "seed-rehearse REFUSED" in res.stdout:
                    raise PreflightFailed(res.stdout.strip().splitlines()[-1])
                if not res.ok or "seed-rehearse ok" not in res.stdout:
                    raise PreflightFailed(f"rehearsal of {name} failed: {res.tail(3)}")
                after = table_state(watch)
                rewrites = sorted(t for t in before if t in after and after[t][0] != before[t][0])
                touched = {
                    t: after[t][2] - before[t][2]
                    for t in after
                    if t in before and after[t][2] != before[t][2]
                }
                locks = sampler.locks()
                involved = sorted({*rewrites, *touched, *(lk["table"] for lk in locks)})
                item = Rehearsed(
                    name, seconds, locks, rewrites, touched, exact_rows(watch, involved)
                )
                extrapolate(item, target_rows)
                items.append(item)
                s.detail = item.describe()
    finally:
        watch.close()
    return items


def over_budget(env: Environment, items: list[Rehearsed], predicted: float) -> list[str]:
    budget = env.rehearse
    over = []
    if budget.max_total_seconds is not None and predicted > budget.max_total_seconds:
        over.append(
            f"all migrations ~{predicted:.1f} s at scale > max_total_seconds "
            f"{budget.max_total_seconds:g}"
        )
    if budget.max_lock_seconds is not None:
        for item in items:
            for lock in item.predicted_locks:
                if lock["blocks_writes"] and lock["seconds"] > budget.max_lock_seconds:
                    over.append(
                        f"{item.migration} holds {lock['mode']} on {lock['table']} "
                        f"~{lock['seconds']:.1f} s at scale > max_lock_seconds "
                        f"{budget.max_lock_seconds:g}"
                    )
    return over


def before_checks(
    op: Operation, session: Session, scratch: str, target: Target
) -> tuple[checkrun.CheckRun, str]:
    """The environment's and the release's checks, planned and their before-state taken on
    the rehearsal database before any migration runs."""
    env = op.env
    text = rel.file_at(target.mirror, target.sha, checkrun.REPO_CHECKS)
    checks = env.checks + checkrun.repo_checks(text, checkrun.REPO_CHECKS, env.checks)
    run = checkrun.CheckRun(checks, env.db.statement_timeout)
    conn = session.connect(admin=True, dbname=scratch, app_name=op.app_name)
    try:
        run.plan(conn)
        failed = run.before_state(conn, None)
    finally:
        conn.close()
    rehearsal(op)["checks"] = [r.to_json() for r in run.results]
    if failed:
        raise PreflightFailed(f"pre checks failed on the rehearsal database: {', '.join(failed)}")
    run.results.clear()
    return run, f"{len(checks)} check(s) planned, before-state taken"


def rehearsal(op: Operation) -> dict[str, Any]:
    """The run's `rehearsal` section (made by rehearse())."""
    assert op.report.rehearsal is not None
    return op.report.rehearsal


def after_checks(op: Operation, session: Session, scratch: str, run: checkrun.CheckRun) -> str:
    """The post checks on the rehearsed database."""
    conn = session.connect(admin=True, dbname=scratch, app_name=op.app_name)
    try:
        run.after_state(conn)
    finally:
        conn.close()
    rehearsal(op)["checks"] += [r.to_json() for r in run.results]
    return f"{len(run.results)} post check(s), {len(run.failed)} failed"
