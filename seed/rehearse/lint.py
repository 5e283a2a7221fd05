"""The migration safety gate: `fab <env> lint`, and a pre-flight step of `upgradedb`.

Each pending migration is checked two ways:

- its SQL (what `manage.py sqlmigrate` prints, collected by Django's own loader on the
  migrate host) with squawk, minus the rules that do not fit Django or Seed (Seed sets
  `lock_timeout` itself; Django drops the defaults it adds, writes `varchar(n)`, and
  migrations are transactions, not idempotent scripts);
- Seed's own rules over the migration graph: a data migration or raw SQL that cannot be
  reversed, a reverse that does nothing, expand and contract of the same table in one
  deploy, renames, a schema change mixed with a data migration on a big table.

A finding is `block` or `warn`. Squawk's lock-and-rewrite rules block on a table with at
least `lint.big_table_rows` rows (pg_class.reltuples / live tuples) and warn below it.
Waivers (environment file `lint.waivers`, and `deploy/lint.yml` in the release) let a
named rule through for a named migration (or every migration of a distribution), with a
reason shown in the report.

What fits real projects:
- a first deploy (no migration applied, no host serving a release) has no release running
  during it: the rules about that release (expand and contract together, renames) do not
  apply;
- migrations owned by an installed distribution (a third-party app: the user cannot edit
  them) only warn, naming the distribution, unless they lock a big table or `lint.block`
  names the rule;
- a data migration without a reverse only means the rollback restores the backup (the
  plan says so); it blocks where `rollback.method: reverse` needs a reverse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from seed.config.environment import LintConfig, Waiver
from seed.config.yaml12 import YamlError, load_yaml12
from seed.errors import ConfigError, PreflightFailed

# squawk rules that do not fit Django migrations run by Seed
DJANGO_EXCLUDES = (
    "require-lock-timeout",  # Seed runs migrate with PGOPTIONS lock_timeout (DESIGN)
    "require-statement-timeout",
    "prefer-robust-stmts",  # a Django migration is a transaction, not an idempotent script
    "prefer-bigint-over-int",  # IntegerField is a choice the model made
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",  # CharField(max_length) is varchar(n) by design
    "ban-drop-default",  # AddField drops the default it used to fill the column
    "transaction-nesting",
)
# squawk rules whose statement locks or rewrites its table: block on a big table
BLOCK_ON_BIG_TABLE = (
    "require-concurrent-index-creation",
    "changing-column-type",
    "adding-field-with-default",
    "adding-not-nullable-field",
    "adding-required-field",
    "adding-serial-primary-key-field",
    "adding-foreign-key-constraint",
    "constraint-missing-not-valid",
    "disallowed-unique-constraint",
)
REPO_WAIVERS = "deploy/lint.yml"  # in the release: waivers that travel with the migrations
DESTRUCTIVE = ("RemoveField", "DeleteModel")
RENAMES = ("RenameField", "RenameModel", "AlterModelTable")
# operations that carry a table to another name or app: created in this deploy stays created
CARRIES = ("RenameModel", "AlterModelTable", "SeparateDatabaseAndState")
EXPANDS = ("AddField", "CreateModel", "AlterField", "RunPython", "RunSQL")
SCHEMA_OPS = ("AddField", "AlterField", "RemoveField", "AddIndex", "AddConstraint", "RenameField")
DATA_OPS = ("RunPython", "RunSQL")
TABLE_RE = re.compile(
    r'\b(?:ALTER\s+TABLE|ON|INTO|UPDATE|FROM)\s+(?:ONLY\s+)?(?:IF\s+EXISTS\s+)?"?([\w.]+)"?',
    re.IGNORECASE,
)


@dataclass
class Finding:
    rule: str
    level: str  # block | warn
    migration: str  # app.name
    where: str  # file:line of the operation, or "SQL line N"
    message: str
    table: str | None = None
    waived: str | None = None  # the waiver's reason
    distribution: str | None = None  # the installed distribution owning the migration

    @property
    def blocks(self) -> bool:
        return self.level == "block" and self.waived is None

    def describe(self) -> str:
        mark = "WAIVED" if self.waived else self.level.upper()
        text = f"{mark:<6} {self.rule} in {self.migration} ({self.where}): {self.message}"
        if self.waived:
            text += f" — waived: {self.waived}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "level": self.level,
            "migration": self.migration,
            "where": self.where,
            "message": self.message,
            "table": self.table,
            "waived": self.waived,
            "distribution": self.distribution,
        }


@dataclass
class LintResult:
    findings: list[Finding] = field(default_factory=list)
    migrations: int = 0
    big_tables: dict[str, int] = field(default_factory=dict)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocks]

    def summary(self) -> str:
        waived = sum(1 for f in self.findings if f.waived)
        warns = sum(1 for f in self.findings if f.level == "warn")
        return (
            f"{self.migrations} migration(s): {len(self.blocking)} blocking, {warns} warning(s), "
            f"{waived} waived"
        )

    def refusal(self) -> str:
        first = self.blocking[0]
        more = f" (and {len(self.blocking) - 1} more)" if len(self.blocking) > 1 else ""
        return (
            f"lint blocked {first.migration}: {first.rule} at {first.where}: {first.message}"
            f"{more}; fix the migration or waive the rule for it with a reason "
            "(lint.waivers, or deploy/lint.yml in the release)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "migrations": self.migrations,
            "blocking": len(self.blocking),
            "findings": [f.to_json() for f in self.findings],
            "big_tables": self.big_tables,
            "passed": not self.blocking,
        }


def table_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per table (the larger of pg_class.reltuples and the live tuple count), by
    bare table name as Django's SQL names it."""
    rows = conn.execute(
        """
        select c.relname, greatest(c.reltuples::bigint, coalesce(s.n_live_tup, 0), 0)
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        left join pg_stat_user_tables s on s.relid = c.oid
        where c.relkind in ('r', 'p')
          and n.nspname not in ('pg_catalog', 'information_schema')
        """
    ).fetchall()
    return {str(name): int(count) for name, count in rows}


