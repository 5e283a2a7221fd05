"""`fab <env> import-legacy --source PATH|DSN --mapping FILE [--dry-run]`.

Each step is checked before the next: extract (seed/extract.py; a header the mapping
needs and the source lacks stops everything), clean and deduplicate
(seed/cleaning.py), then the model's own rules: every record goes through
`full_clean()` of the target model in the deployed release on the migrate host
(seed/remote_scripts/django_validate.py), which also applies Python-side defaults.
Without `--dry-run`: a verified backup, `COPY` of the valid records into a staging
table, and one transaction that upserts them into the target table on its key and
checks, before committing, that the staging rows and the target rows carry the same
count and checksum and that a sample compares equal; any failure rolls all of it back.
Rejects (row, reason) and merges go to `rejects.csv` and `duplicates.csv` in
`.seed/<env>/imports/<id>/`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import posixpath
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from seed import db as dblib
from seed import release as rel
from seed import restore as restorelib
from seed.cleaning import clean, deduplicate
from seed.config import Environment
from seed.dbtasks import verified_backup
from seed.errors import PreflightFailed, RolledBack, SeedError
from seed.extract import read_source
from seed.importmap import Mapping, load_mapping
from seed.operation import Operation
from seed.remote import q
from seed.report import Output


class ImportFailed(RolledBack):
    """The load failed; its transaction rolled back, the target table is as it was (exit 5)."""


class ImportLegacy(Operation):
    kind = "import"

    def __init__(
        self,
        env: Environment,
        command: str,
        local_root: Path,
        out: Output,
        report_path: Path | None = None,
        *,
        source: str,
        mapping: Path,
        dry_run: bool = False,
    ) -> None:
        super().__init__(env, command, local_root, out, report_path)
        self.source = source
        self.mapping: Mapping = load_mapping(mapping)  # before anything is read
        self.read_only = dry_run  # a dry run takes no lock and writes nothing on servers
        self.dry_run = dry_run
        self.frame: pd.DataFrame | None = None
        self.rejects: list[dict[str, Any]] = []
        self.merges: list[dict[str, Any]] = []
        self.rows_in = 0
        self.folder = local_root / env.name / "imports" / self.id
        self.summary: dict[str, Any] = {"steps": {}}
        self.report.data["import"] = self.summary

    def counted(self, step: str, started: float, **counts: Any) -> None:
        self.summary["steps"][step] = {"seconds": round(time.monotonic() - started, 3), **counts}

    def prepare(self) -> None:
        """Extract, clean, deduplicate: on this machine, before any server is contacted."""
        mapping = self.mapping
        with self.step("extract") as s:
            started = time.monotonic()
            frame, how = read_source(self.source, mapping)
            self.rows_in = len(frame)
            self.summary["source"] = {"path": self.source, **how}
            self.counted("extract", started, rows=self.rows_in)
            s.detail = f"{self.rows_in} rows ({how['format']}" + (
                f", {how['encoding']}, {how['delimiter']!r})" if how["format"] == "csv" else ")"
            )
        with self.step("clean") as s:
            started = time.monotonic()
            cleaned = clean(frame, mapping)
            self.rejects = list(cleaned.rejects)
            self.counted("clean", started, rows=len(cleaned.frame), rejected=len(self.rejects))
            s.detail = f"{len(cleaned.frame)} clean, {len(self.rejects)} rejected"
        with self.step("deduplicate") as s:
            started = time.monotonic()
            deduped = deduplicate(cleaned.frame, mapping)
            self.merges = deduped.merges
            self.frame = deduped.frame
            self.counted("deduplicate", started, rows=len(self.frame), merged=len(self.merges))
            s.detail = f"{len(self.frame)} customers, {len(self.merges)} duplicate(s) merged"

    def body(self) -> str:
        assert self.frame is not None
        values = self.validate_models()
        self.write_files()
        counts = {
            "rows_in": self.rows_in,
            "valid": len(values),
            "rejected": len(self.rejects),
            "merged": len(self.merges),
        }
        self.summary["counts"] = counts
        if counts["valid"] + counts["rejected"] + counts["merged"] != self.rows_in:
            raise SeedError(f"the rows do not reconcile: {counts}")
        if self.dry_run:
            return (
                f"dry run of {self.source}: {self.rows_in} rows in, {len(values)} would load, "
                f"{len(self.rejects)} rejected, {len(self.merges)} merged (see {self.folder}); "
                "nothing was written"
            )
        verified_backup(self, f"before import {self.id}", "import")
        loaded = self.load(values)
        counts.update(loaded)
        return (
            f"imported {self.source} into {self.mapping.table}: {loaded['inserted']} new, "
            f"{loaded['updated']} updated, {len(self.rejects)} rejected, {len(self.merges)} "
            f"merged, out of {self.rows_in} rows; verified (count, checksum, sample)"
        )

    # -- model validation ------------------------------------------------------------------

    def validate_models(self) -> list[dict[str, Any]]:
        """full_clean() of every record with the deployed release's model; the failures
        become rejects; returns the valid records' database values."""
        assert self.frame is not None
        migrator = self.session.migrator
        with self.step("model validation") as s:
            started = time.monotonic()
            current = rel.current_release(migrator, self.layout)
            if not current:
                raise PreflightFailed(
                    f"no release is deployed on {migrator.label}: the model's rules come from "
                    "the deployed code (deploy first)"
                )
            path = self.layout.release(current)
            records = self.frame.drop(columns=["row"]).to_dict("records")
            lines = "".join(
                json.dumps({"i": i, "values": r}, ensure_ascii=False) + "\n"
                for i, r in enumerate(records)
            )
            data = posixpath.join(path, f".seed-import-{self.id}.jsonl")
            script = posixpath.join(path, ".seed-django-validate.py")
            migrator.put_bytes(lines.encode(), data, mode=0o600)
            code = resources.files("seed.remote_scripts").joinpath("django_validate.py")
            migrator.put_bytes(code.read_bytes(), script, mode=0o600)
            try:
                res = migrator.run(
                    f"cd {q(path)} && set -a && . {q(self.layout.env_file)} && set +a && "
                    f"export PGAPPNAME={q(self.app_name)} && .venv/bin/python {q(script)} "
                    f"{q(self.mapping.model)} {q(data)} {q(','.join(self.mapping.key))}",
                    timeout=3600,
                )
            finally:
                with contextlib.suppress(SeedError, OSError):
                    migrator.run(f"rm -f {q(data)} {q(script)}")
            if not res.ok:
                raise PreflightFailed(f"model validation on {migrator.label} failed: {res.tail(3)}")
            rows = self.frame["row"].tolist()
            values: list[dict[str, Any]] = []
            bad = 0
            for line in res.stdout.splitlines():
                item = json.loads(line)
                if item["ok"]:
                    values.append(item["values"])
                    continue
                bad += 1
                reason = "; ".join(
                    f"{field}: {' '.join(messages)}" for field, messages in item["errors"].items()
                )
                self.rejects.append({"row": rows[item["i"]], "reason": f"model: {reason}"})
            self.rejects.sort(key=lambda r: r["row"])
            self.counted("model validation", started, valid=len(values), rejected=bad)
            s.detail = f"{len(values)} valid for {self.mapping.model} ({current}), {bad} rejected"
            return values

    def write_files(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "rejects.csv", "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["row", "reason"])
            out.writerows([r["row"], r["reason"]] for r in self.rejects)
        with open(self.folder / "duplicates.csv", "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["kept_row", "merged_row", "key"])
            out.writerows([m["kept_row"], m["merged_row"], m["key"]] for m in self.merges)
        self.summary["files"] = {
            "rejects": str(self.folder / "rejects.csv"),
            "duplicates": str(self.folder / "duplicates.csv"),
        }

    # -- load ------------------------------------------------------------------------------

    def load(self, values: list[dict[str, Any]]) -> dict[str, int]:
        mapping = self.mapping
        staging = f"seed_import_{restorelib.db_tag(self.id)}"
        with self.step("load") as s:
            started = time.monotonic()
            conn = self.session.connect(admin=False, app_name=self.app_name)
            try:
                result = load_rows(conn, mapping, staging, values)
            finally:
                conn.close()
            self.counted("load", started, **result)
            s.detail = (
                f"{result['inserted']} inserted, {result['updated']} updated in one transaction; "
                f"count, checksum and {result['sampled']} sampled rows equal to the staging table"
            )
            return result


def load_rows(
    conn: psycopg.Connection[Any], mapping: Mapping, staging: str, values: list[dict[str, Any]]
) -> dict[str, int]:
    """COPY `values` (column → text) into the table `staging`, upsert them into the
    mapping's table in one verified transaction (upsert()), drop `staging`. A failure
    raises ImportFailed with nothing written to the target."""
    types = column_types(conn, mapping.table)
    columns = [c for c in (values[0] if values else {}) if c in types]
    try:
        # a temporary table: no WAL, gone with the session whatever happens
        conn.execute(
            sql.SQL("create temporary table {} ({})").format(
                sql.Identifier(staging),
                sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns),
            )
        )
        copy_sql = sql.SQL("copy {} ({}) from stdin").format(
            sql.Identifier(staging), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for record in values:
                copy.write_row([record.get(c) for c in columns])
        try:
            return upsert(conn, mapping, staging, columns, types)
        except psycopg.Error as exc:
            raise ImportFailed(
                f"import into {mapping.table} FAILED and was rolled back: "
                f"{dblib.error_text(exc)}; nothing was written (a backup was taken before)"
            ) from None
        except SeedError as exc:
            raise ImportFailed(f"import into {mapping.table} FAILED: {exc}") from None
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(staging)))


