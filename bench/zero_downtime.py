"""Benchmark: what HTTP clients see while Seed deploys — failed requests, latency, lost writes.

Run as `.venv/bin/python bench/zero_downtime.py [--rate 50] [--concurrency 8]` (never part
of `make test`). It starts a private sandbox with `fab sandbox.up` (its own directory,
ports and SEED_HOME) — two app hosts behind HAProxy, as environments/local.yml describes
them — deploys v1 and v2, measures the idle latency through the balancer, then runs a load
generator against the balancer through each deploy, driving `fab` exactly as a user does:

- (a) code-only: v2 again (no migration): the hosts switched one at a time (drained at
  the balancer, graceful reload, health naming the release, undrained);
- (b) code-only whose second host fails its health check: `broken` with SHOP_BROKEN_ON
  naming the second host (it answers 500 there and serves on the first); both hosts
  switched back the same way;
- (e) online whose post check fails: `expand` (a nullable column and a concurrently built
  index on `shop_order`, the table the load writes to) with a check that fails on purpose:
  migrated while v2 serves, then undone by reverse (the code never switched);
- (d) online: `expand` again, with the checks of environments/local.yml: backup while
  serving, migrate under lock_timeout while v2 serves, then the hosts switched one at a time;
- (c) maintenance: `contract` (drops a column the running release reads): writes stopped,
  backup, migrate, switch.

The load: `--rate` requests/s issued on schedule (open loop: a slow answer does not slow
the schedule) by `--concurrency` clients, 80 % reads (`/health/`, `/version/`,
`/customers/<id>/`), 20 % writes (`POST /orders/`, every acknowledged order id kept).
"Failed" is what a user calls failed: not 2xx, no answer, or slower than 5 s. Per case:
requests, failed, p99 latency during the deploy against idle, acknowledged writes missing
afterwards, and the downtime the clients measured (first to last failed request) next to
the report's `downtime_seconds` (they must agree within 1 s).

Targets: 0 failed requests for (a), (b), (d) and (e); p99 during (a), (d) and (e) <= 3x
idle; 0 writes lost in every case; measured and reported downtime within 1 s in every case,
and both 0 for (d) and (e). The last line is `zero_downtime: ratio <the highest p99 during
(a), (d), (e) / p99 idle> (target <= 3)`; exit 1 on any miss.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from bench.common import FabSandbox, headline, say  # noqa: E402
from tests.e2e.load import missing_orders  # noqa: E402

SLOW = 5.0
CUSTOMERS = 20_000  # v1's demo data: ids 1..20000
P99_TARGET = 3.0


@dataclass
class Answer:
    at: float
    seconds: float
    status: int  # 0: no answer
    write: bool
    order: int | None = None

    @property
    def failed(self) -> bool:
        return not 200 <= self.status < 300 or self.seconds > SLOW


@dataclass
class Load:
    """Requests on schedule at `rate`/s by `concurrency` clients until stopped."""

    port: int
    rate: float
    concurrency: int
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def one(self, i: int) -> None:
        """Request number `i`: every fifth a write, the others reads, spread over customers."""
        write = i % 5 == 4
        customer = (i * 7919) % CUSTOMERS + 1
        started = time.monotonic()
        answer = Answer(time.time(), 0.0, 0, write)
        try:
            if write:
                data = urllib.parse.urlencode({"customer": customer, "total": f"{i % 997}.50"})
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/orders/", data=data.encode(), timeout=SLOW + 5
                ) as r:
                    answer.status = r.status
                    answer.order = int(json.loads(r.read())["id"])
            else:
                path = ("/health/", "/version/", f"/customers/{customer}/")[i % 5 % 3]
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}{path}", timeout=SLOW + 5
                ) as r:
                    r.read()
                    answer.status = r.status
        except urllib.error.HTTPError as exc:
            answer.status = exc.code
        except (OSError, ValueError, KeyError):
            pass
        answer.seconds = time.monotonic() - started
        with self._lock:
            self.answers.append(answer)

    def _run(self) -> None:
        with ThreadPoolExecutor(self.concurrency) as pool:
            start, i = time.monotonic(), 0
            while not self._stop.is_set():
                due = start + i / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.one, i)
                i += 1

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SLOW + 30)

    def p99(self) -> float:
        times = sorted(a.seconds for a in self.answers if not a.failed)
        return times[min(len(times) - 1, int(len(times) * 0.99))] if times else float("inf")

    def outage(self) -> float:
        bad = sorted(a.at for a in self.answers if a.failed)
        return bad[-1] - bad[0] if bad else 0.0

    def orders(self) -> list[int]:
        return [a.order for a in self.answers if a.order is not None]


def missing(box: FabSandbox, orders: list[int]) -> int:
    """How many acknowledged orders the database does not have."""
    with box.admin("shop") as conn:
        return missing_orders(conn, orders)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=50, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=8, help="clients at once")
    parser.add_argument("--idle", type=float, default=10, help="seconds of idle load first")
    args = parser.parse_args()
    box = FabSandbox("seed-bench-zd-")
    results: list[dict[str, Any]] = []
    misses: list[str] = []
    try:
        if not box.up("v1", "v2"):
            return 1
        with Load(box.lb_port, args.rate, args.concurrency) as idle:
            time.sleep(args.idle)
        idle_p99 = idle.p99()
        failed = sum(1 for a in idle.answers if a.failed)
        say(f"idle: {len(idle.answers)} requests, {failed} failed, p99 {idle_p99 * 1000:.0f} ms")
        broken_on_two = box.variant(
            "broken-on-two",
            {"app.env.SHOP_BROKEN_ON": f"127.0.0.2:{box.port}", "app.health.timeout": 5},
        )
        failing_check = box.variant(
            "failing-check",
            {
                "checks": [
                    {
                        "name": "every order has a note (fails on purpose)",
                        "sql": "select count(*) from shop_order where note is null",
                        "expect": 0,
                    }
                ]
            },
        )
        cases = [
            ("a code-only", "v2", 0, True, None),
            ("b code-only, 2nd fails", "broken", 5, True, broken_on_two),
            ("e online, check fails", "expand", 5, True, failing_check),
            ("d online", "expand", 0, True, None),
            ("c maintenance", "contract", 0, False, None),
        ]
        for name, ref, expected, zero, envdir in cases:
            with Load(box.lb_port, args.rate, args.concurrency) as load:
                time.sleep(1)
                code, report = box.fab("local", "upgradedb", "--ref", ref, envdir=envdir)
                time.sleep(1)
            reported = float(report.get("downtime_seconds") or 0.0)
            row = {
                "case": name,
                "exit": code,
                "mode": report.get("mode"),
                "requests": len(load.answers),
                "failed": len([a for a in load.answers if a.failed]),
                "p99_ms": round(load.p99() * 1000),
                "writes": len(load.orders()),
                "writes_missing": missing(box, load.orders()),
                "measured_down_s": round(load.outage(), 2),
                "reported_down_s": reported,
            }
            results.append(row)
            if code != expected:
                misses.append(f"{name}: exit {code}, expected {expected}")
            if zero and row["failed"]:
                misses.append(f"{name}: {row['failed']} failed request(s), target 0")
            if row["writes_missing"]:
                misses.append(f"{name}: {row['writes_missing']} acknowledged write(s) lost")
            online = name[0] in "de"
            if online and (row["mode"] != "online" or reported or row["measured_down_s"]):
                misses.append(
                    f"{name}: mode {row['mode']}, {reported} s down reported, "
                    f"{row['measured_down_s']} s measured (target online, 0 and 0)"
                )
            if name[0] in "ade" and idle_p99 > 0 and load.p99() / idle_p99 > P99_TARGET:
                misses.append(f"{name}: p99 {load.p99() / idle_p99:.2f}x idle, target <= 3")
            if abs(row["measured_down_s"] - reported) > 1.0:
                misses.append(
                    f"{name}: clients measured {row['measured_down_s']} s down, the report "
                    f"says {reported} s"
                )
    finally:
        box.down()
    say("")
    say(f"{'case':<22} {'exit':>4} {'mode':<11} {'requests':>8} {'failed':>6} {'p99 ms':>7} "
        f"{'writes':>6} {'lost':>4} {'down measured':>13} {'down reported':>13}")  # fmt: skip
    for r in results:
        say(
            f"{r['case']:<22} {r['exit']:>4} {r['mode'] or '':<11} {r['requests']:>8} "
            f"{r['failed']:>6} {r['p99_ms']:>7} {r['writes']:>6} {r['writes_missing']:>4} "
            f"{r['measured_down_s']:>12.2f}s {r['reported_down_s']:>12.2f}s"
        )
    say(f"idle p99: {idle_p99 * 1000:.0f} ms")
    for miss in misses:
        say(f"MISS: {miss}")
    during = [r["p99_ms"] / 1000 for r in results if r["case"][0] in "ade"]
    ratio = max(during) / idle_p99 if len(during) == 3 and idle_p99 > 0 else float("inf")
    say(f"p99 during / idle: {', '.join(f'{d / idle_p99:.2f}' for d in during)} (a, e, d)")
    status = headline("zero_downtime", ratio, P99_TARGET)
    return 1 if misses else status


if __name__ == "__main__":
    sys.exit(main())
