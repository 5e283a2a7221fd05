"""Links that die (issue 22): the control machine's link to the hosts is cut for real —
the environment's ssh port is a proxy (tests/netcut.py) that stops forwarding and keeps
both sockets open, as a dropped cable or a NAT that forgot the connection does; no
process is killed and nobody says FIN.

A deploy sleeping in a hook on the app host (through `fab`, `db.access: tunnel` as in
environments/local.yml) when the link dies: the command ends within the liveness bound
with one line and the documented exit code, and the lock, whose session lives on the
far side of the dead link (sshd there never notices), is free again within
ssh.alive_interval x (ssh.alive_count + 1)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seed.journal.store import lock_key_sql
from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import whole_state
from tests.faults.matrix import MATRIX, Row
from tests.faults.test_connections import start_fab
from tests.netcut import CuttableLink, cuttable_link, known_hosts_through

INTERVAL, COUNT = 1, 3  # a dead link noticed after 3 s; the lock session's idle limit 4 s


@pytest.fixture
def link(at_v2: Deployment) -> Iterator[CuttableLink]:
    with cuttable_link("127.0.0.1", at_v2.sandbox.spec.ssh_port) as proxy:
        yield proxy


def variant(dep: Deployment, link: CuttableLink, marker: Path) -> Path:
    """local.yml reached through `link`, short liveness settings, a build hook that says
    it started (its pid into `marker`) and then sleeps far longer than the test."""
    directory = dep.home / "envs" / "links"
    directory.mkdir(parents=True, exist_ok=True)
    known = known_hosts_through(
        dep.sandbox.known_hosts, dep.sandbox.spec.ssh_port, link, directory / "known_hosts"
    )
    return dep.variant(
        "links",
        {
            "ssh.port": link.port,
            "ssh.known_hosts": str(known),
            "ssh.alive_interval": INTERVAL,
            "ssh.alive_count": COUNT,
            "ssh.connect_timeout": 1,
            "hooks.timeout": 600,
            "hooks.build.before": f"echo $$$$ > {marker}; exec sleep 300",  # $$: a $
        },
    )


def lock_is_free(dep: Deployment) -> bool:
    """The environment's advisory lock can be taken (and is given back at once), asked on
    a direct session of the test's own."""
    with dep.admin() as conn:
        row = conn.execute(f"select pg_try_advisory_lock({lock_key_sql()})", ("shop",)).fetchone()
        if row and row[0]:
            conn.execute(f"select pg_advisory_unlock({lock_key_sql()})", ("shop",))
            return True
    return False


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if proc.poll() is not None:
            raise AssertionError(f"fab ended before the hook ran:\n{proc.communicate()[0]}")
        assert time.monotonic() < deadline, "the hook never started"
        time.sleep(0.1)


def test_a_deploy_whose_link_dies_in_a_hook_ends_and_frees_the_lock(
    at_v2: Deployment, link: CuttableLink, tmp_path: Path
) -> None:
    before = whole_state(at_v2)
    marker = tmp_path / "hook.pid"
    envdir = variant(at_v2, link, marker)
    proc = start_fab(at_v2, "local", "upgradedb", "--ref", "v2", envdir=envdir)
    try:
        wait_for(marker, proc)
        assert not lock_is_free(at_v2)
        cut = time.monotonic()
        link.cut()
        lock_free_after = fab_ended_after = None
        while lock_free_after is None or fab_ended_after is None:
            now = time.monotonic() - cut
            assert now < 90, f"after {now:.0f}s: lock free {lock_free_after}, fab {proc.poll()}"
            if lock_free_after is None and lock_is_free(at_v2):
                lock_free_after = now
            if fab_ended_after is None and proc.poll() is not None:
                fab_ended_after = now
            time.sleep(0.2)
        out = proc.communicate()[0]
        last = out.strip().splitlines()[-1]
        assert lock_free_after < 4 + 20  # the idle limit, and a generous margin
        assert last.startswith("seed: deploy of v2 refused at pre-flight: hook before_build")
        assert f"127.0.0.1:{link.port}: no answer for 3 s (link down?); nothing changed" in last
        assert proc.returncode == 4, out
        assert "Traceback" not in out and "Exception" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(marker.read_text()), signal.SIGKILL)  # the hook's sleep, ours
    # the old state, served; only the new release's folder stayed (the link was gone)
    after = whole_state(at_v2)
    assert set(before["releases"]) <= set(after.pop("releases"))
    before.pop("releases")
    assert after == before
    MATRIX.append(
        Row(
            "ssh link blackholed during a hook",
            f"old state; exit 4 in {fab_ended_after:.0f}s",
            lock_free_after,
            "itself (lock free)",
        )
    )
