"""Deploy modes (seed.deploy.plan.choose_mode), batches (seed.deploy.rolling) and downtime as it
happened (seed.deploy.availability)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from seed.config.environment import AppConfig
from seed.deploy.availability import Availability
from seed.deploy.plan import CODE_ONLY, MAINTENANCE, ONLINE, choose_mode
from seed.deploy.rolling import batches
from seed.errors import PreflightFailed


def test_the_plan_chooses_code_only_without_a_pending_migration() -> None:
    assert choose_mode([], "auto", None) == (CODE_ONLY, "no migration pending")
    assert choose_mode(["shop.0002_x"], "auto", None, ["RemoveField x"]) == (
        MAINTENANCE,
        "1 migration(s) pending; not online: RemoveField x",
    )


def test_the_plan_chooses_online_when_nothing_is_against_it() -> None:
    assert choose_mode(["shop.0002_x", "shop.0003_y"], "auto", None, []) == (
        ONLINE,
        "2 migration(s) pending, all expand-only",
    )
    mode, why = choose_mode(["shop.0002_x"], "auto", None, ["a", "b", "c"])
    assert mode == MAINTENANCE and why.endswith("not online: a (+2 more)")
    # not assessed (a caller that did not ask): never online
    assert choose_mode(["shop.0002_x"], "auto", None)[0] == MAINTENANCE
    # online asked for a deploy that does not qualify: refused with the reason
    with pytest.raises(PreflightFailed, match=r"--mode online refused: .*not online: RemoveField"):
        choose_mode(["shop.0002_x"], "auto", "online", ["RemoveField in shop.0002_x"])
    # online or maintenance asked where online qualifies: at least that safe
    assert choose_mode(["shop.0002_x"], "auto", "online", [])[0] == ONLINE
    assert choose_mode(["shop.0002_x"], "online", "maintenance", [])[0] == MAINTENANCE
    assert choose_mode([], "auto", "online", [])[0] == ONLINE  # a backup while serving
    with pytest.raises(PreflightFailed, match=r"--mode online refused"):
        choose_mode(["shop.0002_x"], "maintenance", "online", [])


def test_a_mode_may_be_raised_never_lowered() -> None:
    mode, why = choose_mode([], "maintenance", None)
    assert mode == MAINTENANCE and why.startswith("deploy.mode maintenance")
    assert choose_mode([], "auto", "maintenance")[0] == MAINTENANCE
    with pytest.raises(PreflightFailed, match=r"--mode code-only refused: 1 migration"):
        choose_mode(["shop.0002_x"], "auto", "code-only")
    with pytest.raises(PreflightFailed, match=r"deploy.mode code-only refused"):
        choose_mode(["shop.0002_x"], "code-only", None)
    # --mode cannot lower what deploy.mode raised
    with pytest.raises(PreflightFailed, match=r"--mode code-only refused"):
        choose_mode([], "maintenance", "code-only")
    with pytest.raises(PreflightFailed, match=r"--mode blue-green: not a mode"):
        choose_mode([], "auto", "blue-green")


def app(batch: str) -> AppConfig:
    fields: dict[str, Any] = dict(
        repo="r", ref="main", deploy_to="/srv", python="python3", settings="s", env={},
        keep_releases=5, pip_args=(), restart=None, maintenance_on=None, maintenance_off=None,
        health=None,
    )  # fmt: skip
    return AppConfig(**fields, rolling_batch=batch)


def test_batch_sizes() -> None:
    assert app("1").batch_size(5) == 1
    assert app("2").batch_size(5) == 2
    assert app("50%").batch_size(5) == 2
    assert app("10%").batch_size(5) == 1  # never 0
    assert app("100%").batch_size(5) == 5
    hosts: list[Any] = ["a", "b", "c", "d", "e"]
    assert batches(hosts, 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_downtime_counts_only_while_no_host_serves() -> None:
    a = Availability()
    a.start(["h1", "h2"])
    a.out("h1")  # one host out: the other serves
    time.sleep(0.05)
    a.back("h1")
    assert a.seconds() == 0 and a.to_json() == []
    a.out("h1", "h2")  # maintenance on
    time.sleep(0.1)
    assert a.down
    a.back("h2")
    assert not a.down
    assert 0.1 <= a.seconds() < 0.5
    [interval] = a.to_json()
    assert interval["to"] is not None and interval["seconds"] == a.seconds()


def test_a_run_that_ends_down_counts_until_the_end_and_a_first_deploy_not_at_all() -> None:
    a = Availability()
    a.start(["h1"])
    a.out("h1")
    time.sleep(0.05)
    assert a.down and a.seconds() >= 0.05 and a.to_json()[0]["to"] is None
    first = Availability()
    first.start([])  # nothing served before: nothing to lose
    first.out("h1")
    time.sleep(0.02)
    first.back("h1")
    assert first.seconds() == 0
