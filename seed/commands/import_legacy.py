"""`fab <env> import-legacy --source PATH|DSN --mapping FILE [--dry-run]`.

Each step is checked before the next: extract (seed/legacy/extract.py; a header the mapping
needs and the source lacks stops everything), clean and deduplicate
(seed/legacy/clean.py), then the model's own rules: every record is checked as
`full_clean()` would, batched, with the target model in the deployed release on the
migrate host (seed/remote/scripts/django_validate.py), which also applies Python-side
defaults. With `imports.compare_with` (or `--compare-with`) the run is then compared
with the kept record of that environment's last import into the same table
(seed/legacy/compare.py) and, on a protected environment, confirmed by a human.
Without `--dry-run`: a verified backup, `COPY` of the valid records into a staging
table, and one transaction that updates the existing rows (the mapped columns, only
where a value differs) and inserts the new ones, and checks, before committing, that
the staging rows and the target rows carry the same count and checksum and that a
sample compares equal; any failure rolls all of it back. Rejects (row, reason),
merges and the run's record go to `rejects.csv`, `duplicates.csv` and `import.json`
in `.seed/<env>/imports/<id>/`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import posixpath
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from seed.backup import restore as restorelib
from seed.backup.verified import verified_backup
from seed.deploy import release as rel
from seed.errors import PreflightFailed, SeedError, StepFailed
from seed.legacy.clean import clean, deduplicate
from seed.legacy.compare import (
    Comparison,
    compare,
    earlier_record,
    file_digest,
    frame_digest,
    key_digests,
    reason_counts,
    write_keys,
    write_record,
)
from seed.legacy.extract import parse_source, read_source
from seed.legacy.load import load_rows
from seed.legacy.mapping import Mapping, load_mapping
from seed.remote.ssh import q
from seed.run.context import RunContext
from seed.run.operation import Operation


class ImportLegacy(Operation):
    kind = "import"

    def __init__(
        self,
        ctx: RunContext,
        *,
        source: str,
        mapping: Path,
        dry_run: bool = False,
        compare_with: str | None = None,
        confirm: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(ctx)
        env = ctx.env
        self.source = parse_source(source)
        if self.source.password:  # and as a ${VAR} put it into the URL
            self.out.scrub.add(self.source.password, quote(self.source.password, safe=""))
        if self.source.typed_password:
            self.out.line(
                "warning: --source has its password written in it, which `ps` and the shell's "
                "history show: leave it out (PGPASSWORD or ~/.pgpass, as for psql) or write "
                "'${VARIABLE}' in single quotes",
                style="yellow",
            )
        self.mapping: Mapping = load_mapping(mapping)  # before anything is read
        self.mapping_digest = file_digest(self.mapping.path)
        # an earlier run (staging's) this one is compared with before it loads
        self.compare_spec = compare_with or env.imports.compare_with
        self.earlier: dict[str, Any] | None = None
        self.comparison: Comparison | None = None
        self.confirm = confirm  # asks a human after the comparison (protected envs)
        self.read_only = dry_run  # a dry run takes no lock and writes nothing on servers
        self.dry_run = dry_run
        self.frame: pd.DataFrame | None = None
        self.rejects: list[dict[str, Any]] = []
        self.merges: list[dict[str, Any]] = []
        self.rows_in = 0
        self.release = ""
        self.update_columns: list[str] = []  # what an update of an existing row may change
        self.valid_positions: list[int] = []  # the frame's rows that passed model validation
        self.folder = ctx.local_root / env.name / "imports" / self.id
        self.summary: dict[str, Any] = {"steps": {}}
        self.report.import_ = self.summary

    def counted(self, step: str, started: float, **counts: Any) -> None:
        self.summary["steps"][step] = {"seconds": round(time.monotonic() - started, 3), **counts}

    def prepare(self) -> None:
        """Extract, clean, deduplicate: on this machine, before any server is contacted."""
        mapping = self.mapping
        if self.compare_spec:  # before anything is read: no earlier run, no import
            self.earlier = earlier_record(self.local_root, self.compare_spec, mapping.table)
        with self.step("extract") as s:
            started = time.monotonic()
            frame, how = read_source(self.source, mapping)
            self.rows_in = len(frame)
            digest = frame_digest(frame.drop(columns=["row"]))
            self.summary["source"] = {"path": self.source.shown, **how, "digest": digest}
            self.counted("extract", started, rows=self.rows_in)
            s.detail = f"{self.rows_in} rows ({how['format']}" + (
                f", {how['encoding']} ({how['encoding_basis']}), {how['delimiter']!r})"
                if how["format"] == "csv"
                else ")"
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
            s.detail = f"{len(self.frame)} records, {len(self.merges)} duplicate(s) merged"

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
        validated = self.summary["steps"]["model validation"]
        counts.update(new=validated["new"], existing=validated["existing"])
        self.summary["counts"] = counts
        if counts["valid"] + counts["rejected"] + counts["merged"] != self.rows_in:
            raise StepFailed(f"the rows do not reconcile: {counts}")
        if self.earlier is not None:
            self.compare_with_earlier()
        if self.dry_run:
            self.keep_record("dry run")
            self.counts_table()
            return (
                f"dry run of {self.source.shown}: {self.rows_in} rows in, "
                f"{len(values)} would load, "
                f"{len(self.rejects)} rejected, {len(self.merges)} merged (see {self.folder}); "
                "nothing was written"
            )
        verified_backup(self, f"before import {self.id}", "import")
        loaded = self.load(values)
        counts.update(loaded)
        self.keep_record("loaded")
        self.counts_table()
        return (
            f"imported {self.source.shown} into {self.mapping.table}: {loaded['inserted']} new, "
            f"{loaded['updated']} updated, {loaded['unchanged']} unchanged, "
            f"{len(self.rejects)} rejected, {len(self.merges)} "
            f"merged, out of {self.rows_in} rows; verified (count, checksum, sample)"
        )

    def counts_table(self) -> None:
        """Each step's rows in and out, rejects, merges and time (also in the report)."""
        steps, counts = self.summary["steps"], self.summary["counts"]

        def n(value: Any) -> str:
            return "" if value is None else f"{value:,}"

        rows: list[list[str]] = []
        before: Any = None
        for name, out_key, rejected, merged in (
            ("extract", "rows", None, None),
            ("clean", "rows", "rejected", None),
            ("deduplicate", "rows", None, "merged"),
            ("model validation", "valid", "rejected", None),
        ):
            step = steps.get(name, {})
            rows.append(
                [
                    name,
                    n(before),
                    n(step.get(out_key)),
                    n(step.get(rejected) if rejected else None),
                    n(step.get(merged) if merged else None),
                    f"{step.get('seconds', 0):.2f}s",
                ]
            )
            before = step.get(out_key)
        if "load" in steps:
            load = steps["load"]
            rows.append(
                [
                    f"load ({load['inserted']:,} new, {load['updated']:,} updated, "
                    f"{load['unchanged']:,} unchanged)",
                    n(before),
                    n(load["inserted"] + load["updated"] + load["unchanged"]),
                    "",
                    "",
                    f"{load['seconds']:.2f}s",
                ]
            )
        total = sum(float(step.get("seconds", 0)) for step in steps.values())
        rows.append(
            [
                "total (in = valid + rejected + merged)",
                n(counts["rows_in"]),
                n(counts["valid"]),
                n(counts["rejected"]),
                n(counts["merged"]),
                f"{total:.2f}s",
            ]
        )
        self.out.table(
            f"import into {self.mapping.table}",
            ["step", "in", "out", "rejected", "merged", "time"],
            rows,
        )

    # -- the record kept, and the comparison with an earlier run (staging's) ---------------

    def import_record(self, outcome: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "env": self.env.name,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "outcome": outcome,
            "target": {
                "model": self.mapping.model,
                "table": self.mapping.table,
                "key": list(self.mapping.key),
            },
            "source": self.summary["source"],
            "mapping": {"path": str(self.mapping.path), "digest": self.mapping_digest},
            "release": self.release,
            "counts": self.summary["counts"],
            "reasons": reason_counts(self.rejects),
            "steps": self.summary["steps"],
            # which key made keys.tsv.gz's digests (its fingerprint, never the key)
            "digests": {"algorithm": "hmac-sha256", "key_id": self.digester.key_id},
        }

    def keep_record(self, outcome: str) -> None:
        """import.json next to rejects.csv and duplicates.csv, and the valid records' key
        and row digests (keys.tsv.gz, not the values): what a later run
        (production after staging) is compared with."""
        try:
            path = write_record(self.folder, self.import_record(outcome))
            write_keys(self.folder, self.digests, self.digester.key_id)
        except OSError as exc:  # after a load it is done: say so, do not fail it
            self.out.line(
                f"warning: the import's record could not be kept in {self.folder}: "
                f"{exc.strerror}; a later run cannot be compared with this one",
                style="yellow",
            )
            return
        self.summary["files"]["record"] = str(path)

    @functools.cached_property
    def digests(self) -> dict[str, str]:
        """The valid records' key and row digests (after model validation; once)."""
        assert self.frame is not None
        valid = self.frame.iloc[self.valid_positions].drop(columns=["row"])
        return key_digests(valid, list(self.mapping.key), self.digester)

    def compare_with_earlier(self) -> None:
        """Show this run's differences from the earlier one before anything is loaded; on a
        protected environment a human confirms them (or --yes)."""
        assert self.earlier is not None
        where = self.earlier.get("env", "?")
        with self.step(f"compare with {where}") as s:
            now = self.import_record("pending")
            rows = {int(r["row"]): str(r["reason"]) for r in self.rejects}
            self.comparison = compare(self.earlier, now, rows, self.digests, self.digester.key_id)
            self.summary["comparison"] = self.comparison.to_json()
            for line in self.comparison.lines:
                self.out.line(f"  {line}")
            n = self.comparison.differences
            s.detail = (
                f"{n} difference(s) from {where}'s import {self.earlier.get('id')} "
                f"({self.earlier.get('finished')})"
            )
        if self.confirm is not None and not self.dry_run:
            self.confirm(
                f"load into {self.mapping.table} with {n} difference(s) from {where}'s import"
            )

    # -- model validation ------------------------------------------------------------------

    def validate_models(self) -> list[dict[str, Any]]:
        """full_clean() of every record with the deployed release's model; the failures
        become rejects; returns the valid records' database values."""
        assert self.frame is not None
        migrator = self.session.migrator
        with self.step("model validation") as s:
            started = time.monotonic()
            current = rel.current_release(migrator, self.at(migrator))
            if not current:
                raise PreflightFailed(
                    f"no release is deployed on {migrator.label}: the model's rules come from "
                    "the deployed code (deploy first)"
                )
            path = self.at(migrator).release(current)
            records = self.frame.drop(columns=["row"]).to_dict("records")
            payload = "".join(
                json.dumps({"i": i, "values": r}, ensure_ascii=False) + "\n"
                for i, r in enumerate(records)
            )
            data = posixpath.join(path, f".seed-import-{self.id}.jsonl")
            script = posixpath.join(path, ".seed-django-validate.py")
            migrator.put_bytes(payload.encode(), data, mode=0o600)
            code = resources.files("seed.remote.scripts").joinpath("django_validate.py")
            migrator.put_bytes(code.read_bytes(), script, mode=0o600)
            try:
                res = migrator.run(
                    f"cd {q(path)} && {rel.source_env(self.at(migrator), path)} && "
                    f"export PGAPPNAME={q(self.app_name)} && .venv/bin/python {q(script)} "
                    f"{q(self.mapping.model)} {q(data)} {q(','.join(self.mapping.key))}",
                    timeout=3600,
                )
            finally:
                with contextlib.suppress(SeedError, OSError):
                    migrator.run(f"rm -f {q(data)} {q(script)}")
            if not res.ok:
                if res.exit_code == 3:  # the script's own one-line error
                    raise PreflightFailed(f"{self.mapping.path}: {res.tail(1)}")
                raise PreflightFailed(f"model validation on {migrator.label} failed: {res.tail(3)}")
            rows = self.frame["row"].tolist()
            values: list[dict[str, Any]] = []
            bad = new = 0
            lines = res.stdout.splitlines()
            head = json.loads(lines[0]) if lines else {"columns": [], "update": []}
            self.update_columns = list(head["update"])
            if head.get("table") not in (None, self.mapping.table):
                raise PreflightFailed(
                    f"{self.mapping.path}: target.table {self.mapping.table} is not the table "
                    f"of {self.mapping.model} ({head['table']}); fix target.table"
                )
            for line in lines[1:]:
                item = json.loads(line)
                if item["ok"]:
                    values.append(item["values"])
                    self.valid_positions.append(int(item["i"]))
                    new += bool(item["new"])
                    continue
                bad += 1
                reason = "; ".join(
                    f"{field}: {' '.join(messages)}" for field, messages in item["errors"].items()
                )
                self.rejects.append({"row": rows[item["i"]], "reason": f"model: {reason}"})
            self.rejects.sort(key=lambda r: r["row"])
            self.release = current
            self.counted(
                "model validation",
                started,
                valid=len(values),
                rejected=bad,
                new=new,
                existing=len(values) - new,
            )
            s.detail = (
                f"{len(values)} valid for {self.mapping.model} ({current}: {new} new, "
                f"{len(values) - new} existing), {bad} rejected"
            )
            return values

    def write_files(self) -> None:
        """rejects.csv and duplicates.csv, before anything is loaded: an import whose
        rejects cannot be written (a full disk here) loads nothing (exit 4)."""
        try:
            self._write_files()
        except OSError as exc:
            raise PreflightFailed(
                f"cannot write the rejects and merges to {self.folder}: {exc.strerror}; "
                "nothing was loaded"
            ) from None

    def _write_files(self) -> None:
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
                result = load_rows(conn, mapping, staging, values, self.update_columns)
            finally:
                conn.close()
            self.counted("load", started, **result)
            s.detail = (
                f"{result['inserted']} inserted, {result['updated']} updated, "
                f"{result['unchanged']} unchanged in one transaction; "
                f"count, checksum and {result['sampled']} sampled rows equal to the staging table"
            )
            return result
