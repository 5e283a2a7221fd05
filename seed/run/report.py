"""What a person and a CI pipeline see: step lines as they happen, a summary, a JSON report.

On a TTY output goes through rich; otherwise (CI) plain UTC-timestamped lines.
Every line and the JSON report pass through `scrub`, so a secret never leaves.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from seed.errors import Interrupted, PreflightFailed

HEARTBEAT_SECONDS = 30.0  # a step says it is still running at least this often

if TYPE_CHECKING:
    from seed.journal.record import RunRecord


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")


def human(n: float) -> str:
    """Bytes for people: 812 B, 1.2 MB, 85.2 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def throttled(
    seconds: float, measure: Callable[[], int | None], report: Callable[[int], None]
) -> Callable[[], None]:
    """A hook for a polling loop: at most every `seconds`, `report(measure())`. A measure
    that has nothing to say (None: the file is not there yet, the link hiccuped) is
    skipped: progress is never worth failing a step."""
    last = [0.0]

    def poll() -> None:
        now = time.monotonic()
        if now - last[0] < seconds:
            return
        last[0] = now
        figure = measure()
        if figure is not None:
            report(figure)

    return poll


def who() -> str:
    """`user@host` for records and locks; `uid1000@host` for a uid without a name (a
    container run with an arbitrary uid and no USER)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no LOGNAME/USER and no passwd entry
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


# a password written into a URL (postgresql://u:PW@h/db, https://ci:TOKEN@git.example.com)
# or a libpq key=value string (password=PW): never recorded, whoever typed it
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)")


def redact_credentials(text: str) -> str:
    """`text` with the passwords of URLs and libpq key=value strings as `***`."""
    return _KV_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


# every secret any Scrubber of this process was given: the command's last line, written
# where no run's Scrubber is at hand (seed.cli.edge.user_errors), is scrubbed with them
_KNOWN: set[str] = set()


def scrub_known(text: str) -> str:
    """`text` with every secret this process has learned replaced by `***`."""
    return Scrubber(list(_KNOWN))(text)


class Scrubber:
    """Replaces known secret values, and passwords written into URLs or `password=`
    settings, by `***` in any text."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = sorted(set(secrets or []), key=len, reverse=True)
        _KNOWN.update(self.secrets)

    def add(self, *secrets: str) -> None:
        """More secrets (one a run learns: a password in a source DSN)."""
        self.secrets = sorted({*self.secrets, *(s for s in secrets if s)}, key=len, reverse=True)
        _KNOWN.update(self.secrets)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return redact_credentials(text)

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


@dataclass
class StepRecord:
    name: str
    started_at: str
    seconds: float = 0.0
    outcome: str = "running"  # running | ok | failed | skipped
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "outcome": self.outcome,
            "detail": self.detail,
        }


