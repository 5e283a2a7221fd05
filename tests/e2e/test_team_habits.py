"""What a Django team expects of a deploy tool day to day (issue 21): a deploy freeze
(`freeze --reason` / `unfreeze`) that upgradedb respects (exit 3, nothing changed) and
rollback does not; a CI log that never stays silent through a long step; shared folders kept
across releases; a project in a subfolder of its repository."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import FAB, REPO, Deployment


@pytest.fixture(scope="module")
def at_v1(deployment: Deployment) -> Iterator[Deployment]:
    deployment.reset()
    deployment.deploy("v1")
    yield deployment


def test_a_freeze_stops_deploys_not_rollbacks(at_v1: Deployment) -> None:
    refused = at_v1.fab("local", "freeze")
    assert refused.returncode == 2 and "freeze needs --reason" in refused.stderr
    res = at_v1.fab("local", "freeze", "--reason", "Black Friday: no deploys")
    assert res.returncode == 0, res.stderr
    assert "local frozen for deploys since " in res.stdout and "Black Friday" in res.stdout
    status = at_v1.fab("local", "status")
    assert "FROZEN for deploys since" in status.stdout and "Black Friday" in status.stdout

    before = (at_v1.figures(), at_v1.current(), at_v1.releases(), at_v1.backups())
    blocked = at_v1.fab("local", "upgradedb", "--ref", "v2")
    assert blocked.returncode == 3, blocked.stdout + blocked.stderr
    last = blocked.stderr.strip().splitlines()[-1]
    assert last.startswith("seed: local is frozen for deploys since ") and "Black Friday" in last
    assert "`seed local unfreeze` lifts it" in last
    assert (at_v1.figures(), at_v1.current(), at_v1.releases(), at_v1.backups()) == before
    assert at_v1.last_report()["exit_code"] == 3

    # going back is never frozen: rollback runs (here: undoes v1, the only deploy)
    back = at_v1.fab("local", "rollback")
    assert back.returncode != 3, back.stdout + back.stderr

    lifted = at_v1.fab("local", "unfreeze")
    assert lifted.returncode == 0 and "Black Friday" in lifted.stdout
    assert at_v1.fab("local", "unfreeze").stdout.strip() == "local was not frozen"
    # the journal keeps who froze and lifted it, when and why (one record each)
    shown = at_v1.fab("local", "history").stdout.splitlines()
    kinds = [line.split()[1] for line in shown[1:]]
    assert kinds[:4] == ["unfreeze", "rollback", "upgradedb", "freeze"], shown
    assert "lifted the freeze since " in shown[1] and shown[4].endswith("Black Friday: no deploys")
    res = at_v1.fab("local", "upgradedb", "--ref", "v1")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_long_step_keeps_the_ci_log_alive(at_v1: Deployment) -> None:
    """The `slow` release's migration takes 5 s: with a 1 s heartbeat the log says the
    step is still running (30 s by default: CI systems kill silent jobs)."""
    res = at_v1.fab(
        "local", "upgradedb", "--ref", "slow", extra_env={"SEED_HEARTBEAT_SECONDS": "1"}
    )
    assert res.returncode == 0, res.stdout + res.stderr
    beats = [line for line in res.stderr.splitlines() if "… migrate still running" in line]
    assert len(beats) >= 3, res.stderr


def test_shared_dirs_are_kept_across_releases(at_v1: Deployment) -> None:
    """app.shared_dirs (Capistrano's linked_dirs): media and logs live in shared/ and every
    release links them, so a file the app wrote survives the next deploy."""
    at_v1.reset()
    envdir = at_v1.variant("shared-dirs", {"app.shared_dirs": ["media", "var/log"]})
    res = at_v1.fab("local", "upgradedb", "--ref", "v1", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    first = at_v1.deploy_to / "releases" / at_v1.releases()[-1]
    assert os.readlink(first / "media") == str(at_v1.deploy_to / "shared" / "media")
    (first / "media" / "avatar.png").write_bytes(b"uploaded by a customer")
    res = at_v1.fab("local", "upgradedb", "--ref", "v2", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    second = at_v1.deploy_to / "releases" / at_v1.releases()[-1]
    assert second != first and (second / "var" / "log").is_symlink()
    assert (second / "media" / "avatar.png").read_bytes() == b"uploaded by a customer"
    bad = at_v1.variant("shared-dirs-bad", {"app.shared_dirs": ["../etc"]})
    refused = at_v1.fab("local", "upgradedb", "--ref", "v2", envdir=bad)
    assert refused.returncode == 2 and "must be a folder inside the release" in refused.stderr


def test_a_project_in_a_subfolder_deploys_with_app_root(at_v1: Deployment, tmp_path: Path) -> None:
    """A monorepo: the Django project in backend/, a frontend beside it. app.root deploys
    backend/ as the release (Capistrano's repo_tree): manage.py at the release's top, the
    site serving, manage commands run there."""
    at_v1.reset()
    work = tmp_path / "mono"
    subprocess.run(
        ["git", "clone", "-q", "--branch", "v1", str(at_v1.root / "origin.git"), str(work)],
        check=True, capture_output=True,
    )  # fmt: skip
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (work / "backend").mkdir()
    for path in work.iterdir():
        if path.name not in (".git", "backend"):
            subprocess.run([*git, "mv", path.name, f"backend/{path.name}"], check=True)
    (work / "frontend").mkdir()
    (work / "frontend" / "app.js").write_text("console.log('shop')\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "monorepo"], check=True)
    bare = tmp_path / "mono.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)

    envdir = at_v1.variant("app-root", {"app.repo": str(bare), "app.root": "backend"})
    res = at_v1.fab("local", "upgradedb", "--ref", "HEAD", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    release = at_v1.deploy_to / "releases" / at_v1.releases()[-1]
    assert (release / "manage.py").is_file() and not (release / "frontend").exists()
    assert at_v1.http("/version/") == (200, "v1")
    shown = at_v1.fab("local", "manage", "--args", "showmigrations shop", envdir=envdir)
    assert shown.returncode == 0 and "[X] 0002_demo_data" in shown.stdout, shown.stderr
    wrong = at_v1.variant("app-root-wrong", {"app.repo": str(bare), "app.root": "api"})
    refused = at_v1.fab("local", "upgradedb", "--ref", "HEAD", envdir=wrong)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "app.root: api is not a folder of the app repository" in refused.stderr


def on_a_terminal(dep: Deployment, *args: str) -> tuple[int, str]:
    """`fab *args` with a pseudo-terminal as its stdin, stdout and stderr (a person at a
    terminal: no CI variable); its exit code and the text it drew."""
    env = dep.process_env()
    env.pop("CI", None)
    env.update(TERM="xterm-256color", COLUMNS="120")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [FAB, *args], cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave
    )  # fmt: skip
    os.close(slave)
    drawn = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not data:
            break
        drawn.append(data)
    os.close(master)
    text = b"".join(drawn).decode(errors="replace")
    return proc.wait(timeout=600), re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text)  # no colours


def test_long_dumps_and_restores_show_their_progress(at_v1: Deployment) -> None:
    """A database big enough for a dump and a restore that take seconds: on a terminal
    a live bar with bytes done of the expected size and the rate; in a CI log the
    heartbeat line carries the same figures (whatever is deployed: only the database
    matters)."""
    with at_v1.admin("shop") as conn:
        conn.execute(
            "create table seed_bulk as select g, "
            + " || ".join(["md5(random()::text)"] * 8)
            + " as payload from generate_series(1, 300000) g"
        )
    try:
        res = at_v1.fab("local", "backup", extra_env={"SEED_HEARTBEAT_SECONDS": "0.5"})
        assert res.returncode == 0, res.stdout + res.stderr
        beats = [ln for ln in res.stderr.splitlines() if "… backup still running" in ln]
        # bytes done, of the expected size or past it (the estimate is the last backup's
        # compression ratio: low when that database held none of this bulk table)
        assert any(
            re.search(
                r"; [\d.]+ [KMG]?B (of ~[\d.]+ [KMG]?B dumped|dumped \(over the ~[\d.]+ "
                r"[KMG]?B expected\)), [\d.]+ [KMG]?B/s\)",
                b,
            )
            for b in beats
        ), res.stderr
        # the backup above set the ratio: the bar's estimate holds
        code, drawn = on_a_terminal(at_v1, "local", "backup", "--label", "tty")
        assert code == 0, drawn
        # a bar with bytes done of the expected size, rising, with a rate
        done = [float(d) for d in re.findall(r"dumped .*?(\d+\.\d)/[\d.]+ MB", drawn)]
        assert len(set(done)) >= 3 and done == sorted(done), drawn
        assert re.search(r"dumped .*[\d.]+/[\d.]+ MB .*[\d.]+ MB/s", drawn), drawn
        code, drawn = on_a_terminal(at_v1, "local", "restore", "--yes")
        assert code == 0, drawn
        assert re.search(r"restored .*[\d.]+/[\d.]+ [kMG]B .*[\d.]+ [kMG]?B/s", drawn), drawn
    finally:
        with at_v1.admin("shop") as conn:
            conn.execute("drop table if exists seed_bulk")


def test_manage_into_a_closed_pipe_ends_like_a_unix_command(at_v1: Deployment) -> None:
    """`seed local manage showmigrations | true`: the reader went away, not the connection;
    exit 141 (as a shell reports SIGPIPE), nothing on stderr, the lock let go."""
    if at_v1.current() is None:
        at_v1.deploy("v1")
    script = f'{FAB} local manage --args showmigrations | true; echo "exit ${{PIPESTATUS[0]}}"'
    res = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=at_v1.process_env(), capture_output=True,
        text=True, timeout=300, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.stdout == "exit 141\n" and res.stderr == "", res.stdout + res.stderr
    shown = at_v1.fab("local", "manage", "--args", "showmigrations shop")
    assert shown.returncode == 0 and "[X] 0001_initial" in shown.stdout, shown.stderr
