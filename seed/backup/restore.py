"""Restore a verified backup as the live database (DESIGN: Rollback, "Restore").

Never half-done: the backup is re-verified (sha256 + full read) before anything
is touched; it is restored into a *new* database created like the original
(owner, encoding, locale), database-level properties and ACL are re-applied
(pg_dump without -C does not carry them), ANALYZE, sequences are set to
max(restored, live) so ids are never reissued; only then, connected to
`postgres`, live and new swap names in one transaction. The replaced database
is kept with connections disabled until `cleanup`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from seed.backup.dump import pgpass_line, verify_file
from seed.config.environment import Environment
from seed.db.postgres import (
    ConnFactory,
    applied_migrations,
    database_size,
    error_text,
    parallel_figures,
    recorded_algorithm,
    same_figures,
    snapshot_figures,
)
from seed.errors import SeedError, StepFailed
from seed.remote.session import Session
from seed.remote.ssh import Remote, RemoteJob, q
from seed.run.report import throttled


class RestoreFailed(StepFailed):
    """The restore did not complete; `live_untouched` says whether the live DB is as it was."""

    def __init__(self, message: str, live_untouched: bool) -> None:
        super().__init__(message)
        self.live_untouched = live_untouched


def database_properties(conn: psycopg.Connection[Any], dbname: str) -> dict[str, Any]:
    """What `CREATE DATABASE` + ALTER/GRANT/COMMENT must reproduce, from the shared catalogs."""
    row = conn.execute(
        """
        select pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate,
               d.datctype, d.datlocprovider::text, d.daticulocale, d.datconnlimit,
               shobj_description(d.oid, 'pg_database'),
               (select spcname from pg_tablespace t where t.oid = d.dattablespace)
          from pg_database d where d.datname = %s
        """,
        (dbname,),
    ).fetchone()
    if row is None:
        raise StepFailed(f"database {dbname} does not exist")
    acl = conn.execute(
        """
        select coalesce(nullif(pg_get_userbyid(a.grantee), '-'), 'PUBLIC') as grantee,
               a.privilege_type, a.is_grantable, a.grantee = 0 as public
          from pg_database d, aclexplode(d.datacl) a
         where d.datname = %s
         order by 1, 2
        """,
        (dbname,),
    ).fetchall()
    acl_is_default = conn.execute(
        "select datacl is null from pg_database where datname = %s", (dbname,)
    ).fetchone()
    settings = conn.execute(
        """
        select coalesce(pg_get_userbyid(nullif(s.setrole, 0)), ''), s.setconfig
          from pg_db_role_setting s join pg_database d on d.oid = s.setdatabase
         where d.datname = %s
         order by 1
        """,
        (dbname,),
    ).fetchall()
    return {
        "owner": row[0],
        "encoding": row[1],
        "collate": row[2],
        "ctype": row[3],
        "locale_provider": row[4],
        "icu_locale": row[5],
        "connection_limit": row[6],
        "comment": row[7],
        "acl_default": bool(acl_is_default and acl_is_default[0]),
        "acl": [[("PUBLIC" if r[3] else r[0]), r[1], bool(r[2])] for r in acl],
        "settings": [[role, sorted(cfg)] for role, cfg in settings],
        "tablespace": row[8],
    }


def comparable_properties(props: dict[str, Any]) -> dict[str, Any]:
    """Properties a restored database must share with the original (all of them; records
    from before Seed kept the tablespace say pg_default, where every restore went then)."""
    return {
        **props,
        "tablespace": props.get("tablespace", "pg_default"),
        "acl": sorted(tuple(a) for a in props["acl"]),
        "settings": sorted((r, tuple(c)) for r, c in props["settings"]),
    }


TAG_EXAMPLE = "20261127t180411z_772b"  # a deploy id, lower-cased, "-" → "_"


def db_tag(run_id: str) -> str:
    """A run id as it appears in database names: `20261127T180411Z-772b` →
    `20261127t180411z_772b` (lower case, no quoting needed)."""
    return run_id.lower().replace("-", "_")


def scratch_name(base: str, suffix: str) -> str:
    """`<base>_<suffix>` within PostgreSQL's 63-byte identifier limit."""
    room = 63 - len(suffix.encode()) - 1
    cut = base.encode()[:room].decode(errors="ignore")
    return f"{cut}_{suffix}"


