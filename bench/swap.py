"""Benchmark: the snapshot rollback's swap, at 1x and 2x the database size.

Run as `.venv/bin/python bench/swap.py [--scale 0.1] [--reps 3]` (never part of
`make test`). It starts a private sandbox, builds the `shop` database of
bench/backup.py (3M customers + 4M orders, >= 1 GB at scale 1) and times, median of
`--reps`, at that size and after doubling it:

- `seed.backup.restore.swap` of `shop` with a `CREATE DATABASE ... TEMPLATE shop STRATEGY
  FILE_COPY` copy (and back): two renames in one transaction, which must not grow
  with the size;
- printed above, not judged: the copy itself, what a snapshot rollback costs while
  writes are stopped (it grows with the size).

The last line is `swap: <slowest median of 1x and 2x> s (target <= 0.1)`; exit status 1
on a miss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.common import (  # noqa: E402
    Timings,
    bench_spec,
    build_data,
    db_size,
    gb,
    grow_data,
    headline,
    say,
    stopwatch,
)
from sandbox.servers import SandboxInfo, sandbox_down, sandbox_up  # noqa: E402
from seed.backup.restore import RestorePlan, drop_if_exists, swap  # noqa: E402

TARGET = 0.1


def copy_row(label: str) -> str:
    return f"  alt   CREATE DATABASE TEMPLATE FILE_COPY ({label})"


def swap_row(label: str) -> str:
    return f"swap    seed swap ({label})"


def bench_swap(info: SandboxInfo, live: str, label: str, reps: int, t: Timings) -> None:
    """CREATE DATABASE ... TEMPLATE live STRATEGY FILE_COPY, then seed's swap; swap back."""
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
            t.add(copy_row(label), w[0])
            with stopwatch() as w:
                swap(pg, RestorePlan(live, copy, prev, "", ""))
            t.add(swap_row(label), w[0])
            # back: the original is `live` again, the copy goes away
            with stopwatch() as w:
                swap(pg, RestorePlan(live, prev, copy, "", ""))
            t.add(f"  part  seed swap back ({label})", w[0])
            pg.execute(
                sql.SQL("alter database {} allow_connections true").format(sql.Identifier(live))
            )
            drop_if_exists(pg, copy)
    with psycopg.connect(info.admin_conninfo(live)) as conn:
        row = conn.execute("select count(*) from customers").fetchone()
        assert row is not None and row[0] > 0, "the live database must stay usable"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 3M + 4M rows (>= 1 GB)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    args = parser.parse_args()
    if args.scale <= 0 or args.reps < 1:
        parser.error("--scale must be > 0 and --reps >= 1")

    spec = bench_spec()
    t = Timings()
    try:
        info = sandbox_up(spec)
        say(f"sandbox: {spec.root} (pg {spec.pg_port})")
        live = spec.db_name
        with stopwatch() as w:
            build_data(info, args.scale)
        size1 = db_size(info, live)
        say(f"database {live}: {gb(size1)} (pg_database_size), built in {w[0]:.0f} s")
        say("measuring the swap at 1x ...")
        bench_swap(info, live, "1x", args.reps, t)
        say("growing the database to 2x ...")
        grow_data(info)
        size2 = db_size(info, live)
        say(f"database {live}: {gb(size2)}; measuring the swap at 2x ...")
        bench_swap(info, live, "2x", args.reps, t)
    finally:
        sandbox_down(spec, purge=True)

    say("")
    say(f"timings in seconds (scale {args.scale}, 1x {gb(size1)}, 2x {gb(size2)}):")
    say(t.table())
    say("")
    swap1, swap2 = t.median(swap_row("1x")), t.median(swap_row("2x"))
    say(
        f"snapshot copy (downtime of a snapshot rollback): {t.median(copy_row('1x')):.2f} s at "
        f"{gb(size1)}, {t.median(copy_row('2x')):.2f} s at {gb(size2)}"
    )
    say(f"seed swap: {swap1:.3f} s at {gb(size1)}, {swap2:.3f} s at {gb(size2)} (flat?)")
    return headline("swap", max(swap1, swap2), TARGET, "s")


if __name__ == "__main__":
    sys.exit(main())
