"""Noticing a dead SSH link: a probe that waits for its answer, with a deadline.

A link that drops silently (a cable, a NAT or firewall forgetting the connection, a
suspended VM) sends no FIN and no RST: every read on the connection waits forever and
TCP's own keepalive gives up only after about two hours. paramiko's `set_keepalive`
does not help: it sends its probe without asking for an answer, so nothing ever
notices that none comes back.

This is OpenSSH's ServerAliveInterval/ServerAliveCountMax: every `interval` seconds a
`keepalive@openssh.com` global request that wants a reply (any reply, even "unknown
request", proves the peer alive); one left unanswered for `interval * count` seconds
declares the link dead. Then the transport is closed, which wakes every blocked reader
at once: commands (`Remote.run` selects on its channel), SFTP transfers and job polls,
the database tunnel's `direct-tcpip` channels. Whoever reads `dead` afterwards gets
the one line to show.

paramiko's `global_request(wait=True)` has no timeout of its own (it returns only on
an answer or when the transport ends), so the probe runs in a helper thread and this
watcher keeps the deadline. Only one probe is in flight at a time: paramiko keeps a
single completion event per transport.
"""

from __future__ import annotations

import contextlib
import threading
import time

import paramiko


class Liveness:
    """Watches one transport; declares it dead after `interval * count` s of silence."""

    def __init__(
        self, transport: paramiko.Transport, label: str, interval: float, count: int
    ) -> None:
        self.transport = transport
        self.label = label
        self.interval = interval
        self.count = count
        self.dead: str | None = None  # the user's line, once the link was declared dead
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"seed-alive-{label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the connection is being closed on purpose)."""
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.transport.is_active():
                return  # closed or lost otherwise: nothing of ours to say
            answered = threading.Event()
            threading.Thread(
                target=self._probe, args=(answered,), name=f"seed-probe-{self.label}", daemon=True
            ).start()
            if not self._wait(answered):
                self.dead = (
                    f"ssh {self.label}: no answer for {self.interval * self.count:g} s (link down?)"
                )
                with contextlib.suppress(Exception):
                    self.transport.close()  # every blocked read wakes up
                return
            if self._stop.is_set() or not self.transport.is_active():
                return

    def _wait(self, answered: threading.Event) -> bool:
        """Wait up to `count` intervals for the probe's answer; True early when there is
        nothing left to watch (a stop request, the transport gone by other means).

        Intervals are counted, not the clock read once: a process stopped for a while
        (SIGSTOP, a suspended laptop) misses one interval when it wakes, not all of them
        at once, and the answer that waited in the socket meanwhile still counts."""
        for _ in range(self.count):
            deadline = time.monotonic() + self.interval
            while not answered.wait(min(0.25, max(0.0, deadline - time.monotonic()))):
                if self._stop.is_set() or not self.transport.is_active():
                    return True
                if time.monotonic() >= deadline:
                    break
            else:
                return True
        return False

    def _probe(self, answered: threading.Event) -> None:
        try:
            self.transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # a failed send is no answer: the deadline decides
            return
        if self.transport.is_active():
            answered.set()