def create_like(conn: psycopg.Connection[Any], new: str, props: dict[str, Any]) -> None:
    parts = [
        sql.SQL("create database {} owner {} template template0 encoding {}").format(
            sql.Identifier(new), sql.Identifier(props["owner"]), sql.Literal(props["encoding"])
        )
    ]
    if props["locale_provider"] == "i":
        parts.append(
            sql.SQL("locale_provider icu icu_locale {}").format(sql.Literal(props["icu_locale"]))
        )
    parts.append(
        sql.SQL("lc_collate {} lc_ctype {}").format(
            sql.Literal(props["collate"]), sql.Literal(props["ctype"])
        )
    )
    if props.get("tablespace", "pg_default") != "pg_default":  # where the original lives
        parts.append(sql.SQL("tablespace {}").format(sql.Identifier(props["tablespace"])))
    conn.execute(sql.SQL(" ").join(parts))


def apply_properties(conn: psycopg.Connection[Any], dbname: str, props: dict[str, Any]) -> None:
    """Connection limit, comment, ACL and per-database settings, as the original had them."""
    db = sql.Identifier(dbname)
    conn.execute(
        sql.SQL("alter database {} connection limit {}").format(
            db, sql.Literal(props["connection_limit"])
        )
    )
    if props["comment"] is not None:
        conn.execute(
            sql.SQL("comment on database {} is {}").format(db, sql.Literal(props["comment"]))
        )
    if not props["acl_default"]:
        conn.execute(sql.SQL("revoke all on database {} from public").format(db))
        conn.execute(
            sql.SQL("revoke all on database {} from {}").format(db, sql.Identifier(props["owner"]))
        )
        for grantee, privilege, grantable in props["acl"]:
            who = sql.SQL("public") if grantee == "PUBLIC" else sql.Identifier(grantee)
            conn.execute(
                sql.SQL("grant {} on database {} to {}{}").format(
                    sql.SQL(privilege),
                    db,
                    who,
                    sql.SQL(" with grant option" if grantable else ""),
                )
            )
    for role, config in props["settings"]:
        for item in config:
            apply_setting(conn, dbname, role, item)


