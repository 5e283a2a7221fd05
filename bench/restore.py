"""Benchmark: Seed's restore vs a raw `pg_restore -j N` + ANALYZE with Seed's job count.

Run as `.venv/bin/python bench/restore.py [--scale 0.1] [--reps 3]` (never part of
`make test`). It starts a private sandbox, builds the `shop` database of
bench/backup.py (3M customers + 4M orders, >= 1 GB at scale 1), takes one backup with
`seed.backup.dump.take_backup` (not timed: the file both sides restore) and times, in the
same run, interleaved, median of `--reps`:

- ours: `seed.backup.restore.restore_as_live` (sha256 re-check, a new database created like
  the original, remote job `pg_restore -e -j N` + `vacuumdb --analyze-only -j N`,
  sequences, database properties, rename swap in as `shop`);
- the baseline: a local `createdb` + `pg_restore -j N` + `vacuumdb --analyze-only -j N`
  of the same file, N being the job count Seed's restore uses (run_pg_restore: the
  state host's `nproc`, at least `backup.jobs`). The ANALYZE belongs to the fair
  equivalent: pg_restore's own documentation says to run it after a restore, and a
  database without statistics is not ready for production queries;
- printed above, not judged: the baseline without the ANALYZE (the stricter one), a
  serial `pg_restore -d` (the softer one), and Seed's restore split into phases.

The last line is `restore: ratio <ours/baseline> (target <= 1.10)`; exit status 1 on
a miss.
"""

from __future__ import annotations

import argparse
import functools
import os
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

import seed.backup.restore as seed_restore  # noqa: E402
from bench.common import (  # noqa: E402
    Raw,
    Timings,
    bench_spec,
    build_data,
    db_size,
    gb,
    headline,
    interleaved,
    say,
    stopwatch,
)
from sandbox.servers import (  # noqa: E402
    SandboxInfo,
    environment_text,
    sandbox_down,
    sandbox_up,
)
from seed.backup.dump import take_backup  # noqa: E402
from seed.backup.restore import database_properties, drop_if_exists  # noqa: E402
from seed.config.environment import Environment, load_environment  # noqa: E402
from seed.remote.session import Session  # noqa: E402

APP_NAME = "seed-bench-restore"
TARGET = 1.10
R_OURS = "restore seed restore_as_live (total)"
R_BASE = "restore raw createdb + pg_restore -jN + vacuumdb -Z -jN (baseline)"
R_LOAD = "  part  of the baseline: createdb + pg_restore -jN"
R_ANALYZE = "  part  of the baseline: vacuumdb --analyze-only -jN"
R_SERIAL = "  soft  raw createdb + pg_restore -d (one job, no ANALYZE)"


def env_text(info: SandboxInfo, server: Path) -> str:
    return environment_text(info, server, "bench/restore.py against its private sandbox")


def restore_jobs(env: Environment, session: Session) -> int:
    """The job count seed.backup.restore.run_pg_restore uses: nproc on the state host, at least
    backup.jobs."""
    res = session.state.check("nproc", "counting the state host's cores")
    return max(int(res.stdout.strip() or 1), env.backup.jobs)


def timed_phase(timings: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a seed.backup.restore function to time each call (no behaviour change)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def bench_restore(
    info: SandboxInfo,
    env: Environment,
    session: Session,
    raw: Raw,
    backup: tuple[str, str],
    jobs: int,
    reps: int,
    t: Timings,
) -> None:
    """Interleaved: Seed's restore_as_live (swapped in as `shop`), then the raw restore."""
    path, sha = backup
    server = info.server_root
    with psycopg.connect(info.admin_conninfo(), autocommit=True) as pg:
        props = database_properties(pg, env.db.name)
    originals = {
        name: getattr(seed_restore, name) for name in ("verify_backup", "run_pg_restore", "swap")
    }

    def drop(name: str) -> None:
        with psycopg.connect(info.admin_conninfo(), autocommit=True) as pg:
            drop_if_exists(pg, name)

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
            t.add("  phase seed verify_backup (ssh: sha256)", phases["verify_backup"])
            t.add(
                "  phase seed run_pg_restore (ssh job: pg_restore -jN, vacuumdb -Z -jN)",
                phases["run_pg_restore"],
            )
            t.add("  phase seed swap", phases["swap"])
            rest = w[0] - sum(phases.values())
            t.add("  phase seed rest (connect, create, sequences, properties)", rest)
            drop(restored.plan.replaced)

        def baseline(i: int = i) -> None:
            name = f"bench_raw_{i}"
            with stopwatch() as total:
                with stopwatch() as w:
                    raw.createdb(name, env.db.user)
                    raw.restore(name, Path(path), jobs=jobs)
                t.add(R_LOAD, w[0])
                with stopwatch() as w:
                    raw.analyze(name, jobs)
                t.add(R_ANALYZE, w[0])
            t.add(R_BASE, total[0])
            drop(name)

        interleaved(i, ours, baseline)
        name = f"bench_serial_{i}"
        with stopwatch() as w:
            raw.createdb(name, env.db.user)
            raw.restore(name, Path(path))
        t.add(R_SERIAL, w[0])
        drop(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 3M + 4M rows (>= 1 GB)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    args = parser.parse_args()
    if args.scale <= 0 or args.reps < 1:
        parser.error("--scale must be > 0 and --reps >= 1")

    spec = bench_spec()
    t = Timings()
    started = time.perf_counter()
    try:
        info = sandbox_up(spec)
        say(f"sandbox: {spec.root} (pg {spec.pg_port}, ssh {spec.ssh_port})")
        with tempfile.TemporaryDirectory(prefix="seed-bench-env-") as envdir:
            (Path(envdir) / "bench.yml").write_text(env_text(info, info.server_root))
            env = load_environment("bench", Path(envdir))
        raw = Raw(info, env)

        with stopwatch() as w:
            build_data(info, args.scale)
        size = db_size(info, env.db.name)
        say(f"database {env.db.name}: {gb(size)} (pg_database_size), built in {w[0]:.0f} s")

        session = Session(env)
        session.open()
        try:
            jobs = restore_jobs(env, session)
            bid = f"bench-{os.getpid()}"
            with stopwatch() as w:
                path, sha, dump_size = take_backup(
                    env, session.state, bid, f"{info.server_root}/state/jobs/{bid}", APP_NAME
                )
            say(
                f"seed backup (not timed here): {path}, {dump_size / 1e6:.0f} MB at "
                f"-Z{env.backup.compression}, {w[0]:.1f} s"
            )
            say(f"measuring restore with {jobs} jobs (Seed's count), reps {args.reps} ...")
            bench_restore(info, env, session, raw, (path, sha), jobs, args.reps, t)
        finally:
            session.close()
    finally:
        sandbox_down(spec, purge=True)

    say("")
    say(f"timings in seconds (scale {args.scale}, {gb(size)}, {os.cpu_count()} cores):")
    say(t.table())
    say("")
    ours = t.median(R_OURS)
    total = time.perf_counter() - started
    say(f"database {gb(size)}, dump {dump_size / 1e6:.0f} MB; total bench time {total:.0f} s")
    say(f"softer: vs a serial pg_restore -d: ratio {ours / t.median(R_SERIAL):.2f}")
    say(
        f"stricter: vs pg_restore -j{jobs} without the ANALYZE: ratio {ours / t.median(R_LOAD):.2f}"
    )
    return headline("restore", ours / t.median(R_BASE), TARGET)


if __name__ == "__main__":
    sys.exit(main())