def column_types(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute "
        "where attrelid = %s::regclass and attnum > 0 and not attisdropped",
        (table,),
    ).fetchall()
    if not rows:
        raise PreflightFailed(f"target table {table} does not exist")
    return {str(a): str(t) for a, t in rows}


def upsert(
    conn: psycopg.Connection[Any],
    mapping: Mapping,
    staging: str,
    columns: list[str],
    types: dict[str, str],
) -> dict[str, int]:
    """One transaction: insert or update on the key, then compare count, checksum and a
    sample of the target rows with the staging rows; a difference rolls it all back."""
    target = sql.Identifier(mapping.table)
    stage = sql.Identifier(staging)
    cast = [
        sql.SQL("cast(s.{c} as {t})").format(c=sql.Identifier(c), t=sql.SQL(types[c]))
        for c in columns
    ]
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
        for c in columns
        if c not in mapping.key
    )
    key = sql.SQL(", ").join(map(sql.Identifier, mapping.key))
    join = sql.SQL(" and ").join(
        sql.SQL("t.{c} = cast(s.{c} as {t})").format(c=sql.Identifier(c), t=sql.SQL(types[c]))
        for c in mapping.key
    )
    with conn.transaction():
        dblib.set_checksum_settings(conn)
        counted = conn.execute(
            sql.SQL(
                "with upserted as (insert into {target} ({names}) select {cast} from {stage} s "
                "on conflict ({key}) do update set {updates} returning (xmax = 0) as new) "
                "select count(*), count(*) filter (where new) from upserted"
            ).format(
                target=target,
                names=names,
                cast=sql.SQL(", ").join(cast),
                stage=stage,
                key=key,
                updates=updates,
            )
        ).fetchone()
        total, inserted = (int(counted[0]), int(counted[1])) if counted else (0, 0)
        row_text = sql.SQL("row({})::text").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns)
        )
        staged_text = sql.SQL("row({})::text").format(sql.SQL(", ").join(cast))
        want = conn.execute(
            sql.SQL("select count(*), sum(hashtextextended({}, 0)) from {} s").format(
                staged_text, stage
            )
        ).fetchone()
        got = conn.execute(
            sql.SQL(
                "select count(*), sum(hashtextextended({}, 0)) from {} s join {} t on {}"
            ).format(row_text, stage, target, join)
        ).fetchone()
        if want != got:
            raise SeedError(
                f"the loaded rows differ from the staging table (count, checksum: {got} vs {want})"
            )
        sample = conn.execute(
            sql.SQL(
                "select count(*) from (select * from {} s order by random() limit 25) s "
                "join {} t on {} where {} is distinct from {}"
            ).format(stage, target, join, row_text, staged_text)
        ).fetchone()
        if sample and sample[0]:
            raise SeedError(f"{sample[0]} sampled row(s) differ between staging and target")
    return {"inserted": inserted, "updated": total - inserted, "sampled": min(25, total)}