def repo_waivers(text: bytes | None, source: str) -> list[Waiver]:
    """`waivers:` of a release's deploy/lint.yml."""
    if text is None:
        return []
    try:
        raw = load_yaml12(text)
    except YamlError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    items = raw.get("waivers") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{source}: expected `waivers:` with a list of waivers")
    out = []
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and all(
            isinstance(item.get(k), str) and item.get(k, "").strip()
            for k in ("migration", "rule", "reason")
        )
        if not ok:
            raise ConfigError(
                f"{source}: waivers[{i}]: needs migration, rule and a reason (all non-empty)"
            )
        out.append(Waiver(str(item["migration"]), str(item["rule"]), str(item["reason"])))
    return out


def squawk_binary() -> Path:
    """squawk wherever pip put it: beside this Python (a venv), in this interpreter's
    scripts folder, in the user scheme's (`pip install --user`), else on PATH."""
    places = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    with contextlib.suppress(KeyError):
        places.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    for place in places:
        if (place / "squawk").is_file():
            return place / "squawk"
    found = shutil.which("squawk")
    if found is None:
        raise PreflightFailed(
            "squawk is not installed (the migration safety gate's SQL linter): "
            "pip install squawk-cli, or set lint.enabled: false"
        )
    return Path(found)


def squawk(sql_text: str, atomic: bool, pg_version: str | None = None) -> list[dict[str, Any]]:
    """squawk's findings for one migration's SQL."""
    binary = squawk_binary()
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(sql_text)
        path = f.name
    try:
        args = [str(binary), "--reporter", "json", "--exclude", ",".join(DJANGO_EXCLUDES)]
        args.append("--assume-in-transaction" if atomic else "--no-assume-in-transaction")
        if pg_version:
            args.append(f"--pg-version={pg_version}")
        res = subprocess.run([*args, path], capture_output=True, text=True, timeout=60, check=False)
    finally:
        Path(path).unlink(missing_ok=True)
    if res.returncode not in (0, 1):
        raise PreflightFailed(f"squawk failed (exit {res.returncode}): {res.stderr.strip()[:200]}")
    try:
        found = json.loads(res.stdout or "[]")
    except json.JSONDecodeError:
        raise PreflightFailed(f"squawk printed no JSON: {res.stdout[:200]!r}") from None
    return [f for f in found if isinstance(f, dict)]


