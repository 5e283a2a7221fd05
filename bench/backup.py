"""Benchmark: Seed's verified backup vs a raw `pg_dump -Fc` at Seed's compression level.

Run as `.venv/bin/python bench/backup.py [--scale 0.1] [--reps 3]` (never part of
`make test`). It starts a private sandbox (PostgreSQL + sshd on free ports under
/var/tmp), builds a >= 1 GB `shop` database (3M customers + 4M orders at scale 1),
and times, in the same run, interleaved, median of `--reps`:

- ours: `seed.backup.dump.take_backup` (remote job over SSH: one pass of pg_dump -Fc at
  `backup.compression` into the temp file, sha256 and a full read `pg_restore -f
  /dev/null` of the same stream; fsync, rename);
- the baseline: a local `pg_dump -Fc -Z<backup.compression> -f FILE` (the raw tool
  with Seed's own setting, DESIGN: Benchmarks);
- printed above, not judged: pg_dump's default level (the softer baseline), the raw
  cost of each of Seed's extra steps alone (`part`), the same one pass run raw and
  locally without SSH (`alt`), and Seed's fixed SSH cost per step.

The last line is `backup: ratio <ours/baseline> (target <= 1.15)`; exit status 1 on a
miss. The restore and the snapshot swap have their own benchmarks (restore.py, swap.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    Raw,
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
from sandbox.servers import (  # noqa: E402
    SandboxInfo,
    environment_text,
    sandbox_down,
    sandbox_up,
)
from seed.backup.dump import take_backup  # noqa: E402
from seed.config.environment import Environment, load_environment  # noqa: E402
from seed.remote.session import Session  # noqa: E402
from seed.remote.ssh import RemoteJob  # noqa: E402

APP_NAME = "seed-bench-backup"
TARGET = 1.15
B_OURS = "backup  seed take_backup (ssh job: dump+read+sha256 one pass, sync)"
B_SAME = "backup  raw pg_dump -Fc -Z<seed's level> -f FILE (baseline)"
B_DEFAULT = "  soft  raw pg_dump -Fc, pg_dump's default level"
B_ALT = "  alt   raw one pass, local: dump | tee FILE fifo>sha256 | pg_restore -f /dev/null; sync"


def env_text(info: SandboxInfo, server: Path) -> str:
    return environment_text(info, server, "bench/backup.py against its private sandbox")


# --------------------------------------------------------------------------- measurements


def bench_backup(
    info: SandboxInfo, env: Environment, session: Session, raw: Raw, reps: int, t: Timings
) -> int:
    """Seed's take_backup vs the raw pg_dump at the same level (+ the raw cost of each
    extra step); returns the size of Seed's dump."""
    server = info.server_root
    scratch = server / "bench-raw"
    scratch.mkdir(mode=0o700, exist_ok=True)
    level = env.backup.compression
    raw.dump(scratch / "warmup.dump", level)  # warm the page cache the same way for both
    (scratch / "warmup.dump").unlink()
    sizes: list[int] = []

    for i in range(reps):

        def ours(i: int = i) -> None:
            bid = f"bench-{os.getpid()}-{i}"
            with stopwatch() as w:
                path, sha, size = take_backup(
                    env, session.state, bid, f"{server}/state/jobs/{bid}", APP_NAME
                )
            t.add(B_OURS, w[0])
            if not sizes:
                say(f"seed backup: {path} {size / 1e6:.0f} MB sha256 {sha[:12]}…")
            sizes.append(size)
            Path(path).unlink()

        def baseline(i: int = i) -> None:
            raw_file = scratch / f"raw-{i}.dump"
            with stopwatch() as w:
                raw.dump(raw_file, level)
            t.add(B_SAME, w[0])
            with stopwatch() as w:
                raw.run(["sync", str(raw_file)])
            t.add("  part  sync FILE", w[0])
            with stopwatch() as w:
                raw.run([raw.pg_restore, "--file=/dev/null", str(raw_file)])
            t.add("  part  pg_restore -f /dev/null FILE (full read)", w[0])
            with stopwatch() as w:
                raw.run([*raw.fast_sha, str(raw_file)])
            t.add(f"  part  {raw.fast_sha_name} FILE", w[0])
            raw_file.unlink()

        interleaved(i, ours, baseline)
        streamed = scratch / f"streamed-{i}.dump"
        with stopwatch() as w:
            raw.dump_streamed(streamed)
        t.add(B_ALT, w[0])
        streamed.unlink()
        Path(f"{streamed}.sha").unlink()
        softer = scratch / f"default-{i}.dump"
        with stopwatch() as w:
            raw.dump(softer)
        t.add(B_DEFAULT, w[0])
        softer.unlink()
    return sizes[0]


