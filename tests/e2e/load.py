"""HTTP load on the sandbox app while a deploy runs: what a user of the site sees.

`Load(port)` runs `threads` clients that GET the given paths one request after another
until stopped; every answer is recorded with its status, how long it took and which
release answered (the X-Release header). A path `POST /orders/` places an order (a
write every release serves); each acknowledged order's id is kept, so a test can check
that none went missing. "Failed" is what a user would call failed: not 2xx, a connection
error, or slower than `slow` seconds.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg


@dataclass
class Answer:
    at: float
    path: str
    status: int  # 0: no answer (connection refused, reset, timeout)
    seconds: float
    release: str = ""
    error: str = ""
    order: int | None = None  # an acknowledged write's order id


@dataclass
class Load:
    port: int
    paths: tuple[str, ...] = ("/health/", "/version/")
    threads: int = 4
    slow: float = 5.0
    pause: float = 0.01
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            started = time.monotonic()
            answer = Answer(time.time(), path, 0, 0.0)
            method, _, url = path.rpartition(" ")
            data = None
            if method == "POST":  # an order for one of the first 100 customers
                fields = {"customer": (i * 7919) % 100 + 1, "total": f"{i % 997}.50"}
                data = urllib.parse.urlencode(fields).encode()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}{url}", data=data, timeout=self.slow + 1
                ) as r:
                    body = r.read()
                    answer.status, answer.release = r.status, r.headers.get("X-Release", "")
                    if data is not None:
                        answer.order = int(json.loads(body)["id"])
            except urllib.error.HTTPError as exc:
                answer.status, answer.error = exc.code, str(exc)
            except (OSError, ValueError, KeyError) as exc:
                answer.error = str(exc)
            answer.seconds = time.monotonic() - started
            with self._lock:
                self.answers.append(answer)
            time.sleep(self.pause)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.slow + 5)

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.answers if not 200 <= a.status < 300 or a.seconds > self.slow]

    def orders(self) -> list[int]:
        """The ids of the orders the site acknowledged."""
        return [a.order for a in self.answers if a.order is not None]

    def releases(self) -> list[str]:
        """The releases that answered, in the order they first did."""
        seen: list[str] = []
        for a in sorted(self.answers, key=lambda a: a.at):
            if a.release and a.release not in seen:
                seen.append(a.release)
        return seen

    def summary(self) -> str:
        bad = self.failed
        return f"{len(self.answers)} requests, {len(bad)} failed" + (
            f" (first: {bad[0].path} {bad[0].status} {bad[0].error})" if bad else ""
        )


def missing_orders(conn: psycopg.Connection[Any], orders: list[int]) -> int:
    """How many of the acknowledged `orders` (ids) the shop's database does not have."""
    if not orders:
        return 0
    row = conn.execute(
        "select count(*) from unnest(%s::bigint[]) id "
        "where not exists (select 1 from shop_order o where o.id = id)",
        (orders,),
    ).fetchone()
    return int(row[0]) if row else len(orders)
