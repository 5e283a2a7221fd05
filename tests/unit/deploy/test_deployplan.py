"""The plan of a deploy, computed once (seed.deploy.plan) and the one backup-fits check."""

from __future__ import annotations

import pytest

from seed.backup.dump import Space
from seed.deploy.migrate import MigrationState
from seed.deploy.plan import DeployPlan
from seed.errors import PreflightFailed
from seed.undo.reverse import assess, choose


def plan_of(state: MigrationState) -> DeployPlan:
    rp = assess(state.plan, state.reverse)
    return DeployPlan(state, rp, *choose("auto", rp))


ADD = {"type": "AddField", "describe": "Add field x", "reversible": True, "tables": ["t"]}
DROP = {"type": "RemoveField", "describe": "Remove field y", "reversible": True, "tables": ["t"]}


def test_one_plan_for_the_report_the_plan_command_and_the_rollback() -> None:
    state = MigrationState(
        applied=[("shop", "0001_initial")],
        plan=[
            {"app": "shop", "name": "0002_x", "atomic": True, "operations": [ADD]},
            {"app": "shop", "name": "0003_y", "atomic": True, "operations": [DROP]},
        ],
        reverse={"targets": {"shop": "0001_initial"}},
    )
    plan = plan_of(state)
    assert plan.pending == ["shop.0002_x", "shop.0003_y"]
    assert plan.to_record().to_json() == {
        "applied_before": ["shop.0001_initial"],
        "planned": ["shop.0002_x", "shop.0003_y"],
        "plan": state.plan,
        "applied": [],
    }
    shown = plan.to_json()
    assert shown["per_app"] == {"shop": ["0002_x", "0003_y"]}
    assert shown["classes"] == ["additive", "destructive"]
    assert shown["rollback"]["method"] == "restore" == plan.rollback_method
    assert "destroys data" in plan.rollback_why
    plan.refuse_unknown()  # nothing unknown: no refusal


def test_applied_migrations_the_target_does_not_know_refuse() -> None:
    state = MigrationState(applied=[], plan=[], unknown_applied=[("shop", "0009_future")])
    plan = plan_of(state)
    assert plan.to_json()["unknown_applied"] == ["shop.0009_future"]
    with pytest.raises(PreflightFailed, match=r"does not know \(shop.0009_future\)"):
        plan.refuse_unknown()


def test_space_fits_and_says_why_not() -> None:
    space = Space(10_000, 4_000, 3_000, "/backups", "db1", "")
    assert not space.fits
    assert (
        space.refusal()
        == "backup dir /backups on db1 has 3.0 KB free, the backup needs about 4.0 KB"
    )
    assert Space(10_000, 4_000, 4_000, "/b", "db1", "").fits