class Output:
    """Step-by-step progress for a person (rich on a TTY) or a CI log (plain lines)."""

    def __init__(
        self,
        env_name: str,
        scrub: Scrubber,
        stream: TextIO | None = None,
        plain: bool | None = None,
    ) -> None:
        self.env_name = env_name
        self.scrub = scrub
        self.stream = stream or sys.stderr
        if plain is None:
            plain = not self.stream.isatty() or os.environ.get("CI", "") not in ("", "0", "false")
        self.plain = plain
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        # a step quiet for this long says it is still running: CI systems kill a job
        # whose log stays silent (GitLab, Travis: 10 min), a dump may take longer
        self.heartbeat = float(os.environ.get("SEED_HEARTBEAT_SECONDS") or HEARTBEAT_SECONDS)
        self._lock = threading.Lock()  # the heartbeat writes from its own thread
        self._figure = ""  # the running step's latest progress figure, for the heartbeat

    def line(self, text: str, style: str = "") -> None:
        text = self.scrub(text)
        with self._lock:
            if self.plain:
                for part in text.splitlines() or [""]:
                    print(f"{iso()} [{self.env_name}] {part}", file=self.stream, flush=True)
            else:
                self.console.print(text, style=style or None, markup=False)

    def _beat(self, name: str, started: float, done: threading.Event) -> None:
        while not done.wait(self.heartbeat):
            elapsed = int(time.monotonic() - started)
            figure = f"; {self._figure}" if self._figure else ""
            self.line(
                f"… {name} still running ({elapsed // 60}m{elapsed % 60:02d}s{figure})", "dim"
            )

    @contextmanager
    def progress(self, what: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Bytes a long step has done (`what`: "dumped", "restored"), out of an expected
        `total` (None: unknown): a live bar with rate and elapsed time on a TTY; in plain
        mode the heartbeat line carries the figure. Yields the function that takes the
        bytes done so far (called from any thread)."""
        started = time.monotonic()
        if self.plain:

            def note(done: int) -> None:
                rate = done / max(time.monotonic() - started, 1e-3)
                of = f" of ~{human(total)}" if total and total >= done else ""
                over = f" (over the ~{human(total)} expected)" if total and done > total else ""
                self._figure = f"{human(done)}{of} {what}{over}, {human(rate)}/s"

            try:
                yield note
            finally:
                self._figure = ""
            return
        bar = Progress(
            TextColumn(f"    {what}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        task = bar.add_task(what, total=total or None)
        task_total = [total or 0]

        def advance(done: int) -> None:
            if task_total[0] and done > task_total[0]:
                # the estimate was low: a new one, half again what is done (rich starts the
                # task's rate over whenever its total changes: not on every update)
                task_total[0] = int(done * 1.5)
                bar.update(task, total=task_total[0])
            bar.update(task, completed=done)

        with bar:
            yield advance

    def detail(self, text: str) -> None:
        for part in self.scrub(text).rstrip().splitlines():
            self.line(f"    {part}", style="dim")

    @contextmanager
    def step(self, report: RunRecord, name: str) -> Iterator[StepRecord]:
        record = StepRecord(name=name, started_at=iso())
        report.steps.append(record)
        started = time.monotonic()
        self.line(f"▶ {name}", style="bold")
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(name, started, done), daemon=True)
        beat.start()
        try:
            yield record
        except BaseException as exc:
            done.set()
            record.seconds = time.monotonic() - started
            record.outcome = "interrupted" if isinstance(exc, Interrupted) else "failed"
            if not record.detail:
                record.detail = self.scrub(str(exc))
            self.line(f"✘ {name} failed after {record.seconds:.2f}s", style="bold red")
            raise
        finally:
            done.set()
        record.seconds = time.monotonic() - started
        if record.outcome == "running":
            record.outcome = "ok"
        mark = "-" if record.outcome == "skipped" else "✔"
        extra = f": {record.detail}" if record.detail else ""
        self.line(f"{mark} {name} ({record.seconds:.2f}s){extra}", style="green")

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        """A small table (the first column left, the others right-aligned); in plain
        mode one line per row, `title: cells | ...`."""
        if self.plain:
            widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]
            for row in [columns, *rows]:
                cells = [
                    str(v).ljust(w) if i == 0 else str(v).rjust(w)
                    for i, (v, w) in enumerate(zip(row, widths, strict=True))
                ]
                self.line(f"{title}: {' | '.join(cells)}")
            return
        table = Table(title=title, show_lines=False)
        for i, name in enumerate(columns):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(Text(self.scrub(str(v))) for v in row))
        self.console.print(table)

    def checks_table(self, checks: list[dict[str, Any]]) -> None:
        """Each check with its expected and actual value and duration."""
        if not checks:
            return

        def verdict(c: dict[str, Any]) -> str:
            if c.get("outcome") == "error":
                return "ERROR"
            return "skipped" if c["skipped"] else "passed" if c["passed"] else "FAILED"

        def actual(c: dict[str, Any]) -> str:
            text = c["skipped"] or c["error"] or c["actual"]
            return self.scrub(str(text))

        if self.plain:
            for c in checks:
                self.line(
                    f"check: {verdict(c):<7} {c['when']:<4} {c['name']} | expected "
                    f"{c['expected']} | actual {actual(c)} | {c['seconds']:.2f}s"
                )
            return
        table = Table(title="checks", show_lines=False)
        for name in ("check", "when", "result", "expected", "actual"):
            table.add_column(name, overflow="fold")
        table.add_column("time", justify="right")
        for c in checks:
            color = {"passed": "green", "FAILED": "red", "skipped": "yellow", "ERROR": "yellow"}[
                verdict(c)
            ]
            table.add_row(
                Text(self.scrub(c["name"])),
                c["when"],
                Text(verdict(c), style=color),
                Text(self.scrub(str(c["expected"]))),
                Text(actual(c)),
                f"{c['seconds']:.2f}s",
            )
        self.console.print(table)

    def summary(self, report: RunRecord) -> None:
        self.checks_table(report.checks)
        if self.plain:
            for s in report.steps:
                self.line(f"summary: {s.name:<22} {s.outcome:<8} {s.seconds:8.2f}s")
            self.line(f"result: {report.outcome} (exit {report.exit_code}) {report.message}")
            return
        table = Table(title=f"seed {report.command} — {report.environment}", show_lines=False)
        table.add_column("step")
        table.add_column("result")
        table.add_column("time", justify="right")
        for s in report.steps:
            color = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(s.outcome, "")
            table.add_row(
                s.name, f"[{color}]{s.outcome}[/]" if color else s.outcome, f"{s.seconds:.2f}s"
            )
        self.console.print(table)
        style = "bold green" if report.exit_code == 0 else "bold red"
        self.console.print(self.scrub(report.message), style=style, markup=False)


def write_json(path: Path, data: dict[str, Any], scrub: Scrubber) -> None:
    """Write a report atomically, scrubbed of secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(scrub.data(data), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # no half-written report left behind
        raise


LOCAL_SPACE_NEEDED = 20 * 1024 * 1024  # reports, journal copies, release archives, imports


def check_local_state(root: Path) -> None:
    """Before a run: the control machine's state directory (`SEED_HOME`, `.seed/`) can
    be written and has room: a full disk found here stops the run before anything
    changed, not half way (exit 4). (`--report PATH` is checked by the task.)"""
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        probe = root / f".seed-write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise PreflightFailed(
            f"local state {root}: cannot write there ({exc.strerror}); free space or fix its "
            "permissions, or point SEED_HOME elsewhere; nothing was done"
        ) from None
    if free < LOCAL_SPACE_NEEDED:
        raise PreflightFailed(
            f"local state {root}: only {free / 2**20:.1f} MiB free, Seed needs "
            f"{LOCAL_SPACE_NEEDED // 2**20} MiB there (reports, journal copies, release "
            "archives); free space or point SEED_HOME elsewhere; nothing was done"
        )