def bench_ssh(info: SandboxInfo, session: Session, reps: int, t: Timings) -> None:
    """Seed's fixed per-step cost: one remote command, and a remote job that does nothing."""
    for i in range(reps):
        with stopwatch() as w:
            session.state.check("true", "noop")
        t.add("  part  ssh: one remote command (`true`)", w[0])
        with stopwatch() as w:
            job = RemoteJob.start(
                session.state, f"{info.server_root}/state/jobs/noop-{i}", "true\n"
            )
            code, _ = job.wait()
        assert code == 0
        t.add("  part  ssh: RemoteJob start + wait of `true`", w[0])
        # what the login user's ~/.bashrc costs each shell sshd starts (Debian's bash reads
        # it when SSH_CLIENT is set): not Seed's, the state host's (here root's dotfiles)
        login = {**os.environ, "SSH_CLIENT": "127.0.0.1 1 22", "SHLVL": "0"}
        with stopwatch() as w:
            subprocess.run(["bash", "-c", "true"], env=login, check=True)
        with stopwatch() as bare:
            subprocess.run(["bash", "--norc", "-c", "true"], env=login, check=True)
        t.add("  part  the login user's ~/.bashrc, per shell sshd starts", w[0] - bare[0])


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 3M + 4M rows (>= 1 GB)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    args = parser.parse_args()
    if args.scale <= 0 or args.reps < 1:
        parser.error("--scale must be > 0 and --reps >= 1")

    spec = bench_spec()
    t = Timings()
    started = time.perf_counter()
    try:
        info = sandbox_up(spec)
        say(f"sandbox: {spec.root} (pg {spec.pg_port}, ssh {spec.ssh_port})")
        with tempfile.TemporaryDirectory(prefix="seed-bench-env-") as envdir:
            (Path(envdir) / "bench.yml").write_text(env_text(info, info.server_root))
            env = load_environment("bench", Path(envdir))
        raw = Raw(info, env)

        with stopwatch() as w:
            build_data(info, args.scale)
        size = db_size(info, env.db.name)
        say(f"database {env.db.name}: {gb(size)} (pg_database_size), built in {w[0]:.0f} s")
        say(f"compression: -Z{env.backup.compression} (backup.compression), reps {args.reps}")

        session = Session(env)
        session.open()
        try:
            say("measuring backup ...")
            dump_size = bench_backup(info, env, session, raw, args.reps, t)
            bench_ssh(info, session, args.reps, t)
        finally:
            session.close()
    finally:
        sandbox_down(spec, purge=True)

    say("")
    say(f"timings in seconds (scale {args.scale}, {gb(size)}, {os.cpu_count()} cores):")
    say(t.table())
    say("")
    ours, same = t.median(B_OURS), t.median(B_SAME)
    total = time.perf_counter() - started
    say(
        f"database {gb(size)}, dump {dump_size / 1e6:.0f} MB at -Z{env.backup.compression}; "
        f"total bench time {total:.0f} s"
    )
    say(
        f"one pass run raw and locally (no SSH): ratio {t.median(B_ALT) / same:.2f} vs the "
        f"baseline; Seed's remote job adds {ours - t.median(B_ALT):+.2f} s to it"
    )
    say(f"softer: vs pg_dump -Fc at its default level: ratio {ours / t.median(B_DEFAULT):.2f}")
    return headline("backup", ours / same, TARGET)


if __name__ == "__main__":
    sys.exit(main())
