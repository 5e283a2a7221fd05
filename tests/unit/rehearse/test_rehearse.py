"""Rehearsal arithmetic (seed/rehearse/rehearsal.py): lock spans, extrapolation, budgets; and the
lock sampler against a real session holding a real lock."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import psycopg

from seed.config.environment import Environment, RehearseConfig
from seed.rehearse import rehearsal as rh


def item(**more: Any) -> rh.Rehearsed:
    base: dict[str, Any] = {
        "migration": "shop.0005_x",
        "seconds": 2.0,
        "locks": [
            {"table": "big", "mode": "AccessExclusiveLock", "seconds": 1.5, "blocks_writes": True},
            {"table": "small", "mode": "RowExclusiveLock", "seconds": 0.5, "blocks_writes": False},
        ],
        "rewrites": ["big"],
        "rows_touched": {},
        "rows": {"big": 1000, "small": 10},
    }
    return rh.Rehearsed(**{**base, **more})


def test_extrapolation_scales_by_the_largest_ratio_per_table() -> None:
    it = item()
    rh.extrapolate(it, {"big": 10_000, "small": 10, "other": 10**9})
    assert it.scale == 10.0 and it.predicted_seconds == 20.0
    assert [lk["seconds"] for lk in it.predicted_locks] == [15.0, 0.5]
    still = item(rows={})
    rh.extrapolate(still, {"big": 10_000})
    assert still.scale == 1.0 and still.predicted_seconds == 2.0


def test_budgets(sandbox_env: Environment) -> None:
    it = item()
    rh.extrapolate(it, {"big": 10_000})
    env = replace(sandbox_env, rehearse=RehearseConfig(max_lock_seconds=10, max_total_seconds=30))
    assert rh.over_budget(env, [it], it.predicted_seconds) == [
        "shop.0005_x holds AccessExclusiveLock on big ~15.0 s at scale > max_lock_seconds 10"
    ]
    env = replace(sandbox_env, rehearse=RehearseConfig(max_total_seconds=5))
    assert rh.over_budget(env, [it], it.predicted_seconds)[0].startswith("all migrations ~20.0 s")
    assert rh.over_budget(sandbox_env, [it], it.predicted_seconds) == []  # no budget: no gate


def test_the_sampler_sees_a_held_lock(scratch_db: Any) -> None:
    _, conn = scratch_db()
    conn.execute("create table t (id int)")
    dsn = conn.info.dsn
    holder = psycopg.connect(dsn, application_name="seed-test-holder")
    watch = psycopg.connect(dsn, autocommit=True)
    try:
        with rh.LockSampler(watch, "seed-test-holder") as sampler:
            with holder.transaction():
                holder.execute("lock table t in access exclusive mode")
                time.sleep(0.4)
            time.sleep(0.1)
        locks = sampler.locks()
        assert watch.closed  # the sampler closes its connection when it stops
    finally:
        holder.close()
        watch.close()
    assert locks[0]["table"] == "t" and locks[0]["mode"] == "AccessExclusiveLock"
    assert 0.25 < locks[0]["seconds"] < 0.8 and locks[0]["blocks_writes"]
    assert sampler.samples >= 5
