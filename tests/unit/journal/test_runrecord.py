"""The typed run record (seed.journal.record): one type for journal and report, old records read."""

from __future__ import annotations

import json
from typing import Any

import seed
from seed.journal.record import (
    FREEZE,
    HANDOVER,
    RECORD_VERSION,
    BackupRef,
    Control,
    Migrations,
    Reading,
    RollbackRecord,
    RunRecord,
    Snapshot,
)
from seed.run.report import StepRecord

# a deploy's record as Seed 0.x wrote it before the typed record (version 1): no
# record_version, the write counters under after_migrate / after
VERSION_1 = {
    "seed_version": "0.5.0",
    "environment": "staging",
    "command": "fab staging upgradedb",
    "deploy_id": "20261120T101010Z-abcd",
    "who": "ci@runner",
    "started_at": "2026-11-20T10:10:10Z",
    "finished_at": "2026-11-20T10:11:00Z",
    "outcome": "succeeded",
    "exit_code": 0,
    "message": "deployed v2",
    "kind": "upgradedb",
    "control": {"host": "runner", "pid": 4242},
    "ref": "v2",
    "sha_before": None,
    "sha_after": "b" * 40,
    "release_before": None,
    "release_after": "20261120101010-bbbbbbb",
    "previous_releases": {"app1:22": None},
    "database": {"server_version": 150004, "size_bytes": 9000},
    "migrations": {
        "applied_before": ["shop.0001_initial"],
        "planned": ["shop.0002_x"],
        "plan": [{"app": "shop", "name": "0002_x"}],
        "applied": ["shop.0002_x"],
        "output": "Applying shop.0002_x... OK",
        "attempts": 1,
    },
    "before": {"applied_migrations": ["shop.0001_initial"], "database_properties": {}},
    "backup": {
        "id": "20261120T101010Z-abcd",
        "path": "/b/x.dump",
        "manifest": "/b/x.json",
        "sha256": "f" * 64,
        "size": 812,
        "verified": "full read",
        "seconds": 0.4,
    },
    "after_migrate": {"write_counters": {"public.a": 3}},
    "after": {"checks": {"orders": 5}, "write_counters": {"public.a": 9}},
    "rolled_back_by": "20261121T000000Z-0001",
    "steps": [{"name": "migrate", "started_at": "x", "seconds": 1.5, "outcome": "ok"}],
    "checks": [{"name": "orders", "passed": True}],
}


def test_a_version_1_record_is_read_with_its_counters_as_a_handover() -> None:
    record = RunRecord.from_json(VERSION_1)
    assert record.record_version == 1
    assert record.kind == "upgradedb" and record.outcome == "succeeded"
    assert record.control == Control("runner", 4242)
    assert record.migrations is not None and record.migrations.applied == ["shop.0002_x"]
    assert record.migrations.applied_before == ["shop.0001_initial"]
    assert record.backup is not None
    assert (record.backup.id, record.backup.path, record.backup.size) == (
        "20261120T101010Z-abcd",
        "/b/x.dump",
        812,
    )
    assert record.backup.run == "20261120T101010Z-abcd"
    assert record.backup.details == {"manifest": "/b/x.json", "verified": "full read"}
    assert record.after_checks == {"orders": 5}
    assert record.rolled_back_by == "20261121T000000Z-0001"
    assert record.steps == [StepRecord("migrate", "x", 1.5, "ok", "")]
    assert [(r.event, r.counters) for r in record.counter_readings] == [(HANDOVER, {"public.a": 3})]


def test_rewriting_an_old_record_keeps_what_it_said() -> None:
    """`rollback` writes `rolled_back_by` onto the deploy's record: nothing else may change
    meaning, and keys this version does not know stay."""
    data = {**VERSION_1, "from_a_newer_seed": {"x": [1, 2]}}
    record = RunRecord.from_json(data)
    record.rolled_back_by = "r2"
    out = json.loads(json.dumps(record.to_json()))
    assert out["from_a_newer_seed"] == {"x": [1, 2]}
    assert out["after_migrate"] == VERSION_1["after_migrate"]
    for key in ("migrations", "before", "backup", "previous_releases", "database", "control"):
        assert out[key] == VERSION_1[key], key
    assert out["after"]["checks"] == {"orders": 5}
    assert out["rolled_back_by"] == "r2"
    again = RunRecord.from_json(out)
    assert again.counter_readings == record.counter_readings
    assert again.to_json() == out


def test_a_new_record_round_trips() -> None:
    record = RunRecord(
        environment="local",
        command="fab local upgradedb",
        deploy_id="d-1",
        kind="upgradedb",
        control=Control("here", 1),
        ref="main",
        migrations=Migrations(applied_before=["a.1"], planned=["a.2"]),
        backup=BackupRef("d-1", "/b/d-1.dump", "e" * 64, size=10, seconds=0.1, copy="/c"),
        snapshot=Snapshot("shop_snap_x", "file_copy", 0.5),
        counter_readings=[
            Reading(FREEZE, "t", "1/", {"public.a": 1}, {"public.a": 7}),
            Reading(HANDOVER, "t", error="connection lost"),
        ],
        rollback=RollbackRecord("restore", "destroys data", state={"app": "x"}),
        import_={"counts": {"rows_in": 3}},
    )
    data = json.loads(json.dumps(record.to_json()))
    assert data["record_version"] == RECORD_VERSION and data["seed_version"] == seed.__version__
    assert data["import"] == {"counts": {"rows_in": 3}}
    assert data["rollback"] == {"method": "restore", "why": "destroys data", "state": {"app": "x"}}
    # a deploy's record names what it deploys from the start, null while unknown
    assert data["sha_before"] is None and data["release_before"] is None
    assert data["finished_at"] is None and data["exit_code"] is None
    assert "target" not in data and "hooks_run" not in data  # unknown: left out
    back = RunRecord.from_json(data)
    assert back == record


def test_fields_of_the_wrong_shape_read_as_absent() -> None:
    """A damaged or hand-edited record is read, never a traceback."""
    record = RunRecord.from_json(
        {
            "deploy_id": "x",
            "control": "pid 3",
            "backup": ["no"],
            "migrations": 5,
            "exit_code": "zero",
            "steps": [{"name": "a"}, "b"],
            "rollback": {"why": "no method"},
            "after": [1],
        }
    )
    assert record.control is None and record.backup is None and record.migrations is None
    assert record.exit_code is None and record.rollback is None and record.after_checks is None
    assert [s.name for s in record.steps] == ["a"]


def test_a_manual_backup_is_its_own_run() -> None:
    manual = BackupRef.from_json({"id": "b-1", "path": "/b", "sha256": "s"})
    assert manual is not None and manual.run == "b-1"
    deploy: Any = BackupRef.from_json({"id": "b-2", "deploy_id": "d-2", "path": "/b"})
    assert deploy.run == "d-2"
    assert BackupRef.from_json({"path": "/b"}) is None
