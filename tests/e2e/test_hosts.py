"""Several app hosts: release, switch and restart fan out; one host failing puts every
host back. Each extra host is an sshd in its own network namespace (a veth pair; a
loopback port where `ip netns` is unavailable) and its own mount namespace, seeing its
own `deploy_to` (sandbox.hosts; root only)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.hosts import ExtraHost, extra_hosts, netns_available
from tests.e2e.conftest import DELETE, Deployment

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

# cwd is deploy_to; v3 fails to restart on a host that has shared/fail-restart
RESTART = (
    "if grep -qx v3 current/VERSION && [ -e shared/fail-restart ]; then "
    "echo 'restart failed on this host' >&2; exit 1; fi; "
    'echo "$(cat current/VERSION)" >> shared/restart.log'
)


@pytest.fixture(scope="module")
def hosts(deployment: Deployment) -> Iterator[tuple[Deployment, list[ExtraHost], Path]]:
    deployment.reset()
    # the hosts' files are server files (shared/env holds the database password): under
    # the sandbox's server tree, never the control machine's home; removed afterwards
    base = deployment.root / "server" / "extra-hosts"
    with extra_hosts(deployment.sandbox, deployment.deploy_to, 3, base) as extra:
        envdir = deployment.variant(
            "three-hosts",
            {
                "roles.app": [h.address for h in extra],
                "app.restart": RESTART,
                "app.maintenance": DELETE,
                "app.health": DELETE,
                "app.parallel": 3,
            },
        )
        for ref in ("v1", "v2"):
            res = deployment.fab("local", "upgradedb", "--ref", ref, envdir=envdir)
            assert res.returncode == 0, res.stdout + res.stderr
        yield deployment, extra, envdir
    shutil.rmtree(base, ignore_errors=True)


def current(host: ExtraHost) -> str:
    return os.readlink(host.root / "current")


def test_every_host_gets_the_release_and_restarts(
    hosts: tuple[Deployment, list[ExtraHost], Path],
) -> None:
    dep, extra, _ = hosts
    report: dict[str, Any] = dep.last_report()
    rid = report["release_after"]
    for host in extra:
        assert current(host) == f"releases/{rid}"
        assert (host.root / "releases" / rid / "VERSION").read_text().strip() == "v2"
        assert (host.root / "shared" / "restart.log").read_text().split() == ["v1", "v2"]
        assert (host.root / "shared" / "env").stat().st_mode & 0o777 == 0o600
    # the migrate host (not serving) has the release too, but no `current` switch
    assert (dep.deploy_to / "releases" / rid).is_dir()
    outcomes = {k.split("@")[-1]: v for k, v in report["hosts"].items()}
    assert len(outcomes) == 4  # three app hosts and the migrate host
    if netns_available():  # real separate network stacks, reached over veth pairs
        assert all(h.netns and h.ip.startswith("10.") and h.port == 22 for h in extra)
        assert len({h.ip for h in extra}) == 3
    for host in extra:
        assert outcomes[host.address] == {"upload release": "ok", "switch": "ok", "restart": "ok"}


def test_one_host_failing_puts_every_host_back(
    hosts: tuple[Deployment, list[ExtraHost], Path],
) -> None:
    dep, extra, envdir = hosts
    before = {h.address: current(h) for h in extra}
    figures = dep.figures()
    (extra[1].root / "shared" / "fail-restart").write_text("")
    try:
        res = dep.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    finally:
        (extra[1].root / "shared" / "fail-restart").unlink()
    output = res.stdout + res.stderr
    assert res.returncode == 5, output
    report = dep.last_report()
    assert extra[1].address in report["message"] and "restart" in report["message"]
    outcomes = {k.split("@")[-1]: v for k, v in report["hosts"].items()}
    assert outcomes[extra[1].address]["restart"].startswith("failed: ")
    for i in (0, 2):  # the others restarted fine, and were put back all the same
        assert outcomes[extra[i].address]["restart"] == "ok"
    assert {h.address: current(h) for h in extra} == before
    for host in extra:
        # v3 was started on two hosts, then every host restarted on v2 again
        assert (host.root / "shared" / "restart.log").read_text().split()[-1] == "v2"
        assert not (host.root / "releases" / report["release_after"]).exists()
    assert dep.figures() == figures
