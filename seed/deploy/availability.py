"""Downtime as it happened: the time the site had no app host serving it.

Seed knows when it takes a host out of service (maintenance on, drain, a restart that is
not graceful) and when the host serves again (its health check passed, it was put back
into traffic). The site is down while no host that served before the run serves; the
run's `downtime_seconds` is the sum of those intervals, each timed with the clock at
the moment Seed acted, never assumed from the mode. A host still out when the run ends
keeps the last interval open until then. A first deploy (nothing served before) has no
downtime to count.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Availability:
    serving: set[str] = field(default_factory=set)  # hosts serving now
    intervals: list[tuple[float, float | None]] = field(default_factory=list)  # down: from, to
    started: bool = False  # some host served at some point of the run
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def start(self, hosts: list[str]) -> None:
        """The hosts serving when the run began (those with a current release)."""
        with self._lock:
            self.serving = set(hosts)
            self.started = bool(hosts)

    def out(self, *hosts: str, since: float | None = None) -> None:
        """Hosts taken out of service (maintenance on, drain, a restart); `since`: a moment
        already past (time.time()) from which they count as out, e.g. the start of a reload
        after which the host failed its health check."""
        with self._lock:
            before = bool(self.serving)
            self.serving -= set(hosts)
            if before and not self.serving and self.started:
                start = time.time() if since is None else since
                if self.intervals and self.intervals[-1][1] is not None:
                    start = max(start, self.intervals[-1][1])  # never counted twice
                self.intervals.append((start, None))

    def back(self, *hosts: str, at: float | None = None) -> None:
        """Hosts serving again (health passed, back in traffic); `at`: the moment they did,
        when known more exactly than now (the health check's first good answer)."""
        with self._lock:
            was_down = not self.serving
            self.serving |= set(hosts)
            if hosts:
                self.started = True
            if was_down and self.serving and self.intervals and self.intervals[-1][1] is None:
                start, _ = self.intervals[-1]
                self.intervals[-1] = (start, max(start, time.time() if at is None else at))

    @property
    def down(self) -> bool:
        return bool(self.intervals) and self.intervals[-1][1] is None

    def seconds(self, now: float | None = None) -> float:
        end = time.time() if now is None else now
        return round(sum((b if b is not None else end) - a for a, b in self.intervals), 3)

    def to_json(self) -> list[dict[str, Any]]:
        """The intervals, `to` null while still down."""
        return [
            {
                "from": _stamp(a),
                "to": _stamp(b) if b is not None else None,
                "seconds": round((b if b is not None else time.time()) - a, 3),
            }
            for a, b in self.intervals
        ]


def _stamp(moment: float) -> str:
    when = dt.datetime.fromtimestamp(moment, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
