"""`fab <source> copy-to <target>`: an anonymized copy of one environment's database.

Masking happens before any byte reaches the target. On the *source* side, the
source's newest verified backup is restored into a scratch database in three
sections: the schema (pre-data), where the rules' schema-drift gate runs before a
single row is loaded; the rows (data); after masking, the indexes and constraints
(post-data), so the masking UPDATEs maintain no index and every foreign key and
unique constraint is validated on masked values. Sampled originals are searched
for, counts are compared with the backup, then the masked database is dumped and the
scratch dropped. On the *target* side the dump is restored `--no-owner --no-acl` as
the target's app role into a scratch database, its figures compared with the masked
ones, and swapped in like a restore (DESIGN: Rollback); the replaced database is
kept until `cleanup`. Until that swap the target is untouched; a failure drops every
scratch database and file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from seed.backup import dump as backups
from seed.backup import restore as restorelib
from seed.backup.dump import find_manifest
from seed.config.environment import Environment
from seed.copy import masking
from seed.copy.masking import copy_settings
from seed.db import postgres as dblib
from seed.db.replication import refuse_if_replicated
from seed.errors import ConfigError, HumanNeeded, PreflightFailed, RolledBack, SeedError, StepFailed
from seed.journal import recovery
from seed.journal.record import BackupRef
from seed.journal.store import job_dir
from seed.remote.session import Session
from seed.remote.ssh import Remote, q
from seed.run.context import RunContext
from seed.run.operation import Operation
from seed.undo import database as undo


class CopyFailed(RolledBack):
    """The copy failed after it started; the target was not touched (exit 5)."""


def check_pair(source: Environment, target: Environment) -> None:
    """Refuse (exit 2) a target that is the source or a protected environment."""
    if source.name == target.name:
        raise ConfigError(f"copy-to {target.name}: the target is the source")
    same = (
        source.roles.db.name == target.roles.db.name
        and source.db.host == target.db.host
        and source.db.port == target.db.port
        and source.db.name == target.db.name
    )
    if same:
        raise ConfigError(
            f"copy-to {target.name}: {target.path.name} names the same database as "
            f"{source.path.name} ({source.db.name} on {source.roles.db.name}): it would "
            "overwrite the source"
        )
    if target.protected:
        raise ConfigError(
            f"copy-to {target.name}: {target.name} is protected; copies never overwrite a "
            "protected environment (set protected: false on environments that receive them)"
        )


class CopyTo(Operation):
    """One copy run. The lock, journal and report are the target's."""

    kind = "copy"

    def __init__(
        self,
        ctx: RunContext,
        *,
        source: Environment,
        backup_id: str = "latest",
    ) -> None:
        super().__init__(ctx)
        env = ctx.env
        self.source = source
        self.backup_id = backup_id
        self.rules, self.key = copy_settings(source)
        self.src = Session(source)
        self.tag = restorelib.db_tag(self.id)
        self.mask_db = restorelib.scratch_name(source.db.name, f"mask_{self.tag}")
        self.copy_db = restorelib.scratch_name(env.db.name, f"copy_{self.tag}")
        self.src_jobs = job_dir(source.state_dir, self.id)
        self.dst_jobs = job_dir(env.state_dir, self.id)
        self.state: dict[str, str] = {"target": "untouched", "app": "running as before"}
        self.report.state = self.state
        self.report.source = source.name
        self.swapped = False
        self.source_keys: list[ForeignKey] = []
        self.orphans_before: dict[str, int] = {}

    # -- helpers ---------------------------------------------------------------------------

    def src_admin(self, dbname: str | None = None) -> Any:
        return self.src.connect(admin=True, dbname=dbname, app_name=self.app_name)

    def dst_admin(self, dbname: str | None = None) -> Any:
        return self.session.connect(admin=True, dbname=dbname, app_name=self.app_name)

    def restore_section(
        self, env: Environment, remote: Remote, path: str, new: str, job: str, options: str
    ) -> None:
        plan = restorelib.RestorePlan(env.db.name, new, "", path, "")
        restorelib.run_pg_restore(
            env, remote, plan, job, self.app_name, options=options, analyze=False
        )

    # -- the run ---------------------------------------------------------------------------

    def body(self) -> str:
        self.settle_dead_copies()
        try:
            manifest = self.preflight()
            masked, dump = self.mask(manifest)
            self.load(masked, dump)
        except (SeedError, psycopg.Error, OSError) as exc:
            if self.swapped:
                raise
            self.cleanup()
            if isinstance(exc, PreflightFailed | ConfigError):
                raise  # refused before anything ran: exit 2 or 4 as it is
            reason = str(exc) if isinstance(exc, SeedError) else dblib.error_text(exc)
            message = (
                f"copy of {self.source.name} to {self.env.name} FAILED: {reason}; "
                f"{self.env.name} was not touched and the scratch databases are dropped"
            )
            self.finish("failed", CopyFailed.code, message)
            raise CopyFailed(message) from None
        finally:
            self.remove_files()
            self.src.close()
        tables = (self.report.masking or {})["tables"]
        rows = sum(int(t["rows"]) for t in tables.values())
        return (
            f"copied {self.source.name} (backup {manifest['id']}) to {self.env.name}: "
            f"{len(tables)} tables, {rows} rows, masked and verified; "
            f"the old {self.env.db.name} is kept as {self.replaced} until `fab {self.env.name} "
            "cleanup`"
        )

    @property
    def replaced(self) -> str:
        return restorelib.scratch_name(self.env.db.name, f"replaced_{self.tag}")

    def settle_dead_copies(self) -> None:
        """Scratch databases of copies that died (killed) go before this one starts."""
        dead = [r for r in self.interrupted if r.kind == "copy" and not r.alive]
        if not dead or self.lock_conn is None:
            return
        with self.step("dead copies") as s:
            dropped = []
            for run in dead:
                for name in recovery.leftovers(self.lock_conn, self.env, run.id):
                    restorelib.drop_if_exists(self.lock_conn, name)
                    dropped.append(name)
                self.mark_interrupted(run, "its scratch databases dropped")
            reopened = recovery.reopen_database(self.lock_conn, self.env.db.name)
            s.detail = f"{len(dead)} dead copy run(s); dropped: {', '.join(dropped) or 'none'}"
            if reopened:
                s.detail += f"; connections to {self.env.db.name} allowed again"

    def preflight(self) -> dict[str, Any]:
        source, target = self.source, self.env
        with self.step("source") as s:
            self.src.open()
            s.detail = f"{source.name}: " + ", ".join(r.label for r in self.src.remotes.values())
            self.refuse_same_database()
        with self.step("backup") as s:
            manifests = backups.list_manifests(source, self.src.state)
            if not manifests:
                raise PreflightFailed(
                    f"{source.name} has no backup to copy: take one with `fab {source.name} "
                    "backup`, or pass --fresh"
                )
            manifest = find_manifest(manifests, self.backup_id)
            if "database_properties" not in manifest or "tables" not in manifest:
                raise PreflightFailed(f"backup {manifest['id']} has no complete manifest")
            restorelib.verify_backup(
                source, self.src.state, manifest["path"], manifest["sha256"], full_read=False
            )
            self.report.backup = BackupRef.from_json(
                {k: manifest[k] for k in ("id", "path", "sha256", "created_at") if k in manifest}
            )
            s.detail = f"{manifest['id']} ({manifest.get('created_at', '?')}), sha256 checked"
        with self.step("rules") as s:
            conn = self.src_admin()
            try:
                gate = masking.gate(self.rules, masking.catalog(conn))
                size = dblib.database_size(conn, source.db.name)
                # the definitions, to count orphans before masking (the scratch has no
                # constraints until its post-data section is restored)
                self.source_keys = foreign_keys(conn)
            finally:
                conn.close()
            self.report.gate = {"rules": str(self.rules.path), "live": gate.to_json()}
            self.refuse_if_blocked(gate, f"{source.name}'s live database")
            s.detail = f"{self.rules.path.name}: every table and personal column classified"
            if gate.stale:
                s.detail += f"; {len(gate.stale)} rule(s) for absent tables/columns (ignored)"
        with self.step("pre-flight") as s:
            conn = self.dst_admin("postgres")
            try:
                exists = conn.execute(
                    "select 1 from pg_database where datname = %s", (target.db.name,)
                ).fetchone()
                if not exists:
                    raise PreflightFailed(
                        f"{target.name}: database {target.db.name} does not exist; create it "
                        "(owned by the app role) first"
                    )
                refuse_if_replicated(target, conn)
                space = backups.restore_space(target, self.session.state, conn, size)
            finally:
                conn.close()
            s.detail = f"{target.name}: {space}"
        return manifest

    def refuse_same_database(self) -> None:
        """The target reached under another name (an alias, an IP, a tunnel) may still be the
        source's database: the clusters' identities and the database names say, not the
        host strings check_pair compared."""
        source, target = self.source, self.env
        if source.db.name != target.db.name:
            return
        src, dst = self.src_admin("postgres"), self.dst_admin("postgres")
        try:
            same = dblib.same_cluster(src, dst)
        finally:
            src.close()
            dst.close()
        if same:
            raise ConfigError(
                f"copy-to {target.name}: {target.db.host}:{target.db.port} is the same "
                f"PostgreSQL cluster as {source.name}'s {source.db.host}:{source.db.port}, "
                f"and both name database {target.db.name}: the copy would overwrite the source"
            )

    def refuse_if_blocked(self, gate: masking.Gate, what: str) -> None:
        if gate.blocking:
            raise PreflightFailed(
                f"masking rules {self.rules.path} do not cover {what}: "
                + "; ".join(gate.blocking)
                + f". Classify them in {self.rules.path.name} (check with `fab "
                f"{self.source.name} copy-rules --check`); nothing was copied"
            )

    # -- source side -----------------------------------------------------------------------

    def mask(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Restore, gate, mask, verify and dump on the source side; returns the masked
        figures and the dump's path on the source's state host."""
        source, state = self.source, self.src.state
        path = str(manifest["path"])
        with self.step("scratch schema") as s:
            pg = self.src_admin("postgres")
            restorelib.drop_if_exists(pg, self.mask_db)
            restorelib.create_like(pg, self.mask_db, manifest["database_properties"])
            pg.close()
            self.state["source"] = f"scratch database {self.mask_db} on {source.name}"
            self.restore_section(
                source, state, path, self.mask_db, f"{self.src_jobs}/pre", "--section=pre-data"
            )
            conn = self.src_admin(self.mask_db)
            tables = masking.catalog(conn)
            conn.close()
            gate = masking.gate(self.rules, tables)
            assert self.report.gate is not None
            self.report.gate["backup"] = gate.to_json()
            self.refuse_if_blocked(gate, f"backup {manifest['id']}")
            s.detail = f"{len(tables)} tables; the rules cover them"
        with self.step("scratch data") as s:
            self.restore_section(
                source, state, path, self.mask_db, f"{self.src_jobs}/data", "--section=data"
            )
            conn = self.src_admin(self.mask_db)
            expected = manifest["tables"]
            found = self.figures(conn, self.mask_db, dblib.recorded_algorithm(expected))
            differ = sorted(
                t for t in set(found) | set(expected) if found.get(t) != expected.get(t)
            )
            if differ:
                raise StepFailed(
                    f"backup {manifest['id']} restored different data: {', '.join(differ)}"
                )
            s.detail = f"{sum(f['rows'] for f in found.values())} rows, equal to the backup"
        with self.step("sample") as s:
            self.orphans_before = orphans(conn, self.source_keys)
            samples, sampling = self.sample(conn, tables, found)
            s.detail = (
                f"{sum(len(v) for v in samples.values())} original value(s) from "
                f"{len(sampling)} masked column(s) (kept in memory only)"
            )
        with self.step("mask") as s:
            started = time.monotonic()
            summary = self.apply_masks(conn, tables, found)
            conn.close()
            seconds = time.monotonic() - started
            rows = sum(int(t["rows"]) for t in summary.values())
            self.report.masking = {
                "rules": str(self.rules.path),
                "locale": self.rules.locale,
                "seconds": round(seconds, 3),
                "tables": summary,
                "samples": sampling,
            }
            changed = sum(1 for t in summary.values() if t["masked"] or t["truncated"])
            s.detail = f"{changed} table(s) masked, {rows} rows in {seconds:.1f} s"
        with self.step("constraints") as s:
            self.restore_section(
                source, state, path, self.mask_db, f"{self.src_jobs}/post", "--section=post-data"
            )
            s.detail = "indexes, unique and foreign keys built on the masked rows"
        with self.step("verify masked") as s:
            conn = self.src_admin(self.mask_db)
            try:
                masked = self.figures(conn, self.mask_db, dblib.recorded_algorithm(expected))
                problems = self.verify_masked(conn, tables, expected, masked, samples, summary)
            finally:
                conn.close()
            samples.clear()
            if problems:
                raise StepFailed("masked copy failed verification: " + "; ".join(problems))
            v = (self.report.masking or {})["verification"]
            s.detail = (
                f"counts equal, {v['foreign_keys']} foreign key(s) intact, "
                f"{v['samples_searched']} sampled original(s) found nowhere"
            )
        with self.step("dump masked") as s:
            dump_env = replace(
                source,
                db=replace(source.db, name=self.mask_db),
                backup=replace(source.backup, dir=self.src_jobs, format="custom", compression=1),
            )
            dump, sha, size = backups.take_backup(
                dump_env, state, "masked", f"{self.src_jobs}/dump", self.app_name
            )
            pg = self.src_admin("postgres")
            restorelib.drop_if_exists(pg, self.mask_db)
            pg.close()
            self.state.pop("source", None)
            self.report.masked_dump = {"sha256": sha, "size": size}
            s.detail = f"{size / 1e6:.1f} MB, verified; scratch {self.mask_db} dropped"
        self.dump_sha = sha
        return masked, dump

    def figures(self, conn: Any, dbname: str, algorithm: str) -> dict[str, Any]:
        """Count and checksum of every table of the source-side scratch database."""
        found = dblib.parallel_figures(
            conn,
            lambda: self.src_admin(dbname),
            self.source.db.fingerprint_sessions,
            algorithm=algorithm,
        )
        return {k: v.to_json() for k, v in found.items()}

    def sample(
        self, conn: Any, tables: dict[str, list[masking.Column]], found: dict[str, Any]
    ) -> tuple[dict[tuple[str, str], list[str]], dict[str, Any]]:
        samples: dict[tuple[str, str], list[str]] = {}
        sampling: dict[str, Any] = {}
        for table, column in masking.masked_columns(self.rules, tables):
            rows = int((found.get(table) or {}).get("rows", 0))
            rule = self.rules.tables[table].columns[column.name]
            values = masking.sample_originals(
                conn, table, column.name, rows, self.source.copy.sample
            )
            kept, aside = masking.searchable(values, rule)
            samples[(table, column.name)] = kept
            sampling[f"{table}.{column.name}"] = {"sampled": len(values), "set_aside": aside}
        return samples, sampling

    def apply_masks(
        self, conn: Any, tables: dict[str, list[masking.Column]], found: dict[str, Any]
    ) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        masking.load_key(conn, self.key)
        for table, columns in tables.items():
            rule = self.rules.tables[table]
            statement = masking.update_sql(table, rule, columns)
            started = time.monotonic()
            if statement is not None:
                conn.execute(statement)
            masked = {
                c.name: rule.columns[c.name].describe()
                for c in columns
                if c.name in rule.columns and rule.columns[c.name].masks
            }
            summary[table] = {
                "personal": rule.personal,
                "truncated": rule.truncate,
                "rows": 0 if rule.truncate else int((found.get(table) or {}).get("rows", 0)),
                "masked": masked,
                "kept": [c.name for c in columns if c.name not in masked and not rule.truncate],
                "seconds": round(time.monotonic() - started, 3),
            }
        return summary

    def verify_masked(
        self,
        conn: Any,
        tables: dict[str, list[masking.Column]],
        expected: dict[str, Any],
        masked: dict[str, Any],
        samples: dict[tuple[str, str], list[str]],
        summary: dict[str, Any],
    ) -> list[str]:
        problems = []
        wrong = []
        for table in sorted(set(expected) | set(masked)):
            want = (
                0
                if summary.get(table, {}).get("truncated")
                else expected.get(table, {}).get("rows")
            )
            if (masked.get(table) or {}).get("rows") != want:
                wrong.append(table)
        if wrong:
            problems.append(f"row counts differ from the backup: {', '.join(wrong)}")
        after = orphans(conn, foreign_keys(conn))
        # equal to the source: 0 for a validated key, as many as before for a NOT VALID one
        broken = {k: v for k, v in after.items() if v != self.orphans_before.get(k, 0)}
        if broken:
            problems.append(
                "foreign keys with rows pointing nowhere (not so in the source): "
                + ", ".join(f"{k} ({v})" for k, v in broken.items())
            )
        found = masking.survivors(conn, samples, tables)
        if found:
            problems.append(
                "sampled original values survive in: "
                + ", ".join(f"{k} ({v} row(s))" for k, v in found.items())
            )
        assert self.report.masking is not None
        self.report.masking["verification"] = {
            "row_counts_equal": not wrong,
            "foreign_keys": len(after),
            "foreign_key_orphans": {k: v for k, v in after.items() if v},
            "foreign_key_orphans_in_source": {k: v for k, v in self.orphans_before.items() if v},
            "samples_searched": sum(len(v) for v in samples.values()),
            "survivors": found,
        }
        return problems

    # -- target side -----------------------------------------------------------------------

    def load(self, masked: dict[str, Any], dump: str) -> None:
        target, state = self.env, self.session.state
        with self.step("transfer") as s:
            path = self.transfer(dump)
            s.detail = "same state host: no transfer" if path == dump else f"to {state.label}"
        with self.step("load") as s:
            pg = self.dst_admin("postgres")
            props = restorelib.database_properties(pg, target.db.name)
            restorelib.drop_if_exists(pg, self.copy_db)
            restorelib.create_like(pg, self.copy_db, props)
            pg.close()
            self.state["target"] = f"untouched; the copy loads into {self.copy_db}"
            plan = restorelib.RestorePlan(target.db.name, self.copy_db, "", path, "")
            options = f"--no-owner --no-acl --role={q(target.db.user)}"
            restorelib.run_pg_restore(
                target, state, plan, f"{self.dst_jobs}/load", self.app_name, options=options
            )
            pg = self.dst_admin("postgres")
            restorelib.apply_properties(pg, self.copy_db, props)
            pg.close()
            s.detail = f"into {self.copy_db}, owned by {target.db.user}"
        with self.step("verify copy") as s:
            conn = self.dst_admin(self.copy_db)
            algorithm = dblib.recorded_algorithm(masked)
            found = self.table_figures(
                conn,
                self.copy_db,
                algorithm=algorithm,
            )
            conn.close()
            got = {k: v.to_json() for k, v in found.items()}
            differ = sorted(t for t in set(got) | set(masked) if got.get(t) != masked.get(t))
            if differ:
                raise StepFailed(
                    f"the loaded copy differs from the masked one: {', '.join(differ)}"
                )
            s.detail = f"{len(got)} tables: counts and checksums equal to the masked copy"
        self.freeze()
        self.state["app"] = "stopped (maintenance on)"
        with self.step("swap") as s:
            plan = restorelib.RestorePlan(target.db.name, self.copy_db, self.replaced, path, "")
            self.swapped = True
            try:
                undo.swap_in(self, plan)
            except (psycopg.Error, OSError) as exc:
                self.state["target"] = (
                    f"swap failed ({dblib.error_text(exc)}): connections to "
                    f"{target.db.name} may be disabled; the copy is {self.copy_db}"
                )
                raise HumanNeeded(
                    f"copy to {target.name}: the swap failed: {self.state['target']}"
                ) from None
            self.report.replaced_database = self.replaced
            self.state["target"] = (
                f"{target.db.name} is the masked copy of {self.source.name}; the old one is "
                f"kept as {self.replaced}"
            )
            s.detail = f"{self.copy_db} → {target.db.name}; old kept as {self.replaced}"
        with self.step("start app") as s:
            try:
                s.detail = self.state["app"] = self.start_app(self.running)
            except SeedError as exc:
                self.state["app"] = f"not started: {exc}"
                raise HumanNeeded(
                    f"copy to {target.name} swapped the database but the app did not start: {exc}"
                ) from None
        self.admin = self.dst_admin()

    def transfer(self, dump: str) -> str:
        """The masked dump onto the target's state host (through this machine when the
        state hosts differ), sha256 checked there."""
        source_host, target_host = self.src.state.host, self.session.state.host
        if source_host == target_host:
            return dump
        remote_path = f"{self.dst_jobs}/masked.dump"
        self.session.state.mkdirs(self.dst_jobs, mode=0o700)
        fd, local = tempfile.mkstemp(prefix="seed-masked-", suffix=".dump")
        os.close(fd)
        try:
            self.src.state.sftp.get(dump, local)
            self.session.state.put_file(local, remote_path)
        finally:
            os.unlink(local)
        restorelib.verify_backup(self.env, self.session.state, remote_path, self.dump_sha, False)
        return remote_path

    # -- leaving nothing behind --------------------------------------------------------------

    def cleanup(self) -> None:
        """Drop both scratch databases (a failed copy leaves the target as it was)."""
        for connect, name in ((self.src_admin, self.mask_db), (self.dst_admin, self.copy_db)):
            with contextlib.suppress(SeedError, psycopg.Error, OSError, AssertionError):
                pg = connect("postgres")
                restorelib.drop_if_exists(pg, name)
                pg.close()
        self.state.pop("source", None)

    def remove_files(self) -> None:
        for session, directory in ((self.src, self.src_jobs), (self.session, self.dst_jobs)):
            with contextlib.suppress(SeedError, OSError, KeyError, AssertionError):
                session.state.run(f"rm -f {q(directory)}/masked.dump {q(directory)}/*/pgpass")


@dataclass(frozen=True)
class ForeignKey:
    name: str  # `<constraint> on <table>`
    child: str  # regclass text, quoted as needed
    parent: str
    keys: tuple[str, ...]
    refs: tuple[str, ...]


def foreign_keys(conn: psycopg.Connection[Any]) -> list[ForeignKey]:
    """Every foreign key constraint of the database, validated or not."""
    rows = conn.execute(
        """
        select c.conname, c.conrelid::regclass::text, c.confrelid::regclass::text,
               array(select a.attname from unnest(c.conkey) with ordinality k(n, i)
                     join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n
                     order by k.i),
               array(select a.attname from unnest(c.confkey) with ordinality k(n, i)
                     join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n
                     order by k.i)
        from pg_constraint c where c.contype = 'f' order by 2, 1
        """
    ).fetchall()
    return [
        ForeignKey(f"{name} on {child}", str(child), str(parent), tuple(keys), tuple(refs))
        for name, child, parent, keys, refs in rows
    ]


def orphans(conn: psycopg.Connection[Any], keys: list[ForeignKey]) -> dict[str, int]:
    """{foreign key: rows whose key points at no row} (MATCH SIMPLE: a NULL part never
    points anywhere). Works without the constraints, from their definitions."""
    found = {}
    for fk in keys:
        not_null = sql.SQL(" and ").join(
            sql.SQL("c.{} is not null").format(sql.Identifier(k)) for k in fk.keys
        )
        match = sql.SQL(" and ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(k))
            for k, r in zip(fk.keys, fk.refs, strict=True)
        )
        query = sql.SQL(
            "select count(*) from {child} c where {nn} and not exists "
            "(select 1 from {parent} p where {match})"
        ).format(child=sql.SQL(fk.child), parent=sql.SQL(fk.parent), nn=not_null, match=match)
        try:
            row = conn.execute(query).fetchone()
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
            continue  # defined in the live database, not (yet) in the backup being copied
        found[fk.name] = int(row[0]) if row else 0
    return found
