"""Built-in post checks: what any migration must leave true, whatever the app.

In the database (read-only, with the checks' statement timeout): no invalid index
(a failed `CREATE INDEX CONCURRENTLY` leaves one), every column-owned sequence
ahead of its column's maximum (else the next insert collides), and no row
violating a constraint added `NOT VALID` (foreign keys: orphans; checks, e.g.
`col IS NOT NULL`: violating rows) — PostgreSQL enforces those only for new rows.
On the migrate host with the release's code: `manage.py check --deploy` (fail level
and silenced ids configurable) and `manage.py migrate --check`.

They run as the app role: a table, column or sequence it may not read (another role's,
no grant: `has_*_privilege`) is skipped, and the result names it; it is not a failure.
An invariant that cannot run (a query error or timeout; the Django script not running)
is outcome `error`: reported, not failing, unless `invariants.on_error: fail`.
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from seed.checks.check import CheckQueryError, CheckResult, read_only
from seed.checks.spec import Invariants
from seed.config.environment import Environment
from seed.remote.ssh import Remote, RemoteError, q


def _result(name: str, expected: str, actual: Any, passed: bool, started: float) -> CheckResult:
    return CheckResult(
        f"invariant: {name}",
        "post",
        "(built in)",
        expected,
        actual,
        None,
        passed,
        time.monotonic() - started,
    )


def _errored(name: str, expected: str, error: str, started: float, on_error: str) -> CheckResult:
    """An invariant that could not run: failed with `on_error: fail`; else outcome `error`
    (passed, so it fails nothing, and skipped: it is no verdict either)."""
    result = _result(name, expected, None, on_error != "fail", started)
    result.error = error
    if on_error != "fail":
        result.skipped = f"ERROR (invariants.on_error: {on_error}, not failing): {error}"
    return result


@dataclass
class Findings:
    """What an invariant found, and what the app role could not read (so did not check)."""

    problems: list[str] = field(default_factory=list)
    unreadable_tables: list[str] = field(default_factory=list)
    unreadable_sequences: list[str] = field(default_factory=list)

    def skipped(self) -> str:
        """`skipped 1 table the app role cannot read: public.audit_log` (empty: none)."""
        parts, names = [], []
        for kind, items in (
            ("table", self.unreadable_tables),
            ("sequence", self.unreadable_sequences),
        ):
            unique = sorted(set(items))
            if unique:
                parts.append(f"{len(unique)} {kind}{'' if len(unique) == 1 else 's'}")
                names += unique
        if not parts:
            return ""
        return f"skipped {' and '.join(parts)} the app role cannot read: {', '.join(names)}"


def _readable(rel: str, attnums: str) -> str:
    """SQL: the current role may read the columns `attnums` (an int2[] expression; null or
    empty: any column) of the relation `rel` (an oid expression), its schema included."""
    return f"""
        (has_schema_privilege((select relnamespace from pg_class where oid = {rel}), 'USAGE')
         and has_any_column_privilege({rel}, 'SELECT')
         and coalesce((select bool_and(has_column_privilege({rel}, k, 'SELECT'))
                         from unnest({attnums}) k), true))"""


def _qualified(rel: str) -> str:
    """SQL: `schema.name` of the relation `rel` (an oid expression), always qualified."""
    return (
        "(select format('%I.%I', qn.nspname, qc.relname) from pg_class qc"
        f" join pg_namespace qn on qn.oid = qc.relnamespace where qc.oid = {rel})"
    )


def invalid_indexes(conn: psycopg.Connection[Any]) -> Findings:
    rows = conn.execute(
        "select i.indexrelid::regclass::text from pg_index i"
        " join pg_class c on c.oid = i.indexrelid"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where not i.indisvalid and n.nspname not in ('pg_catalog', 'information_schema')"
        " order by 1"
    ).fetchall()
    return Findings(problems=[r[0] for r in rows])


def lagging_sequences(conn: psycopg.Connection[Any]) -> Findings:
    """Column-owned sequences (serial, identity) whose next value is <= the column's max.

    The sequence is read directly with SELECT on it, else with USAGE through
    `pg_sequence_last_value` (null while it was never called: then its next value is
    unknown and it counts as unreadable)."""
    owned = conn.execute(
        f"""
        select s.oid::regclass::text, t.oid::regclass::text, a.attname, seq.seqincrement,
               {_readable("t.oid", "array[a.attnum]")},
               has_schema_privilege(s.relnamespace, 'USAGE')
                 and has_sequence_privilege(s.oid, 'SELECT'),
               has_sequence_privilege(s.oid, 'SELECT, USAGE'),
               s.oid, {_qualified("t.oid")}, {_qualified("s.oid")}
          from pg_class s
          join pg_sequence seq on seq.seqrelid = s.oid
          join pg_depend d on d.objid = s.oid and d.classid = 'pg_class'::regclass
                          and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
          join pg_class t on t.oid = d.refobjid
          join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
          join pg_namespace n on n.oid = t.relnamespace
         where s.relkind = 'S' and n.nspname not in ('pg_catalog', 'information_schema')
           and not pg_is_other_temp_schema(n.oid)  -- another session's: unreadable, short-lived
         order by 1
        """
    ).fetchall()
    found = Findings()
    for seq, table, column, increment, table_ok, seq_select, seq_any, oid, *names in owned:
        table_name, seq_name = names  # schema-qualified, for what was skipped
        if not table_ok:
            found.unreadable_tables.append(table_name)
            continue
        extreme = "max" if increment > 0 else "min"
        extremes = conn.execute(
            sql.SQL("select {}({}) from {}").format(
                sql.SQL(extreme),
                sql.Identifier(column),
                sql.SQL(".").join(sql.Identifier(p) for p in _split(table)),
            )
        ).fetchone()
        assert extremes is not None
        top = extremes[0]
        if top is None:
            continue
        if seq_select:
            state = conn.execute(
                sql.SQL("select last_value, is_called from {}").format(
                    sql.SQL(".").join(sql.Identifier(p) for p in _split(seq))
                )
            ).fetchone()
            assert state is not None
            last, called = state
        elif seq_any:  # USAGE (or SELECT without USAGE on its schema)
            value = conn.execute("select pg_sequence_last_value(%s::oid)", (oid,)).fetchone()
            assert value is not None
            last, called = value[0], True
            if last is None:  # never called: its next value is not visible with USAGE only
                found.unreadable_sequences.append(seq_name)
                continue
        else:
            found.unreadable_sequences.append(seq_name)
            continue
        nxt = last + increment if called else last
        if (increment > 0 and nxt <= top) or (increment < 0 and nxt >= top):
            found.problems.append(f"{seq} next {nxt} <= {extreme}({table}.{column}) {top}")
    return found


def _split(regclass_text: str) -> list[str]:
    """`schema.name` / `"Odd name"` as printed by ::regclass::text, into its parts."""
    parts, cur, quoted, i = [], "", False, 0
    while i < len(regclass_text):
        ch = regclass_text[i]
        if ch == '"':
            if quoted and i + 1 < len(regclass_text) and regclass_text[i + 1] == '"':
                cur += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return parts


def not_valid_violations(conn: psycopg.Connection[Any]) -> Findings:
    """Rows breaking a NOT VALID foreign key or check constraint."""
    cons = conn.execute(
        f"""
        select c.conname, c.contype, c.conrelid::regclass::text, c.confrelid::regclass::text,
               (select array_agg(a.attname order by k.i) from unnest(c.conkey)
                  with ordinality k(n, i) join pg_attribute a
                  on a.attrelid = c.conrelid and a.attnum = k.n),
               (select array_agg(a.attname order by k.i) from unnest(c.confkey)
                  with ordinality k(n, i) join pg_attribute a
                  on a.attrelid = c.confrelid and a.attnum = k.n),
               pg_get_expr(c.conbin, c.conrelid),
               {_readable("c.conrelid", "c.conkey")},
               c.contype <> 'f' or {_readable("c.confrelid", "c.confkey")},
               {_qualified("c.conrelid")}, {_qualified("c.confrelid")}
          from pg_constraint c
          join pg_namespace n on n.oid = c.connamespace
         where not c.convalidated and c.contype in ('f', 'c')
           and n.nspname not in ('pg_catalog', 'information_schema')
           and not pg_is_other_temp_schema(n.oid)
         order by 3, 1
        """
    ).fetchall()
    found = Findings()
    for name, kind, table, ftable, cols, fcols, expr, table_ok, ftable_ok, *names in cons:
        if not (table_ok and ftable_ok):  # names: schema-qualified, for what was skipped
            found.unreadable_tables += [
                n for n, ok in zip(names, (table_ok, ftable_ok), strict=True) if not ok
            ]
            continue
        tbl = sql.SQL(".").join(sql.Identifier(p) for p in _split(table))
        if kind == "f":
            ftbl = sql.SQL(".").join(sql.Identifier(p) for p in _split(ftable))
            query = sql.SQL(
                "select count(*) from {t} c where {notnull} and not exists "
                "(select 1 from {f} p where {match})"
            ).format(
                t=tbl,
                f=ftbl,
                notnull=sql.SQL(" and ").join(
                    sql.SQL("c.{} is not null").format(sql.Identifier(col)) for col in cols
                ),
                match=sql.SQL(" and ").join(
                    sql.SQL("p.{} = c.{}").format(sql.Identifier(fc), sql.Identifier(col))
                    for col, fc in zip(cols, fcols, strict=True)
                ),
            )
        else:
            # a CHECK passes when its expression is true or NULL
            query = sql.SQL("select count(*) from {t} where not ({e})").format(
                t=tbl, e=sql.SQL(expr)
            )
        row = conn.execute(query).fetchone()
        assert row is not None
        if row[0]:
            what = "orphan row(s)" if kind == "f" else "violating row(s)"
            found.problems.append(f"{table}.{name} (NOT VALID): {row[0]} {what}")
    return found


SQL_INVARIANTS = (
    ("invalid_indexes", "no invalid indexes", "none", invalid_indexes),
    ("sequences", "sequences ahead of their columns", "none behind", lagging_sequences),
    (
        "not_valid_constraints",
        "NOT VALID constraints hold",
        "no violating rows",
        not_valid_violations,
    ),
)


def database_invariants(
    conn: psycopg.Connection[Any], inv: Invariants, statement_timeout: str
) -> list[CheckResult]:
    """The enabled SQL invariants, each read-only with the timeout; never raises."""
    results = []
    for flag, name, expected, probe in SQL_INVARIANTS:
        if not getattr(inv, flag):
            continue
        started = time.monotonic()
        try:
            with read_only(conn, statement_timeout):
                found = probe(conn)
        except CheckQueryError as exc:
            results.append(_errored(name, expected, str(exc), started, inv.on_error))
            continue
        actual = "; ".join(p for p in (*(found.problems or [expected]), found.skipped()) if p)
        results.append(_result(name, expected, actual, not found.problems, started))
    return results


def django_invariants(
    env: Environment,
    remote: Remote,
    release_path: str,
    env_file: str,
    inv: Invariants,
    app_name: str,
) -> list[CheckResult]:
    """`manage.py check --deploy` and `migrate --check` with the release's code; never raises."""
    if inv.django_check is None and not inv.migrate_check:
        return []
    started = time.monotonic()
    args = {
        "check": None
        if inv.django_check is None
        else {"fail_level": inv.django_check.fail_level, "silence": list(inv.django_check.silence)},
        "migrate_check": inv.migrate_check,
    }
    script = resources.files("seed.remote.scripts").joinpath("django_checks.py").read_bytes()
    script_path = posixpath.join(release_path, ".seed-django-checks.py")
    expected = {"check": "no issue at or above the fail level", "migrate": "no unapplied"}
    names = {"check": "manage.py check --deploy", "migrate": "manage.py migrate --check"}
    wanted = [k for k, on in (("check", inv.django_check), ("migrate", inv.migrate_check)) if on]
    try:
        remote.put_bytes(script, script_path, mode=0o600)
        res = remote.run(
            f"cd {q(release_path)} && set -a && . {q(env_file)} && set +a && "
            f"export PGAPPNAME={q(app_name)} && "
            f".venv/bin/python {q(script_path)} {q(json.dumps(args))}; "
            f"rc=$?; rm -f {q(script_path)}; exit $rc",
            timeout=300,
        )
        data = json.loads(res.stdout) if res.ok else None
    except (RemoteError, json.JSONDecodeError) as exc:
        return [_errored(names[k], expected[k], str(exc), started, inv.on_error) for k in wanted]
    if data is None:
        error = f"on {remote.label}: {res.tail(3)}"
        return [_errored(names[k], expected[k], error, started, inv.on_error) for k in wanted]
    results = []
    for key in wanted:
        part = data[key]
        actual = part["summary"] or expected[key]
        if part.get("below_fail_level"):
            actual += f" (below the fail level: {', '.join(part['below_fail_level'])})"
        results.append(_result(names[key], expected[key], actual, part["passed"], started))
    return results
