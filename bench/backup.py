"""Benchmark: Seed's verified backup, its restore and the snapshot swap vs raw PostgreSQL tools.

Run as `.venv/bin/python bench/backup.py [--scale 0.1] [--reps 3]` (never part of
`make test`). It starts a private sandbox (PostgreSQL + sshd on free ports under
/var/tmp), builds a >= 1 GB `shop` database (3M customers + 4M orders at scale 1),
and times, in the same run, interleaved, median of `--reps`:

1. backup:  `seed.backup.take_backup` (remote job over SSH: pg_dump -Fc at Seed's
   configured level, fsync, full read, sha256, rename) vs a local `pg_dump -Fc -f FILE`
   (pg_dump's default compression: the command a user would otherwise run, and the
   issue's baseline); the ratio against `pg_dump -Fc -Z<same level>` is printed too;
2. restore: `seed.restore.restore_as_live` (re-verify, create like the original,
   pg_restore -e -j, ANALYZE, sequences, properties, rename swap) vs a local
   `createdb` + `pg_restore -d` (serial, the issue's baseline); the ratio against
   `pg_restore -j<cores>` is printed too;
3. snapshot swap: `seed.restore.swap` against a `CREATE DATABASE ... TEMPLATE shop
   STRATEGY FILE_COPY` copy, at 1x and 2x the database size.

The last line is `backup: ratio <ours/baseline> (target <= 1.05)` (DESIGN: Benchmarks).
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

import seed.restore as seed_restore  # noqa: E402
from bench.common import (  # noqa: E402
    Timings,
    bench_spec,
    build_data,
    db_size,
    gb,
    grow_data,
    interleaved,
    say,
    stopwatch,
)
from seed.backup import take_backup, verify_file  # noqa: E402
from seed.config import Environment, load_environment  # noqa: E402
from seed.remote import RemoteJob  # noqa: E402
from seed.restore import RestorePlan, database_properties, drop_if_exists, swap  # noqa: E402
from seed.sandbox import (  # noqa: E402
    SandboxInfo,
    environment_text,
    sandbox_down,
    sandbox_up,
)
from seed.session import Session  # noqa: E402

APP_NAME = "seed-bench-backup"
BACKUP_TARGET = 1.05
RESTORE_TARGET = 1.05
SWAP_TARGET = 0.1
B_OURS = "backup  seed take_backup (ssh job: dump+sync+read+sha256)"
B_RAW = "backup  raw pg_dump -Fc, default level (baseline)"
B_SAME = "backup  raw pg_dump -Fc -Z<same level as seed>"
B_ALT = "  alt   raw one pass: dump | tee FILE fifo>sha256 | pg_restore -f /dev/null"
R_OURS = "restore seed restore_as_live (total)"
R_RAW = "restore raw createdb + pg_restore (baseline)"
R_PAR = "restore raw createdb + pg_restore -j<cores>"
R_ANALYZE = "  part  ANALYZE on the restored db"


# --------------------------------------------------------------------------- helpers


def env_text(info: SandboxInfo, server: Path) -> str:
    return environment_text(info, server, "bench/backup.py against its private sandbox")


class Raw:
    """The raw PostgreSQL client programs, run locally with PGPASSFILE (the baseline)."""

    def __init__(self, info: SandboxInfo, env: Environment) -> None:
        self.env = env
        self.conn_args = [
            f"--host={env.db.host}",
            f"--port={env.db.port}",
            f"--username={env.db.admin_user}",
            "--no-password",
        ]
        self.proc_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.proc_env["PGPASSFILE"] = str(info.pgpass)
        # the same programs the state host runs (it is this machine, same PATH)
        self.pg_dump = shutil.which(env.backup.tool("pg_dump")) or "pg_dump"
        self.pg_restore = shutil.which(env.backup.tool("pg_restore")) or "pg_restore"
        self.createdb_bin = shutil.which("createdb") or "createdb"
        openssl = shutil.which("openssl")
        # OpenSSL uses the CPU's SHA extensions; coreutils' sha256sum (Debian 12) does not
        self.fast_sha = [openssl, "dgst", "-sha256", "-r"] if openssl else ["sha256sum"]
        self.fast_sha_name = "openssl dgst -sha256" if openssl else "sha256sum"

    def run(self, args: list[str]) -> None:
        res = subprocess.run(args, env=self.proc_env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(f"{args[0]} failed (exit {res.returncode}): {res.stderr.strip()}")

    def dump(self, path: Path, same_level: bool = True) -> None:
        level = [f"--compress={self.env.backup.compression}"] if same_level else []
        self.run(
            [
                self.pg_dump,
                "--format=custom",
                *level,
                *self.conn_args,
                f"--file={path}",
                self.env.db.name,
            ]
        )

    def dump_streamed(self, path: Path) -> None:
        """The one-pass alternative: dump | tee FILE FIFO(sha256sum) | pg_restore -f /dev/null."""
        dump = shlex.join(
            [
                self.pg_dump,
                "--format=custom",
                f"--compress={self.env.backup.compression}",
                *self.conn_args,
                self.env.db.name,
            ]
        )
        file, fifo = shlex.quote(str(path)), shlex.quote(f"{path}.fifo")
        script = (
            "set -euo pipefail\n"
            f"mkfifo {fifo}\n"
            f"{shlex.join(self.fast_sha)} < {fifo} > {shlex.quote(f'{path}.sha')} & sha=$!\n"
            f"{dump} | tee {fifo} {file} | {shlex.quote(self.pg_restore)} --file=/dev/null\n"
            'wait "$sha"\n'
            f"rm -f {fifo}\n"
            f"sync {file}\n"
        )
        self.run(["bash", "-c", script])

    def createdb(self, name: str, owner: str) -> None:
        self.run(
            [self.createdb_bin, *self.conn_args, f"--owner={owner}", "--template=template0", name]
        )

    def restore(self, name: str, path: Path, jobs: int = 1) -> None:
        self.run(
            [self.pg_restore, *self.conn_args, f"--jobs={jobs}", f"--dbname={name}", str(path)]
        )


def timed_phase(timings: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a seed.restore function to record how long each call took (no behaviour change)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    return wrapper


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- measurements


def bench_backup(
    info: SandboxInfo, env: Environment, session: Session, raw: Raw, reps: int, t: Timings
) -> tuple[str, str]:
    """Seed's take_backup vs the raw pg_dump (+ the raw cost of each extra step)."""
    server = info.server_root
    scratch = server / "bench-raw"
    scratch.mkdir(mode=0o700, exist_ok=True)
    raw.dump(scratch / "warmup.dump")  # warm the page cache the same way for both
    (scratch / "warmup.dump").unlink()
    kept: list[tuple[str, str]] = []

    for i in range(reps):

        def ours(i: int = i) -> None:
            bid = f"bench-{os.getpid()}-{i}"
            with stopwatch() as w:
                path, sha, size = take_backup(
                    env, session.state, bid, f"{server}/state/jobs/{bid}", APP_NAME
                )
            t.add(B_OURS, w[0])
            if not kept:
                kept.append((path, sha))
                say(f"seed backup: {path} {size / 1e6:.0f} MB sha256 {sha[:12]}…")
            else:
                Path(path).unlink()

        def baseline(i: int = i) -> None:
            raw_file = scratch / f"raw-{i}.dump"
            with stopwatch() as w:
                raw.dump(raw_file, same_level=False)
            t.add(B_RAW, w[0])
            raw_file.unlink()
            with stopwatch() as w:
                raw.dump(raw_file)
            t.add(B_SAME, w[0])
            with stopwatch() as w:
                raw.run(["sync", str(raw_file)])
            t.add("  part  sync FILE", w[0])
            with stopwatch() as w:
                raw.run([raw.pg_restore, "--file=/dev/null", str(raw_file)])
            t.add("  part  pg_restore -f /dev/null FILE (full read)", w[0])
            with stopwatch() as w:
                raw.run(["sha256sum", str(raw_file)])
            t.add("  part  sha256sum FILE", w[0])
            with stopwatch() as w:
                raw.run([*raw.fast_sha, str(raw_file)])
            t.add(f"  alt   {raw.fast_sha_name} FILE", w[0])
            raw_file.unlink()

        interleaved(i, ours, baseline)
        streamed = scratch / f"streamed-{i}.dump"
        with stopwatch() as w:
            raw.dump_streamed(streamed)
        t.add(B_ALT, w[0])
        streamed.unlink()
        Path(f"{streamed}.sha").unlink()
    return kept[0]


