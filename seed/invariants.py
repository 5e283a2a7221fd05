"""Built-in post checks: what any migration must leave true, whatever the app.

In the database (read-only, with the checks' statement timeout): no invalid index
(a failed `CREATE INDEX CONCURRENTLY` leaves one), every column-owned sequence
ahead of its column's maximum (else the next insert collides), and no row
violating a constraint added `NOT VALID` (foreign keys: orphans; checks, e.g.
`col IS NOT NULL`: violating rows) — PostgreSQL enforces those only for new rows.
On the migrate host with the release's code: `manage.py check --deploy` (fail level
and silenced ids configurable) and `manage.py migrate --check`.
"""

from __future__ import annotations

import json
import posixpath
import time
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from seed.checks import CheckQueryError, CheckResult, read_only
from seed.checkspec import Invariants
from seed.config import Environment
from seed.remote import Remote, RemoteError, q


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


def _errored(name: str, expected: str, error: str, started: float) -> CheckResult:
    result = _result(name, expected, None, False, started)
    result.error = error
    return result


def invalid_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "select i.indexrelid::regclass::text from pg_index i"
        " join pg_class c on c.oid = i.indexrelid"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where not i.indisvalid and n.nspname not in ('pg_catalog', 'information_schema')"
        " order by 1"
    ).fetchall()
    return [r[0] for r in rows]


def lagging_sequences(conn: psycopg.Connection[Any]) -> list[str]:
    """Column-owned sequences (serial, identity) whose next value is <= the column's max."""
    owned = conn.execute(
        """
        select s.oid::regclass::text, t.oid::regclass::text, a.attname, seq.seqincrement
          from pg_class s
          join pg_sequence seq on seq.seqrelid = s.oid
          join pg_depend d on d.objid = s.oid and d.classid = 'pg_class'::regclass
                          and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
          join pg_class t on t.oid = d.refobjid
          join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
          join pg_namespace n on n.oid = t.relnamespace
         where s.relkind = 'S' and n.nspname not in ('pg_catalog', 'information_schema')
         order by 1
        """
    ).fetchall()
    lagging = []
    for seq, table, column, increment in owned:
        state = conn.execute(
            sql.SQL("select last_value, is_called from {}").format(
                sql.SQL(".").join(sql.Identifier(p) for p in _split(seq))
            )
        ).fetchone()
        extreme = "max" if increment > 0 else "min"
        row = conn.execute(
            sql.SQL("select {}({}) from {}").format(
                sql.SQL(extreme),
                sql.Identifier(column),
                sql.SQL(".").join(sql.Identifier(p) for p in _split(table)),
            )
        ).fetchone()
        assert state is not None and row is not None
        last, called = state
        top = row[0]
        if top is None:
            continue
        nxt = last + increment if called else last
        if (increment > 0 and nxt <= top) or (increment < 0 and nxt >= top):
            lagging.append(f"{seq} next {nxt} <= {extreme}({table}.{column}) {top}")
    return lagging


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


def not_valid_violations(conn: psycopg.Connection[Any]) -> list[str]:
    """Rows breaking a NOT VALID foreign key or check constraint."""
    cons = conn.execute(
        """
        select c.conname, c.contype, c.conrelid::regclass::text, c.confrelid::regclass::text,
               (select array_agg(a.attname order by k.i) from unnest(c.conkey)
                  with ordinality k(n, i) join pg_attribute a
                  on a.attrelid = c.conrelid and a.attnum = k.n),
               (select array_agg(a.attname order by k.i) from unnest(c.confkey)
                  with ordinality k(n, i) join pg_attribute a
                  on a.attrelid = c.confrelid and a.attnum = k.n),
               pg_get_expr(c.conbin, c.conrelid)
          from pg_constraint c
          join pg_namespace n on n.oid = c.connamespace
         where not c.convalidated and c.contype in ('f', 'c')
           and n.nspname not in ('pg_catalog', 'information_schema')
         order by 3, 1
        """
    ).fetchall()
    found = []
    for name, kind, table, ftable, cols, fcols, expr in cons:
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
            found.append(f"{table}.{name} (NOT VALID): {row[0]} {what}")
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
                problems = probe(conn)
        except CheckQueryError as exc:
            results.append(_errored(name, expected, str(exc), started))
            continue
        actual = "; ".join(problems) if problems else expected
        results.append(_result(name, expected, actual, not problems, started))
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
    script = resources.files("seed.remote_scripts").joinpath("django_checks.py").read_bytes()
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
        return [_errored(names[k], expected[k], str(exc), started) for k in wanted]
    if data is None:
        error = f"on {remote.label}: {res.tail(3)}"
        return [_errored(names[k], expected[k], error, started) for k in wanted]
    results = []
    for key in wanted:
        part = data[key]
        actual = part["summary"] or expected[key]
        if part.get("below_fail_level"):
            actual += f" (below the fail level: {', '.join(part['below_fail_level'])})"
        results.append(_result(names[key], expected[key], actual, part["passed"], started))
    return results