def split_setting_list(value: str) -> list[str] | None:
    """The elements of a stored list-valued setting (`"$user", public` → `$user`, `public`),
    read as PostgreSQL reads them (SplitGUCList: comma-separated, double quotes with `""`
    inside, white space around elements); None when it is not such a list."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chunk: list[str] = []
            while True:
                end = value.find('"', i)
                if end < 0:
                    return None  # unterminated quote
                chunk.append(value[i:end])
                i = end + 1
                if i < n and value[i] == '"':  # a doubled quote is one quote
                    chunk.append('"')
                    i += 1
                else:
                    break
            items.append("".join(chunk))
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            if i == start:
                return None  # an empty unquoted element
            items.append(value[start:i])
        while i < n and value[i].isspace():
            i += 1
        if i == n:
            return items
        if value[i] != ",":
            return None
        i += 1


Statement = tuple[sql.SQL | sql.Composed, tuple[str, ...]]  # parameters, or () for none


def setting_forms(
    target: sql.Composable, key: str, value: str
) -> list[tuple[str, list[Statement]]]:
    """Ways to make `<target> SET key` store exactly `key=value`, in the order they are tried.

    1. `SET key = 'value'`: stored verbatim, except for list settings PostgreSQL quotes
       (GUC_LIST_QUOTE: search_path, temp_tablespaces, *_preload_libraries, some
       extensions'), where the whole string would become one quoted element.
    2. `set_config(key, value, true)` then `SET key FROM CURRENT` in one transaction: the
       current value is stored as it is, unquoted. Not first: it stores values as SHOW gives
       them (8192 → 8MB, utc → UTC), and set_config refuses some values (a tablespace that
       does not exist, a parameter our session may not set).
    3. `SET key TO 'elem', 'elem'`: each element quoted on its own, as the original
       statement had it — for the list values set_config refused.
    """
    name = sql.Identifier(key)
    forms: list[tuple[str, list[Statement]]] = [
        (
            "as one value",
            [(sql.SQL("{} set {} = {}").format(target, name, sql.Literal(value)), ())],
        ),
        (
            "from current",
            [
                (sql.SQL("select pg_catalog.set_config(%s, %s, true)"), (key, value)),
                (sql.SQL("{} set {} from current").format(target, name), ()),
            ],
        ),
    ]
    elements = split_setting_list(value)
    if elements:
        listed = sql.SQL(", ").join(sql.Literal(e) for e in elements)
        forms.append(("as a list", [(sql.SQL("{} set {} to {}").format(target, name, listed), ())]))
    return forms


def stored_setting(conn: psycopg.Connection[Any], dbname: str, role: str, key: str) -> str | None:
    """The `key=value` item pg_db_role_setting holds for (database, role or '' for none)."""
    row = conn.execute(
        """
        select c from pg_catalog.pg_db_role_setting s
                 join pg_catalog.pg_database d on d.oid = s.setdatabase,
               unnest(s.setconfig) c
         where d.datname = %s
           and s.setrole = case when %s = '' then 0
                                else (select oid from pg_catalog.pg_roles where rolname = %s) end
           and lower(split_part(c, '=', 1)) = lower(%s)
        """,
        (dbname, role, role, key),
    ).fetchone()
    return None if row is None else str(row[0])


def apply_setting(conn: psycopg.Connection[Any], dbname: str, role: str, item: str) -> None:
    """`ALTER DATABASE dbname SET` (or `ALTER ROLE role IN DATABASE dbname SET`) such that
    pg_db_role_setting holds exactly `item` (`key=value`, as read from the original): each
    form of `setting_forms` in turn, read back after each; SeedError when none gives it."""
    key, _, value = item.partition("=")
    db = sql.Identifier(dbname)
    target = (
        sql.SQL("alter role {} in database {}").format(sql.Identifier(role), db)
        if role
        else sql.SQL("alter database {}").format(db)
    )
    tried = []
    for label, statements in setting_forms(target, key, value):
        try:
            with conn.transaction():
                for statement, params in statements:
                    conn.execute(statement, params or None)
        except psycopg.Error as exc:
            tried.append(f"{label}: {error_text(exc)}")
            continue
        got = stored_setting(conn, dbname, role, key)
        if got == item:
            return
        tried.append(f"{label}: stored {got!r}")
    whose = f"role {role} in database {dbname}" if role else f"database {dbname}"
    raise StepFailed(f"cannot reproduce the setting {item!r} of {whose} ({'; '.join(tried)})")


def sequence_values(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute(
        "select quote_ident(schemaname) || '.' || quote_ident(sequencename), last_value "
        "from pg_sequences where last_value is not null"
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def never_backwards(conn: psycopg.Connection[Any], live: dict[str, int]) -> list[str]:
    """setval each restored sequence to max(restored, live); returns those moved forward."""
    restored = sequence_values(conn)
    moved = []
    for name, value in live.items():
        exists = conn.execute("select to_regclass(%s) is not null", (name,)).fetchone()
        if exists and exists[0] and value > restored.get(name, 0):
            conn.execute("select setval(%s::regclass, %s, true)", (name, value))
            moved.append(name)
    return moved


@dataclass
class RestorePlan:
    """Names and files for one restore."""

    live: str
    new: str
    replaced: str
    backup_path: str
    backup_sha256: str


def plan_restore(
    env: Environment, tag: str, backup_path: str = "", sha256: str = ""
) -> RestorePlan:
    """The names of run `tag`'s restore (and the backup it restores, when known)."""
    return RestorePlan(
        live=env.db.name,
        new=scratch_name(env.db.name, f"restore_{tag}"),
        replaced=scratch_name(env.db.name, f"replaced_{tag}"),
        backup_path=backup_path,
        backup_sha256=sha256,
    )


def run_pg_restore(
    env: Environment,
    remote: Remote,
    plan: RestorePlan,
    job_dir: str,
    app_name: str,
    on_lost: Callable[[], None] | None = None,
    options: str = "",
    analyze: bool = True,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """pg_restore --exit-on-error into the new database, as a remote job on the state host.
    `options`: more pg_restore arguments (already quoted), e.g. `--section=data`;
    `on_poll`: run while it works (size_meter)."""
    remote.mkdirs(job_dir, mode=0o700)
    passfile = f"{job_dir}/pgpass"
    remote.put_bytes(
        pgpass_line(env.db.host, env.db.port, env.db.admin_user, env.db.admin_password), passfile
    )
    # Both formats restore in parallel (a custom-format file is seekable): data and
    # indexes load on every core of the state host, then ANALYZE runs per table on
    # as many sessions. The new database is invisible until the swap, so all of it
    # may use the machine.
    conn = (
        f"--no-password --host={q(env.db.host)} --port={env.db.port} "
        f"--username={q(env.db.admin_user)} --dbname={q(plan.new)}"
    )
    vacuum = (
        f'{q(env.backup.tool("vacuumdb"))} --analyze-only --quiet --jobs="$jobs" {conn}\n'
        if analyze
        else ""
    )
    script = f"""set -euo pipefail
export PGPASSFILE={q(passfile)} PGAPPNAME={q(app_name)}
trap 'rm -f "$PGPASSFILE"' EXIT
jobs=$(nproc 2>/dev/null || echo 1)
[ "$jobs" -ge {env.backup.jobs} ] || jobs={env.backup.jobs}
{q(env.backup.tool("pg_restore"))} --exit-on-error --jobs="$jobs" {options} {conn} \
  {q(plan.backup_path)}
echo "seed-restore loaded"
{vacuum}echo "seed-restore ok"
"""
    job = RemoteJob.start(remote, job_dir, script)
    code, output = job.wait(on_lost=on_lost, on_poll=on_poll)
    if code != 0 or "seed-restore ok" not in output:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        raise StepFailed(f"pg_restore failed: {' | '.join(lines[-2:]) or f'exit {code}'}")


@contextlib.contextmanager
def size_meter(
    session: Session, dbname: str, app_name: str, progress: Callable[[int], None] | None
) -> Iterator[Callable[[], None] | None]:
    """A polling hook that hands `pg_database_size(dbname)` (a database being restored)
    to `progress` about twice a second, on a connection of its own; None without progress."""
    if progress is None:
        yield None
        return
    conn = session.connect(admin=True, dbname="postgres", app_name=app_name)

    def measure() -> int | None:
        try:
            return database_size(conn, dbname)
        except psycopg.Error:
            return None  # not created yet, or the link hiccuped: the next look says more

    try:
        yield throttled(0.5, measure, progress)
    finally:
        conn.close()


def swap(conn: psycopg.Connection[Any], plan: RestorePlan, attempts: int = 5) -> None:
    """Rename live → replaced and new → live in one transaction (connected to `postgres`).

    Connections to the live database are disabled first, so none can sneak in
    between terminating the sessions and the rename.
    """
    live, new, replaced = (sql.Identifier(n) for n in (plan.live, plan.new, plan.replaced))
    conn.execute(sql.SQL("alter database {} allow_connections false").format(live))
    for attempt in range(attempts):
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = %s and pid <> pg_backend_pid()",
            (plan.live,),
        )
        try:
            with conn.transaction():
                conn.execute(sql.SQL("alter database {} rename to {}").format(live, replaced))
                conn.execute(sql.SQL("alter database {} rename to {}").format(new, live))
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def replaced_databases(conn: psycopg.Connection[Any], live: str) -> list[str]:
    """Databases earlier restores left as `<live>_replaced_<tag>`."""
    tag = "0" * len(TAG_EXAMPLE)  # tags all have the length of a deploy id
    prefix = scratch_name(live, "replaced_" + tag)[: -len(tag)]
    rows = conn.execute(
        "select datname from pg_database where left(datname, %s) = %s order by 1",
        (len(prefix), prefix),
    ).fetchall()
    return [str(r[0]) for r in rows]


def drop_replaced(conn: psycopg.Connection[Any], live: str) -> list[str]:
    """Drop every database a restore replaced (connected to `postgres`)."""
    names = replaced_databases(conn, live)
    for name in names:
        drop_if_exists(conn, name)
    return names


def snapshot_copy(
    conn: psycopg.Connection[Any], live: str, snap: str, props: dict[str, Any], strategy: str
) -> float:
    """CREATE DATABASE snap TEMPLATE live (no session may be on live), connections disabled,
    database-level properties copied (a template copies none). Returns the copy's seconds."""
    started = time.monotonic()
    create = sql.SQL("create database {} owner {} template {} strategy {}").format(
        sql.Identifier(snap),
        sql.Identifier(props["owner"]),
        sql.Identifier(live),
        sql.SQL(strategy),
    )
    for attempt in range(5):
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = %s and pid <> pg_backend_pid()",
            (live,),
        )
        try:
            conn.execute(create)
            break
        except psycopg.errors.ObjectInUse:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    seconds = time.monotonic() - started
    try:
        conn.execute(
            sql.SQL("alter database {} allow_connections false").format(sql.Identifier(snap))
        )
        apply_properties(conn, snap, props)
    except (SeedError, psycopg.Error):
        with contextlib.suppress(psycopg.Error):  # a copy without the settings is no snapshot
            drop_if_exists(conn, snap)
        raise
    return seconds