def bench_ssh(info: SandboxInfo, session: Session, reps: int, t: Timings) -> None:
    """Seed's fixed per-step cost: one remote command, and a remote job that does nothing."""
    for i in range(reps):
        with stopwatch() as w:
            session.state.check("true", "noop")
        t.add("  part  ssh: one remote command (`true`)", w[0])
        with stopwatch() as w:
            job = RemoteJob.start(
                session.state, f"{info.server_root}/state/jobs/noop-{i}", "true\n"
            )
            code, _ = job.wait()
        assert code == 0
        t.add("  part  ssh: RemoteJob start + wait of `true`", w[0])
        with stopwatch() as w:
            session.state.sftp.stat(f"{info.server_root}/state/jobs/noop-{i}/status")
        t.add("  alt   ssh: one SFTP stat (a poll without a shell)", w[0])


def bench_restore(
    info: SandboxInfo,
    env: Environment,
    session: Session,
    raw: Raw,
    backup: tuple[str, str],
    reps: int,
    t: Timings,
) -> None:
    """Interleaved: Seed's restore_as_live (swapped in as `shop`), then createdb + pg_restore."""
    path, sha = backup
    server = info.server_root
    with psycopg.connect(info.admin_conninfo(), autocommit=True) as pg:
        props = database_properties(pg, env.db.name)
    originals = {
        name: getattr(seed_restore, name) for name in ("verify_backup", "run_pg_restore", "swap")
    }
    for i in range(reps):

        def ours(i: int = i) -> None:
            tag = f"b{os.getpid()}x{i}"
            phases: dict[str, float] = {}
            for name, fn in originals.items():
                setattr(seed_restore, name, timed_phase(phases, name, fn))
            try:
                with stopwatch() as w:
                    restored = seed_restore.restore_as_live(
                        env,
                        session,
                        path,
                        sha,
                        props,
                        tag,
                        f"{server}/state/jobs/r-{tag}",
                        APP_NAME,
                    )
            finally:
                for name, fn in originals.items():
                    setattr(seed_restore, name, fn)
            t.add(R_OURS, w[0])
            t.add("  phase seed verify_backup (ssh: sha256 + full read)", phases["verify_backup"])
            t.add("  phase seed run_pg_restore (ssh job, -j + ANALYZE)", phases["run_pg_restore"])
            t.add("  phase seed swap", phases["swap"])
            rest = w[0] - sum(phases.values())
            t.add("  phase seed rest (create, seqs, props, conns)", rest)
            with psycopg.connect(info.admin_conninfo(), autocommit=True) as pg:
                drop_if_exists(pg, restored.plan.replaced)

        def baseline(i: int = i) -> None:
            name = f"bench_raw_{i}"
            with stopwatch() as w:
                raw.createdb(name, env.db.user)
                raw.restore(name, Path(path))
            t.add(R_RAW, w[0])
            dsn = info.admin_conninfo(name)
            with psycopg.connect(dsn, autocommit=True) as conn, stopwatch() as w:
                conn.execute("analyze")
            t.add(R_ANALYZE, w[0])
            with psycopg.connect(info.admin_conninfo(), autocommit=True) as pg:
                drop_if_exists(pg, name)
            with stopwatch() as w:
                raw.createdb(name, env.db.user)
                raw.restore(name, Path(path), jobs=os.cpu_count() or 1)
            t.add(R_PAR, w[0])
            with psycopg.connect(info.admin_conninfo(), autocommit=True) as pg:
                drop_if_exists(pg, name)

        interleaved(i, ours, baseline)

    with stopwatch() as w:
        verify_file(env, session.state, path, sha)
    t.add("  part  seed verify_file alone (ssh: sha256 + full read)", w[0])


