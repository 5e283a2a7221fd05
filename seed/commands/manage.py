"""`seed <env> manage <command> [args…]`: a one-off `manage.py` command on the migrate
host, in the environment of the release `current` serves (like `kamal app exec`).

The output is streamed as it comes, scrubbed of the environment's secrets line by line;
the command's exit code is the task's (141 when our reader goes away: `| head`). It
holds the environment's lock while it runs, so it never overlaps a deploy: a deploy in
progress refuses it (exit 3), and a deploy started meanwhile waits or is refused. No
stdin: `shell` and `dbshell` need a terminal on the host (`ssh` there)."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from typing import TextIO

from seed.deploy import release as rel
from seed.errors import LockHeld, PreflightFailed
from seed.journal.store import Journal, holder_text, new_deploy_id, try_advisory_lock
from seed.remote.session import Session
from seed.run.context import RunContext
from seed.run.report import Scrubber

INTERACTIVE = ("shell", "dbshell", "createsuperuser")  # they read a terminal
CLOSED_PIPE = 141  # what a shell reports for a command whose reader went away (128 + SIGPIPE)


class OutputClosed(Exception):
    """The reader of our output went away (`seed … manage showmigrations | head`)."""


class LineScrubber:
    """Chunks of output → complete lines, scrubbed, written to `stream` as they end."""

    def __init__(self, scrub: Scrubber, stream: TextIO) -> None:
        self.scrub, self.stream, self.rest = scrub, stream, ""

    def feed(self, chunk: bytes) -> None:
        text = self.rest + chunk.decode(errors="replace")
        *lines, self.rest = text.split("\n")
        self._write("".join(self.scrub(line) + "\n" for line in lines))

    def close(self) -> None:
        if self.rest:
            self._write(self.scrub(self.rest) + "\n")
            self.rest = ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            # not the connection's fault: stop reading (the remote command gets SIGPIPE
            # as the channel closes) and end like any Unix command in a closed pipe
            with contextlib.suppress(OSError):  # no second error when Python flushes it
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            raise OutputClosed from None


def run_manage(
    ctx: RunContext, args: list[str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr
) -> int:
    """`manage.py <args>` in the current release on the migrate host; its exit code."""
    env, scrub = ctx.env, ctx.out.scrub
    if not args:
        raise PreflightFailed("manage: name the command, e.g. `seed staging manage showmigrations`")
    if args[0] in INTERACTIVE and "--noinput" not in args and "--no-input" not in args:
        raise PreflightFailed(
            f"manage {args[0]} reads a terminal, which `seed manage` does not give: run it in "
            f"an ssh session on {env.roles.migrate.label}"
        )
    session = Session(env)
    journal: Journal | None = None
    run_id = new_deploy_id()
    try:
        session.open()
        # the lock's own session in `postgres`, where every run takes it (advisory locks
        # are per database: taken in the app's database it would exclude nothing)
        lock = session.connect_lock(f"seed-{env.name}-{run_id}")
        holder = Journal(env, session.state, ctx.local_root, scrub)
        if not try_advisory_lock(lock, env):
            raise LockHeld(
                f"{env.name} is locked by {holder_text(holder.read_lock())}: try again after it"
            )
        journal = holder
        # the lock record names this command, so a deploy it refuses says who holds it
        journal.ensure()
        journal.write_lock(run_id, ctx.command)
        migrator = session.migrator
        layout = rel.Layout(env.deploy_to_of(migrator.host))
        current = rel.current_release(migrator, layout)
        if current is None:
            raise PreflightFailed(
                f"nothing is deployed on {migrator.label}: `manage` runs in the current release"
            )
        path = layout.release(current)
        command = (
            f"cd {shlex.quote(path)} && {rel.source_env(layout, path)} && "
            f".venv/bin/python manage.py {shlex.join(args)}"
        )
        out, err = LineScrubber(scrub, stdout), LineScrubber(scrub, stderr)
        try:
            res = migrator.run(
                command,
                long=True,  # the user's command, as long as it takes (a dead link ends it)
                on_data=lambda chunk, is_err: (err if is_err else out).feed(chunk),
            )
            out.close()
            err.close()
        except OutputClosed:
            return CLOSED_PIPE
        return res.exit_code
    finally:
        if journal is not None:  # ours only: a record another run wrote stays
            with contextlib.suppress(Exception):
                journal.clear_lock(run_id)
        session.close()