def _op_of_line(lines: list[str]) -> list[int]:
    """For each SQL line, the index of the operation it belongs to (Django writes a
    `--` / `-- <describe>` / `--` header before each operation)."""
    owner: list[int] = []
    current, i = -1, 0
    while i < len(lines):
        header = (
            lines[i] == "--"
            and i + 2 < len(lines)
            and lines[i + 1].startswith("-- ")
            and lines[i + 2] == "--"
        )
        if header:
            current += 1
            owner += [current] * 3
            i += 3
            continue
        owner.append(max(current, 0))
        i += 1
    return owner


def _where(m: dict[str, Any], op_index: int | None) -> str:
    lines = m.get("op_lines") or []
    if m.get("file") and op_index is not None and op_index < len(lines) and lines[op_index]:
        return f"{m['file']}:{lines[op_index]}"
    return str(m.get("file") or f"{m['app']}.{m['name']}")


def lint(
    plan: list[dict[str, Any]],
    rows: dict[str, int],
    config: LintConfig,
    waivers: list[Waiver],
    pg_version: str | None = None,
    *,
    first_deploy: bool = False,
    rollback_method: str = "auto",
) -> LintResult:
    """Findings for the pending migrations of `plan` (migration_state(with_sql=True)).
    `first_deploy`: nothing applied and no host serving a release; `rollback_method`: the
    environment's (reverse needs every data migration to have a reverse)."""
    big = {t: n for t, n in rows.items() if n >= config.big_table_rows}
    result = LintResult(migrations=len(plan), big_tables=big)
    findings: list[Finding] = []
    for m in plan:
        findings += _sql_findings(m, big, pg_version)
    findings += _graph_findings(plan, big, first_deploy, rollback_method)
    owners = {f"{m['app']}.{m['name']}": m.get("distribution") for m in plan}
    excluded = set(config.exclude)
    for finding in findings:
        if finding.rule in excluded:
            continue
        owner = finding.distribution = owners.get(finding.migration)
        if owner:  # a third-party app's migration: the user cannot change it
            finding.message = f"(from the installed distribution {owner}) {finding.message}"
            locks_big = finding.rule in BLOCK_ON_BIG_TABLE and finding.table in big
            if not locks_big:
                finding.level = "warn"
        if finding.rule in config.block:
            finding.level = "block"
        waivable = (finding.migration, owner.split(" ")[0] if owner else None)  # "name version"
        for waiver in waivers:
            if waiver.migration in waivable and waiver.rule in (finding.rule, "*"):
                finding.waived = waiver.reason
        result.findings.append(finding)
    return result


def _sql_findings(m: dict[str, Any], big: dict[str, int], pg_version: str | None) -> list[Finding]:
    name = f"{m['app']}.{m['name']}"
    text = m.get("sql") or ""
    if not text.strip():
        return []
    lines = text.splitlines()
    owner = _op_of_line(lines)
    out = []
    for f in squawk(text, bool(m.get("atomic", True)), pg_version):
        line = int(f.get("line", 0))
        statement = lines[line] if 0 <= line < len(lines) else ""
        match = TABLE_RE.search(statement)
        table = match.group(1).split(".")[-1] if match else None
        rule = str(f.get("rule_name", "squawk"))
        on_big = table in big if table else False
        level = "block" if rule in BLOCK_ON_BIG_TABLE and on_big else "warn"
        size = f" on {table} ({big[table]:,} rows)" if on_big and table else ""
        text = str(f.get("message", "")).rstrip(".")
        message = f"{text}{size}. {f.get('help') or ''}".strip()
        op = owner[line] if 0 <= line < len(owner) else None
        where = f"{_where(m, op)}, SQL line {line + 1}"
        out.append(Finding(rule, level, name, where, message, table))
    return out


