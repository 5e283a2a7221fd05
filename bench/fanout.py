"""Benchmark: releasing to 8 app hosts vs 1, in the same run (Seed's fan-out).

Run as root: `.venv/bin/python bench/fanout.py [--hosts 8] [--reps 3]` (never part of
`make test`). It starts a private sandbox plus N app hosts (sshd in their own mount
namespaces, sandbox.hosts), builds the example shop's origin, and warms every
host up once (its virtualenv is built there, outside the timing). Then, interleaved,
median of `--reps`, it times what `upgradedb` does on the app hosts for a release
whose artifact is already built and whose dependencies are reused: upload + unpack,
link the existing venv, write shared/env, switch `current`, run the restart hook —
through `seed.remote.fanout.fan_out` with `app.parallel` (default 8) on 1 host and on N.

The last line is `fanout: ratio <time(N)/time(1)> (target <= 2)`, exit status 1 on a
miss; sequential would be N.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    Timings,
    bench_spec,
    headline,
    interleaved,
    say,
    stopwatch,
)
from sandbox.hosts import extra_hosts  # noqa: E402
from sandbox.origin import build_origin  # noqa: E402
from sandbox.servers import (  # noqa: E402
    environment_text,
    sandbox_down,
    sandbox_up,
)
from sandbox.wheels import ensure_wheelhouse  # noqa: E402
from seed.config.environment import Host, load_environment  # noqa: E402
from seed.deploy import release as rel  # noqa: E402
from seed.remote.fanout import fan_out  # noqa: E402
from seed.remote.ssh import Remote  # noqa: E402
from seed.run.report import utcnow  # noqa: E402

TARGET = 2.0
EXAMPLE = REPO / "example"
DEPLOY_USER = "seed-bench-deploy"


def add_user(home: Path) -> None:
    """A throw-away deploy user with an empty home (removed at the end)."""
    subprocess.run(["userdel", DEPLOY_USER], capture_output=True, check=False)
    subprocess.run(
        ["useradd", "--system", "--home-dir", str(home), "--create-home", "--shell", "/bin/bash",
         DEPLOY_USER],
        check=True,
        capture_output=True,
    )  # fmt: skip
    # no password, but not "locked" ("!"): sshd without PAM refuses locked accounts
    subprocess.run(["usermod", "-p", "*", DEPLOY_USER], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hosts", type=int, default=8, help="app hosts for the fan-out")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the extra hosts need mount namespaces")
    if args.hosts < 2 or args.reps < 1:
        parser.error("--hosts must be >= 2 and --reps >= 1")

    spec = bench_spec()
    root = spec.root
    t = Timings()
    one_label, many_label = "release to 1 host", f"release to {args.hosts} hosts"
    try:
        info = sandbox_up(spec)
        server = info.server_root
        cache = Path(os.environ.get("SEED_WHEEL_CACHE") or REPO / ".cache" / "wheels")
        ensure_wheelhouse([EXAMPLE / "v1" / "requirements.txt"], cache)
        build_origin(EXAMPLE, server / "origin.git")
        envdir = root / "envs"
        envdir.mkdir()
        text = environment_text(info, server, "fan-out bench")
        text = text.replace(
            "  settings: shopsite.settings\n",
            f"  settings: shopsite.settings\n  pip_args: [--no-index, --find-links, {cache}]\n"
            "  restart: 'true'\n",
        )
        # the app hosts log in as a deploy user of their own, as on real servers (root's
        # dotfiles here run `pyenv init` on every SSH command: ~0.1 s of CPU each, which
        # 8 "hosts" sharing 2 cores would pay 8 times)
        home = root / "deployhome"
        add_user(home)
        state = root / "deploystate"
        state.mkdir()
        shutil.chown(state, DEPLOY_USER)
        text = text.replace(f"state_dir: {server}/state\n", f"state_dir: {state}\n")
        (envdir / "bench.yml").write_text(text)
        env = load_environment("bench", envdir)
        mirror = rel.repo_cache(env.app.repo, root / "cache" / "repos")
        sha = rel.resolve_ref(mirror, "v1")
        archive = rel.build_archive(mirror, sha, root / "cache" / "archives")
        requirements = rel.file_at(mirror, sha, "requirements.txt") or b""
        deploy_to = Path(env.app.deploy_to)
        bases = root / "hosts"
        for i in range(args.hosts):
            (bases / f"host{i + 1}").mkdir(parents=True)
            shutil.chown(bases / f"host{i + 1}", DEPLOY_USER)
        with extra_hosts(info, deploy_to, args.hosts, bases, DEPLOY_USER) as hosts:
            app_hosts = tuple(Host(h.ip, DEPLOY_USER, h.port) for h in hosts)
            env = dataclasses.replace(env, roles=dataclasses.replace(env.roles, app=app_hosts))
            remotes = [Remote(env, h).open() for h in app_hosts]
            layout = rel.Layout(env.app.deploy_to)
            counter = iter(range(1_000_000))

            def release_to(targets: list[Remote]) -> Callable[[], None]:
                def one(remote: Remote) -> None:
                    rid = rel.release_id(sha, f"{utcnow():%Y%m%d%H%M%S}{next(counter):04d}")
                    version = rel.upload_release_and_python(
                        remote, layout, rid, archive, sha, env.app.python
                    )
                    vhash = rel.venv_hash(requirements, version)
                    job = f"{env.state_dir}/jobs/bench-venv-{remote.host.name}-{remote.host.port}"
                    rel.ensure_venv(env, remote, layout, rid, vhash, job)
                    rel.write_env_file(env, remote, layout, rid)
                    rel.switch_current(remote, layout, rid)
                    rel.run_hook(remote, layout, "true", "restart")

                return lambda: fan_out(targets, one, env.app.parallel)  # type: ignore[return-value]

            say(f"warming up {args.hosts} hosts (a virtualenv on each) ...")
            with stopwatch() as w:
                release_to(remotes)()
            say(f"warm-up: {w[0]:.0f} s")
            for i in range(args.reps):

                def one_host() -> None:
                    cpu = time.process_time()
                    with stopwatch() as w:
                        release_to(remotes[:1])()
                    t.add(one_label, w[0])
                    t.add(
                        f"  cpu   {one_label}: this process (ssh client)", time.process_time() - cpu
                    )

                def many_hosts() -> None:
                    cpu = time.process_time()
                    with stopwatch() as w:
                        release_to(remotes)()
                    t.add(many_label, w[0])
                    t.add(
                        f"  cpu   {many_label}: this process (ssh client)",
                        time.process_time() - cpu,
                    )

                interleaved(i, many_hosts, one_host)
            for remote in remotes:
                remote.close()
    finally:
        sandbox_down(spec, purge=True)
        subprocess.run(["userdel", DEPLOY_USER], capture_output=True, check=False)

    say("")
    say(f"timings in seconds ({os.cpu_count()} cores, app.parallel {env.app.parallel}):")
    say(t.table())
    say("")
    ratio = t.median(many_label) / t.median(one_label)
    say(f"sequential would be {args.hosts}x")
    return headline("fanout", ratio, TARGET)


if __name__ == "__main__":
    sys.exit(main())
