"""Benchmark: the maintenance window of a deploy as the database grows, `dump` against `pitr`.

Run as `.venv/bin/python bench/window.py [--sizes 1,4] [--reps 3]` (never part of `make
test`). It
starts a private sandbox with `fab sandbox.up --pitr` (the cluster archives its WAL over
TLS into an encrypted pgBackRest repository on its own host, 127.0.0.3), deploys v1, v2
and expand, then for each size grows the database to about that many GB (a table of
incompressible rows beside the shop's) and deploys `contract` (a RemoveField on the
small customer table: maintenance mode, undone by a restore) `--reps` times with each
strategy, driving `fab` as a user does:

- `dump`: backup.strategy dump. The window holds the before-state (every table's
  count and checksum) and the verified dump.
- `pitr`: backup.strategy pitr. Before the window, while serving: a backup (max_age is
  set to a few seconds here, so every deploy takes one: the first full, then
  differential, as with frequent scheduled backups), `pgbackrest check`, and the whole
  before-state from an exported snapshot. The window holds the tables written
  since (none here: no writer), the migration set, and a restore point whose WAL
  segment is archived.

Each deploy is then rolled back (`fab local rollback`: a restore, verified table by table
against the before-state) so the next starts from expand again; the rollback's time is
printed with its parts (pitr: stop, restore --delta, start, WAL replay; then verify).

The window is the report's `downtime_seconds` (maintenance on to off: what users see).
Verification is not weakened: the same before-state and the same full verification
after the rollback in both strategies.

Windows are medians over the repetitions. Targets: pitr window at the largest size / at
the smallest <= 1.2 (flat); pitr window at the largest size <= 0.25 x the dump window
there. Last line `window: ratio R (target <=
1.2)`; exit 1 on either miss.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import FabSandbox, gb, headline, say  # noqa: E402

FLAT_TARGET = 1.2
VERSUS_DUMP_TARGET = 0.25
ROW_BYTES = 360  # on disk per filler row (260 bytes of payload, headers, index)


def grow(box: FabSandbox, target_gb: float) -> int:
    """The shop database grown to about `target_gb` by a filler table of rows that do not
    compress (md5 text), then checkpointed and its WAL archived; returns its size."""
    with box.admin("shop") as conn:
        conn.execute(
            "create table if not exists bench_filler (id bigint primary key, payload text)"
        )
        size = int(conn.execute("select pg_database_size('shop')").fetchone()[0])  # type: ignore[index]
        start = int(conn.execute("select coalesce(max(id), 0) from bench_filler").fetchone()[0])  # type: ignore[index]
        rows = max(0, int((target_gb * 1e9 - size) / ROW_BYTES))
        batch = 1_000_000
        for first in range(start + 1, start + rows + 1, batch):
            last = min(first + batch - 1, start + rows)
            conn.execute(
                "insert into bench_filler select g, md5(g::text) || md5((g + 1)::text) || "
                "md5((g + 2)::text) || md5((g + 3)::text) || md5((g + 4)::text) || "
                "md5((g + 5)::text) || md5((g + 6)::text) || md5((g + 7)::text) "
                "from generate_series(%s::bigint, %s::bigint) g",
                (first, last),
            )
        # frozen now: autovacuum would otherwise write WAL for it during the timed deploys
        conn.execute("vacuum (freeze, analyze) bench_filler")
        conn.execute("checkpoint")
        switched = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()
        wal = str(switched[0]) if switched else ""
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:  # the WAL of the load archived before any timing
            last_row = conn.execute("select last_archived_wal from pg_stat_archiver").fetchone()
            if last_row and last_row[0] and str(last_row[0]) >= wal:
                break
            time.sleep(0.5)
        return int(conn.execute("select pg_database_size('shop')").fetchone()[0])  # type: ignore[index]


def seconds(report: dict[str, Any], *names: str) -> float:
    return sum(float(s["seconds"]) for s in report.get("steps", []) if s["name"] in names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1,4", help="database sizes in GB, comma-separated")
    parser.add_argument("--reps", type=int, default=3, help="deploys per size and strategy")
    args = parser.parse_args()
    sizes = [float(x) for x in args.sizes.split(",")]
    box = FabSandbox("seed-bench-window-", pitr=True)
    rows: list[dict[str, Any]] = []
    misses: list[str] = []
    try:
        if not box.up("v1", "v2", "expand"):
            return 1
        envs = {
            "dump": box.variant("dump", {"deploy.mode": "maintenance"}),
            "pitr": box.variant("pitr", {"deploy.mode": "maintenance", "backup.strategy": "pitr"}),
        }
        for size in sizes:
            actual = grow(box, size)
            say(f"database at {gb(actual)}")
            for rep, strategy in [(r, k) for r in range(args.reps) for k in ("dump", "pitr")]:
                started = time.monotonic()
                code, report = box.fab(
                    "local", "upgradedb", "--ref", "contract", envdir=envs[strategy]
                )
                total = time.monotonic() - started
                if code != 0:
                    misses.append(f"{strategy} at {size:g} GB: upgradedb exited {code}")
                    continue
                started = time.monotonic()
                rcode, back = box.fab("local", "rollback", envdir=envs[strategy])
                back_total = time.monotonic() - started
                if rcode != 0:
                    misses.append(f"{strategy} at {size:g} GB: rollback exited {rcode}")
                parts = back.get("point_in_time") or {}
                rows.append(
                    {
                        "size_gb": size,
                        "rep": rep + 1,
                        "db_bytes": actual,
                        "strategy": strategy,
                        "window": float(report.get("downtime_seconds") or 0.0),
                        "deploy": total,
                        "before_window": seconds(
                            report, "physical backup", "before-state (serving)"
                        ),
                        "rollback": back_total,
                        "restore": seconds(back, "database"),
                        "verify": seconds(back, "verify"),
                        "parts": {
                            k: parts[k]
                            for k in ("stop", "restore", "start", "replay")
                            if k in parts
                        },
                    }
                )
    finally:
        box.down()
    say("")
    say(
        f"{'size':>7} {'rep':>3} {'strategy':<8} {'window s':>9} {'deploy s':>9} {'prepare s':>9} "
        f"{'rollback s':>10} {'restore s':>9} {'verify s':>8}  parts"
    )
    for r in rows:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in r["parts"].items())
        say(
            f"{gb(r['db_bytes']):>7} {r['rep']:>3} {r['strategy']:<8} {r['window']:>9.2f} "
            f"{r['deploy']:>9.1f} "
            f"{r['before_window']:>9.1f} {r['rollback']:>10.1f} {r['restore']:>9.1f} "
            f"{r['verify']:>8.1f}  {parts}"
        )
    window = {
        (k, size): statistics.median(
            [r["window"] for r in rows if r["strategy"] == k and r["size_gb"] == size]
        )
        for k in ("dump", "pitr")
        for size in sizes
        if any(r["strategy"] == k and r["size_gb"] == size for r in rows)
    }
    for (k, size), value in sorted(window.items()):
        say(f"median window, {k} at {size:g} GB: {value:.2f} s")
    small, large = min(sizes), max(sizes)
    flat = versus = float("inf")
    if ("pitr", small) in window and ("pitr", large) in window and window[("pitr", small)]:
        flat = window[("pitr", large)] / window[("pitr", small)]
    if ("pitr", large) in window and window.get(("dump", large)):
        versus = window[("pitr", large)] / window[("dump", large)]
    say(f"pitr window at {large:g} GB / at {small:g} GB: {flat:.2f} (target <= {FLAT_TARGET})")
    say(f"pitr window / dump window at {large:g} GB: {versus:.2f} (target <= {VERSUS_DUMP_TARGET})")
    if versus > VERSUS_DUMP_TARGET:
        misses.append(f"pitr window is {versus:.2f} x the dump window, target <= 0.25")
    for miss in misses:
        say(f"MISS: {miss}")
    code = headline("window", flat, FLAT_TARGET)
    return 1 if misses or code else 0


if __name__ == "__main__":
    sys.exit(main())
