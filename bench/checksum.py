"""Benchmark: Seed's table checksum vs the naive md5(string_agg), and a whole-database fingerprint.

Run as `.venv/bin/python bench/checksum.py [--scale 0.1] [--reps 3]` (never part of
`make test`). It starts a private sandbox, builds the same `shop` data as
bench/backup.py (3M customers + 4M orders, ~1.07 GB at scale 1) and times, in the
same run, interleaved, median of `--reps`:

1. one table (customers, 3M rows): `seed.db.postgres.table_figures` — count(*) and the exact
   numeric sum of each row's hash (`row-hash`: hashint8extended(hash_record_extended(
   ROW(pk, cols), 0), 0); `row-text`, DESIGN's first definition, printed alongside:
   hashtextextended(ROW(pk, cols)::text, 0)) — vs `md5(string_agg(t::text, '' ORDER
   BY id))`, the usual hand-written fingerprint;
2. the whole database: `seed.db.postgres.snapshot_figures` (one session) and
   `seed.db.postgres.parallel_figures` over 2 and `os.cpu_count()` sessions in one exported
   snapshot, as rows/s and rows/s per session.

The last line is `checksum: <speed-up> times faster than md5(string_agg) (target >= 5)`;
exit status 1 on a miss.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
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
from sandbox.servers import sandbox_down, sandbox_up  # noqa: E402
from seed.db.postgres import (  # noqa: E402
    ROW_HASH,
    ROW_TEXT,
    list_tables,
    parallel_figures,
    set_checksum_settings,
    snapshot_figures,
    table_figures,
)

TARGET = 5.0
OURS = "table  seed table_figures, row-hash (count + sum(mixed hash_record_extended))"
TEXT = "  alt  seed table_figures, row-text (count + sum(hashtextextended(ROW::text)))"
NAIVE = "table  md5(string_agg(t::text, '' order by id)) (baseline)"


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
    cores = os.cpu_count() or 1
    try:
        info = sandbox_up(spec)
        say(f"sandbox: {root} (pg {spec.pg_port})")
        with stopwatch() as w:
            build_data(info, args.scale)
        size = db_size(info, spec.db_name)
        say(f"database {spec.db_name}: {gb(size)}, built in {w[0]:.0f} s")
        dsn = info.admin_conninfo(spec.db_name)

        def open_conn() -> psycopg.Connection[Any]:
            return psycopg.connect(dsn, autocommit=True)

        with open_conn() as conn:
            set_checksum_settings(conn)
            tables = {tb.name: tb for tb in list_tables(conn)}
            customers = tables["customers"]
            row = conn.execute("select count(*) from customers").fetchone()
            n_customers = int(row[0]) if row else 0
            total_rows = sum(f.rows for f in snapshot_figures(conn).values())  # also warms
            conn.execute("select md5(string_agg(t::text, '' order by id)) from customers t")
            say(f"customers: {n_customers:,} rows; all tables: {total_rows:,} rows")

            for i in range(args.reps):

                def ours() -> None:
                    with stopwatch() as w:
                        table_figures(conn, customers, ROW_HASH)
                    t.add(OURS, w[0])
                    with stopwatch() as w:
                        table_figures(conn, customers, ROW_TEXT)
                    t.add(TEXT, w[0])

                def naive() -> None:
                    with stopwatch() as w:
                        conn.execute(
                            "select md5(string_agg(t::text, '' order by id)) from customers t"
                        ).fetchone()
                    t.add(NAIVE, w[0])

                interleaved(i, ours, naive)

            for _ in range(args.reps):
                with stopwatch() as w:
                    snapshot_figures(conn)
                t.add("db     seed snapshot_figures (1 session)", w[0])
                for n in sorted({2, cores}):
                    with stopwatch() as w:
                        parallel_figures(conn, open_conn, n)
                    t.add(f"db     seed parallel_figures ({n} sessions)", w[0])
    finally:
        sandbox_down(spec, purge=True)

    say("")
    say(f"timings in seconds (scale {args.scale}, {gb(size)}, {cores} cores):")
    say(t.table())
    say("")
    ours_s, naive_s = t.median(OURS), t.median(NAIVE)
    text_s = t.median(TEXT)
    say(
        f"one table: {n_customers / ours_s:,.0f} rows/s (seed row-hash), "
        f"{n_customers / text_s:,.0f} (row-text, {naive_s / text_s:.1f}x md5), "
        f"{n_customers / naive_s:,.0f} (md5 string_agg)"
    )
    serial = t.median("db     seed snapshot_figures (1 session)")
    # one session already runs PostgreSQL's parallel workers on every core (parallel seq
    # scan + partial aggregates), so per core means per core of the machine
    say(
        f"whole database ({gb(size)}, {total_rows:,} rows), 1 session: "
        f"{total_rows / serial:,.0f} rows/s = {total_rows / serial / cores:,.0f} rows/s "
        f"per core ({cores} cores, with PostgreSQL's parallel workers)"
    )
    for n in sorted({2, cores}):
        par = t.median(f"db     seed parallel_figures ({n} sessions)")
        say(
            f"whole database, {n} sessions: {total_rows / par:,.0f} rows/s, "
            f"{serial / par:.2f}x one session"
        )
    return headline(
        "checksum",
        naive_s / ours_s,
        TARGET,
        "times faster than md5(string_agg)",
        more_is_better=True,
    )


if __name__ == "__main__":
    sys.exit(main())