def prepare_snapshot(
    conn: psycopg.Connection[Any],
    connect_snap: Callable[[], psycopg.Connection[Any]],
    snap: str,
    live_sequences: dict[str, int],
) -> list[str]:
    """Open the snapshot for the swap and move its sequences to max(snapshot, live)."""
    conn.execute(sql.SQL("alter database {} allow_connections true").format(sql.Identifier(snap)))
    snap_conn = connect_snap()
    try:
        return never_backwards(snap_conn, live_sequences)
    finally:
        snap_conn.close()


def drop_if_exists(conn: psycopg.Connection[Any], dbname: str) -> None:
    conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def verify_backup(
    env: Environment, remote: Remote, path: str, sha256: str, full_read: bool = True
) -> None:
    """sha256 (and a full read) before the live database is touched."""
    verify_file(env, remote, path, sha256, full_read)


@dataclass
class Restored:
    plan: RestorePlan
    sequences_moved_forward: list[str]


def restore_as_live(
    env: Environment,
    session: Session,
    backup_path: str,
    sha256: str,
    props: dict[str, Any],
    tag: str,
    job_dir: str,
    app_name: str,
    before_swap: Callable[[], None] = lambda: None,
    on_lost: Callable[[], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Restored:
    """The whole restore: verify the file, new database, pg_restore, properties, swap.

    Until the swap the live database is untouched (RestoreFailed.live_untouched);
    `before_swap` lets the caller close its own sessions to the live database;
    `progress` gets the restored database's size as pg_restore fills it.
    """
    plan = plan_restore(env, tag, backup_path, sha256)
    try:
        # sha256 only: pg_restore -e below reads every byte before the swap, and the
        # callers that can afford it verified with a full read before stopping the app
        verify_backup(env, session.state, plan.backup_path, plan.backup_sha256, full_read=False)
        pg = session.connect(admin=True, dbname="postgres", app_name=app_name)
        live = session.connect(admin=True, app_name=app_name)
        live_sequences = sequence_values(live)
        live.close()
        for attempt in (1, 2):
            drop_if_exists(pg, plan.new)
            create_like(pg, plan.new, props)
            pg.close()
            try:
                with size_meter(session, plan.new, app_name, progress) as on_poll:
                    run_pg_restore(
                        env, session.state, plan, job_dir, app_name, on_lost, on_poll=on_poll
                    )
                break
            except SeedError:
                # the file was verified above: a failure is the server's or the network's
                # (a restart, a dropped connection); one more try on a fresh new database
                if attempt == 2:
                    raise
                pg = session.connect(admin=True, dbname="postgres", app_name=app_name)
        # opened after the job: a connection lost during it (and reconnected) is not reused
        pg = session.connect(admin=True, dbname="postgres", app_name=app_name)
        new = session.connect(admin=True, dbname=plan.new, app_name=app_name)
        moved = never_backwards(new, live_sequences)
        new.close()
        apply_properties(pg, plan.new, props)
        before_swap()
    except (SeedError, psycopg.Error, OSError) as exc:
        # the half-restored copy goes: it holds as much disk as the database itself
        with contextlib.suppress(SeedError, psycopg.Error, OSError):
            cleanup = session.connect(admin=True, dbname="postgres", app_name=app_name)
            drop_if_exists(cleanup, plan.new)
            cleanup.close()
        raise RestoreFailed(
            f"restore of {backup_path} failed before the swap ({exc}); the live database "
            "was not touched",
            live_untouched=True,
        ) from None
    try:
        swap(pg, plan)
    except (psycopg.Error, OSError) as exc:
        raise RestoreFailed(
            f"swapping {plan.new} in as {plan.live} failed ({exc}); connections to the live "
            f"database are disabled; the restored copy is {plan.new}",
            live_untouched=False,
        ) from None
    return Restored(plan, moved)


def verify_like_before(
    env: Environment,
    conn: psycopg.Connection[Any],
    before: dict[str, Any],
    open_conn: ConnFactory | None = None,
    skip: Iterable[str] = (),
) -> dict[str, Any]:
    """Every table's count + checksum, the migration set and database properties vs `before`
    (figures over `env.db.fingerprint_sessions` sessions when `open_conn` is given);
    tables named in `skip` (bare names) are not compared."""
    tables = before["tables"]
    algorithm = recorded_algorithm(tables)  # computed the way the backup's figures were
    if open_conn is None:
        found = snapshot_figures(conn, algorithm)
    else:
        found = parallel_figures(conn, open_conn, env.db.fingerprint_sessions, algorithm=algorithm)
    figures = {k: v.to_json() for k, v in found.items()}
    applied = [f"{a}.{n}" for a, n in applied_migrations(conn)]
    props = database_properties(conn, env.db.name)
    problems = []
    skipped = set(skip)
    differ = sorted(
        t
        for t in set(figures) | set(tables)
        if t.split(".", 1)[-1] not in skipped and not same_figures(figures.get(t), tables.get(t))
    )
    if differ:
        problems.append(f"tables differ from the backup's snapshot: {', '.join(differ)}")
    if applied != before["applied_migrations"]:
        problems.append("the django_migrations set differs from the before-state")
    if comparable_properties(props) != comparable_properties(before["database_properties"]):
        problems.append("database-level properties differ from the before-state")
    return {
        "tables": len(figures),
        "rows": sum(f["rows"] for f in figures.values()),
        "migrations": len(applied),
        "identical": not problems,
        "problems": problems,
    }
