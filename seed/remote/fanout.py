"""Run one step on many hosts at once, bounded, and know every host's outcome.

Each host has its own SSH connection (a Remote), used by one thread at a time. Every
host runs its part to the end, even when another fails, so the report can say for
each host where it stands; then the first failure is raised for the pipeline to
roll back (which puts every host back, not only the failed one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from seed.remote.ssh import Remote

T = TypeVar("T")


class HostOutcomes:
    """`{host label: {step: "ok" | "failed: ..."}}`, filled from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.data: dict[str, dict[str, str]] = {}

    def set(self, host: str, step: str, outcome: str) -> None:
        with self._lock:
            self.data.setdefault(host, {})[step] = outcome


def fan_out(
    remotes: list[Remote],
    fn: Callable[[Remote], T],
    limit: int,
    outcomes: HostOutcomes | None = None,
    step: str = "",
) -> dict[str, T]:
    """`fn(remote)` for every remote, at most `limit` at a time; results by host label.

    When any host fails, the others still finish; then the first failure (in host
    order) is raised as it was (Remote's errors name their host).
    """
    if not remotes:
        return {}
    results: dict[str, T] = {}
    errors: dict[str, BaseException] = {}
    lock = threading.Lock()

    def one(remote: Remote) -> None:
        try:
            value = fn(remote)
        except BaseException as exc:  # recorded; raised below once every host has ended
            with lock:
                errors[remote.label] = exc
            if outcomes is not None:
                outcomes.set(remote.label, step, f"failed: {exc}")
            return
        with lock:
            results[remote.label] = value
        if outcomes is not None:
            outcomes.set(remote.label, step, "ok")

    if len(remotes) == 1 or limit <= 1:
        for remote in remotes:
            one(remote)
    else:
        with ThreadPoolExecutor(max_workers=min(limit, len(remotes))) as pool:
            list(pool.map(one, remotes))
    for remote in remotes:
        if remote.label in errors:
            raise errors[remote.label]
    return results