def bench_swap(info: SandboxInfo, env: Environment, label: str, reps: int, t: Timings) -> None:
    """CREATE DATABASE ... TEMPLATE live STRATEGY FILE_COPY, then seed's swap; swap back."""
    live = env.db.name
    copy, prev = f"{live}_bench_snap", f"{live}_bench_prev"
    with psycopg.connect(info.admin_conninfo(), autocommit=True) as pg:
        for _ in range(reps):
            drop_if_exists(pg, copy)
            pg.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = %s and pid <> pg_backend_pid()",
                (live,),
            )
            with stopwatch() as w:
                pg.execute(
                    sql.SQL("create database {} template {} strategy file_copy").format(
                        sql.Identifier(copy), sql.Identifier(live)
                    )
                )
            t.add(f"snap    CREATE DATABASE TEMPLATE FILE_COPY ({label})", w[0])
            with stopwatch() as w:
                swap(pg, RestorePlan(live, copy, prev, "", ""))
            t.add(f"snap    seed swap ({label})", w[0])
            # back: the original is `live` again, the copy goes away
            with stopwatch() as w:
                swap(pg, RestorePlan(live, prev, copy, "", ""))
            t.add(f"snap    seed swap back ({label})", w[0])
            pg.execute(
                sql.SQL("alter database {} allow_connections true").format(sql.Identifier(live))
            )
            drop_if_exists(pg, copy)
    with psycopg.connect(info.admin_conninfo(live)) as conn:
        row = conn.execute("select count(*) from customers").fetchone()
        assert row is not None and row[0] > 0, "the live database must stay usable"


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 3M + 4M rows (>= 1 GB)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    args = parser.parse_args()
    if args.scale <= 0 or args.reps < 1:
        parser.error("--scale must be > 0 and --reps >= 1")

    spec = bench_spec()
    root = spec.root
    t = Timings()
    started = time.perf_counter()
    try:
        info = sandbox_up(spec)
        say(f"sandbox: {root} (pg {spec.pg_port}, ssh {spec.ssh_port})")
        with tempfile.TemporaryDirectory(prefix="seed-bench-env-") as envdir:
            (Path(envdir) / "bench.yml").write_text(env_text(info, info.server_root))
            env = load_environment("bench", Path(envdir))
        raw = Raw(info, env)

        with stopwatch() as w:
            build_data(info, args.scale)
        size1 = db_size(info, env.db.name)
        say(f"database {env.db.name}: {gb(size1)} (pg_database_size), built in {w[0]:.0f} s")
        say(f"compression: -Z{env.backup.compression} (env.backup.compression), reps {args.reps}")

        session = Session(env)
        session.open()
        try:
            say("measuring backup ...")
            backup = bench_backup(info, env, session, raw, args.reps, t)
            bench_ssh(info, session, args.reps, t)
            say("measuring restore ...")
            bench_restore(info, env, session, raw, backup, args.reps, t)
        finally:
            session.close()

        say("measuring snapshot swap at 1x ...")
        bench_swap(info, env, "1x", args.reps, t)
        say("growing the database to 2x ...")
        grow_data(info)
        size2 = db_size(info, env.db.name)
        say(f"database {env.db.name}: {gb(size2)}")
        say("measuring snapshot swap at 2x ...")
        bench_swap(info, env, "2x", args.reps, t)
    finally:
        sandbox_down(spec, purge=True)

    say("")
    say(f"timings in seconds (scale {args.scale}, {gb(size1)} / 2x {gb(size2)}):")
    say(t.table())
    say("")
    backup_ours = t.median(B_OURS)
    backup_raw = t.median(B_RAW)
    restore_ours = t.median(R_OURS)
    restore_raw = t.median(R_RAW)
    analyze = t.median(R_ANALYZE)
    streamed = t.median(B_ALT)
    copy1 = t.median("snap    CREATE DATABASE TEMPLATE FILE_COPY (1x)")
    copy2 = t.median("snap    CREATE DATABASE TEMPLATE FILE_COPY (2x)")
    swap1 = t.median("snap    seed swap (1x)")
    swap2 = t.median("snap    seed swap (2x)")
    total = time.perf_counter() - started
    say(f"database size: {gb(size1)} (2x: {gb(size2)}); total bench time {total:.0f} s")
    say(
        f"snapshot copy (maintenance-window downtime): {copy1:.2f} s at {gb(size1)}, "
        f"{copy2:.2f} s at {gb(size2)}"
    )
    same = t.median(B_SAME)
    parallel = t.median(R_PAR)
    say(f"one-pass alternative (raw, not Seed): ratio {streamed / same:.2f} vs pg_dump -Z<same>")
    say(
        f"backup vs raw pg_dump -Fc at Seed's level (-Z{env.backup.compression}): "
        f"ratio {backup_ours / same:.2f}"
    )
    say(
        f"restore vs raw pg_restore -j{os.cpu_count()}: ratio {restore_ours / parallel:.2f}; "
        f"vs serial pg_restore + ANALYZE: ratio {restore_ours / (restore_raw + analyze):.2f}"
    )
    say(f"snapshot-swap: {swap1:.3f} s at 1x, {swap2:.3f} s at 2x (target <= {SWAP_TARGET} s)")
    say(f"restore: ratio {restore_ours / restore_raw:.2f} (target <= {RESTORE_TARGET})")
    say(f"backup: ratio {backup_ours / backup_raw:.2f} (target <= {BACKUP_TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