def _graph_findings(
    plan: list[dict[str, Any]], big: dict[str, int], first_deploy: bool, rollback_method: str
) -> list[Finding]:
    out: list[Finding] = []
    needs_reverse = rollback_method == "reverse"  # else a rollback may restore the backup
    created: set[str] = set()  # tables this deploy creates: nothing running uses them yet
    expanded: dict[str, str] = {}  # table -> the migration that expands it in this deploy
    data_apps: dict[str, str] = {}  # app -> a data migration (tables unknown) in this deploy
    for m in plan:
        name = f"{m['app']}.{m['name']}"
        ops = m["operations"]
        schema_tables = {
            t for op in ops if op["type"] in SCHEMA_OPS for t in (op.get("tables") or [])
        }
        has_data = any(op["type"] in DATA_OPS for op in ops)
        for i, op in enumerate(ops):
            where = _where(m, i)
            kind = op["type"]
            undone = (
                "rollback.method is reverse, which needs one"
                if needs_reverse
                else "a rollback of this deploy restores the backup"
            )
            if kind == "RunPython" and not op.get("reversible", True):
                out.append(
                    Finding(
                        "irreversible-data-migration",
                        "block" if needs_reverse else "warn",
                        name,
                        where,
                        f"RunPython without reverse_code: Django cannot migrate back past it, "
                        f"so {undone} (give it a reverse, even RunPython.noop when nothing "
                        "needs undoing)",
                    )
                )
            elif kind == "RunSQL" and not op.get("reversible", True):
                out.append(
                    Finding(
                        "irreversible-sql",
                        "block" if needs_reverse else "warn",
                        name,
                        where,
                        f"RunSQL without reverse_sql: {undone}",
                    )
                )
            elif op.get("reverse_noop"):
                out.append(
                    Finding(
                        "noop-reverse",
                        "warn",
                        name,
                        where,
                        f"{op['describe']}: its reverse does nothing, so a rollback must "
                        "restore the backup",
                    )
                )
            if kind in DESTRUCTIVE and not first_deploy:
                tables = [t for t in op.get("tables") or [] if t not in created]
                same = [t for t in tables if t in expanded]
                data = data_apps.get(m["app"])
                if tables and (same or data):
                    by = expanded[same[0]] if same else data
                    out.append(
                        Finding(
                            "contract-with-expand",
                            # a data migration's tables are unknown: it may not touch these
                            "block" if same else "warn",
                            name,
                            where,
                            f"{op['describe']} in the same deploy as {by}, which "
                            f"{'changes ' + same[0] if same else 'migrates data'}: the "
                            "release that runs during and after this deploy cannot use both; "
                            "deploy the expand release first, the contract in a later one",
                            same[0] if same else None,
                        )
                    )
            if kind in CARRIES and set(op.get("tables") or []) & created:
                created.update(op.get("tables") or [])
            if kind in RENAMES and not first_deploy and not set(op.get("tables") or []) <= created:
                out.append(
                    Finding(
                        "rename",
                        "warn",
                        name,
                        where,
                        f"{op['describe']}: the previous release's code uses the old name "
                        "until the switch; prefer add + copy + remove over two releases",
                    )
                )
        if has_data and schema_tables & set(big):
            table = sorted(schema_tables & set(big))[0]
            out.append(
                Finding(
                    "schema-and-data-on-big-table",
                    "warn",
                    name,
                    _where(m, 0),
                    f"changes the schema of {table} ({big[table]:,} rows) and migrates data in "
                    "one migration (one transaction, locks held throughout): split it into "
                    "the schema change, the data in batches, the constraint last",
                    table,
                )
            )
        for op in ops:
            if op["type"] == "CreateModel":
                created.update(op.get("tables") or [])
            if op["type"] in EXPANDS:
                for t in op.get("tables") or []:
                    expanded.setdefault(t, name)
                if op["type"] in DATA_OPS:
                    data_apps.setdefault(m["app"], name)
    return out
