"""Code-only deploys (issue: zero downtime for deploys without migrations), end to end.

The plan chooses the mode from the real pending migrations; a deploy with none switches
the app while it serves (drain, switch, graceful reload, health naming the release,
undrain) and never touches the database; a failure or a rollback switches back the same
way. HTTP clients hammer the app throughout: what they see is what a user would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.load import Load


@pytest.fixture(scope="module")
def at_v2(deployment: Deployment) -> Iterator[Deployment]:
    deployment.reset()
    deployment.deploy("v1", "v2")
    yield deployment


def steps_of(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["outcome"] for s in report["steps"]}


def outage(load: Load) -> float:
    """Seconds from the first failed request to the last one (0: none failed)."""
    bad = sorted(a.at for a in load.failed)
    return bad[-1] - bad[0] if bad else 0.0


def test_the_plan_chooses_the_mode_from_the_pending_migrations(at_v2: Deployment) -> None:
    same = at_v2.fab("local", "plan", "--ref", "v2", "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["mode"] == {"mode": "code-only", "why": "no migration pending"}
    v3 = at_v2.fab("local", "plan", "--ref", "v3", "--json")
    assert json.loads(v3.stdout)["mode"]["mode"] == "maintenance"
    before = at_v2.current()
    refused = at_v2.fab("local", "upgradedb", "--ref", "v3", "--mode", "code-only")
    assert refused.returncode == 4, refused.stderr
    assert "--mode code-only refused: 1 migration(s) pending" in refused.stderr
    assert "nothing changed" in refused.stderr
    assert at_v2.current() == before


def test_a_deploy_without_migrations_keeps_the_site_serving(at_v2: Deployment) -> None:
    figures = at_v2.figures()
    old = at_v2.current()
    with Load(at_v2.app_port) as load:
        res = at_v2.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stderr
    report = at_v2.last_report()
    assert report["mode"] == "code-only" and report["mode_why"] == "no migration pending"
    steps = steps_of(report)
    assert "maintenance on" not in steps and "migrate" not in steps
    assert steps["switch 1/1"] == "ok" and steps["backup"] == "skipped"
    assert report["downtime_seconds"] == 0
    assert load.failed == [], load.summary()
    assert len(load.answers) > 20
    # the old release answered, then the new one, and only it once switched
    new = report["release_after"]
    assert load.releases() == [old.split("/")[-1] if old else "", new], load.releases()
    assert at_v2.current() == f"releases/{new}"
    assert at_v2.figures() == figures  # the database was not touched
    history = json.loads(at_v2.fab("local", "history", "--json").stdout)[0]
    assert (history["mode"], history["downtime_seconds"]) == ("code-only", 0)


def test_rolling_back_a_code_only_deploy_switches_back_while_serving(at_v2: Deployment) -> None:
    deployed = at_v2.last_report()
    assert deployed["mode"] == "code-only"
    with Load(at_v2.app_port) as load:
        res = at_v2.fab("local", "rollback")
    assert res.returncode == 0, res.stderr
    report = at_v2.last_report()
    assert report["rollback"]["method"] == "code"
    assert report["downtime_seconds"] == 0
    assert load.failed == [], load.summary()
    assert at_v2.current() == f"releases/{deployed['release_before']}"
    assert "maintenance on" not in steps_of(report)


def test_a_failing_code_only_deploy_is_switched_back(at_v2: Deployment) -> None:
    """`broken` (v2's schema, its /health/ answers 500) fails its health check after the
    switch: the host goes back to the release it served, the database untouched; the
    outage the report states covers the one the clients saw. (bench/zero_downtime.py holds
    it to 1 s either way on a quiet machine; here, beside the whole suite, the graceful
    reload's edges — when its command returns — may lag the moment the workers changed by
    a second or two, so the report may overstate, never understate.)"""
    figures = at_v2.figures()
    old = at_v2.current()
    envdir = at_v2.variant("quick-health", {"app.health.timeout": 5})
    with Load(at_v2.app_port, paths=("/version/",)) as load:
        res = at_v2.fab("local", "upgradedb", "--ref", "broken", envdir=envdir)
    assert res.returncode == 5, res.stderr
    report = at_v2.last_report()
    assert report["mode"] == "code-only" and report["outcome"] == "rolled back", res.stderr
    assert report["rollback"]["method"] == "code"
    assert "the database was not touched" in report["message"]
    assert at_v2.current() == old
    assert at_v2.http("/version/") == (200, "v2")
    assert at_v2.figures() == figures
    seen, reported = outage(load), report["downtime_seconds"]
    assert seen > 0 and seen - 1.0 <= reported <= seen + 3.0, (reported, load.summary())


def test_an_online_backup_is_taken_while_the_site_serves(at_v2: Deployment) -> None:
    """backup.code_only: online — a verified backup of an exported snapshot, no maintenance,
    counted by the writes rule from its own reading (the app writes throughout)."""
    envdir = at_v2.variant("online", {"backup.code_only": "online"})
    with Load(at_v2.app_port) as load:
        res = at_v2.fab("local", "upgradedb", "--ref", "v2", envdir=envdir)
    assert res.returncode == 0, res.stderr
    report = at_v2.last_report()
    assert report["mode"] == "code-only" and "maintenance on" not in steps_of(report)
    backup = report["backup"]
    assert backup["id"] == report["deploy_id"] and backup["path"] in [
        str(at_v2.backup_dir / name) for name in at_v2.backups()
    ]
    assert [r["event"] for r in report["counter_readings"]] == ["backup"]
    assert load.failed == [], load.summary()
    listed = json.loads(at_v2.fab("local", "backups", "--json").stdout)
    assert any(m["id"] == backup["id"] for m in listed)


def test_build_drain_and_undrain_run_in_order_with_the_host_named(at_v2: Deployment) -> None:
    """app.build in the new release before anything switches; per host drain, then (after
    the switch, reload and health) undrain, told which host and release. A drained host is
    out of traffic: with one host, that is downtime, and the report counts it."""
    log = at_v2.home / "hooks.log"
    log.unlink(missing_ok=True)
    envdir = at_v2.variant(
        "drain",
        {
            "app.build": f'echo "build $(basename "$PWD") $SEED_RELEASE" >> {log}',
            "app.drain": f'echo "drain $SEED_HOST_LABEL $SEED_RELEASE" >> {log}',
            "app.undrain": f'echo "undrain $SEED_HOST $SEED_HOST_PORT" >> {log}',
        },
    )
    res = at_v2.fab("local", "upgradedb", "--ref", "v2", envdir=envdir)
    assert res.returncode == 0, res.stderr
    report = at_v2.last_report()
    rid, [host] = report["release_after"], report["previous_releases"]
    port = host.rsplit(":", 1)[1]
    assert log.read_text().splitlines() == [
        f"build {rid} {rid}",
        f"drain {host} {rid}",
        f"undrain 127.0.0.1 {port}",
    ]
    steps = list(steps_of(report))
    assert steps.index("build") < steps.index("release checks") < steps.index("switch 1/1")
    assert report["downtime_seconds"] > 0 and len(report["downtime"]) == 1
