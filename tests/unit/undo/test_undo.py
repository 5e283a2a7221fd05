"""The writes rule (seed.undo.database): what the app wrote since a backup, over every deploy
since."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from sandbox.servers import SandboxInfo
from seed.journal.record import BACKUP, FREEZE, HANDOVER, Reading, RunRecord
from seed.undo.database import REWRITTEN, UNKNOWN, read_counters, writes_since_backup

Scratch = Callable[[], tuple[str, psycopg.Connection[Any]]]


def reading(event: str, db: str = "1/", files: dict[str, int] | None = None, **n: int) -> Any:
    counters = {f"public.{k}": v for k, v in n.items()}
    nodes = {t: (files or {}).get(t.split(".")[1], 100) for t in counters}
    return Reading(event, database=db, counters=counters, files=nodes).to_json()


def deploy(run_id: str, *readings: Any) -> RunRecord:
    """A deploy's record as the journal has it (JSON read back)."""
    return RunRecord.from_json(
        {"deploy_id": run_id, "kind": "upgradedb", "counter_readings": list(readings)}
    )


def test_only_what_the_app_wrote_between_handover_and_freeze_counts() -> None:
    records = [
        # the deploy's migrate wrote 500 rows into a (between its freeze and handover)
        deploy("d1", reading(FREEZE, a=10, b=5), reading(HANDOVER, a=510, b=5)),
        # the app wrote 7 into a and 2 into b, then d2 froze, migrated, handed over
        deploy("d2", reading(FREEZE, a=517, b=7), reading(HANDOVER, a=900, b=7)),
    ]
    now = Reading.from_json(reading(FREEZE, a=903, b=7))
    assert writes_since_backup(records, "d1", now).tables == {"public.a": 10, "public.b": 2}
    assert writes_since_backup(records, "d2", now).tables == {"public.a": 3}
    quiet = Reading.from_json(reading(FREEZE, a=900, b=7))
    assert not writes_since_backup(records, "d2", quiet)


def test_rows_written_after_the_handover_by_the_new_release_are_counted() -> None:
    """Defect 2a: the baseline is the handover (right after migrate), not the deploy's end."""
    records = [deploy("d1", reading(FREEZE, a=1), reading(HANDOVER, a=50))]
    now = Reading.from_json(reading(FREEZE, a=53))
    assert writes_since_backup(records, "d1", now).tables == {"public.a": 3}


def test_a_backup_of_a_serving_database_opens_the_interval_at_its_reading() -> None:
    records = [
        RunRecord.from_json(
            {"deploy_id": "b1", "kind": "backup", "counter_readings": [reading(BACKUP, a=4)]}
        ),
        deploy("d1", reading(FREEZE, a=6), reading(HANDOVER, a=60)),
    ]
    now = Reading.from_json(reading(FREEZE, a=61))
    assert writes_since_backup(records, "b1", now).tables == {"public.a": 3}


def test_what_cannot_be_compared_counts_as_written() -> None:
    swapped = [deploy("d1", reading(FREEZE, a=1), reading(HANDOVER, db="1/", a=5))]
    now = Reading.from_json(reading(FREEZE, db="2/", a=5))  # another database (a restore)
    found = writes_since_backup(swapped, "d1", now)
    assert found.tables == {"public.a": UNKNOWN} and "replaced" in found.why[0]
    backwards = Reading.from_json(reading(FREEZE, a=2))  # statistics reset
    assert writes_since_backup(swapped, "d1", backwards).tables == {"public.a": UNKNOWN}
    truncated = Reading.from_json(reading(FREEZE, files={"a": 200}, a=5))
    assert writes_since_backup(swapped, "d1", truncated).tables == {"public.a": REWRITTEN}
    missing = writes_since_backup(swapped, "gone", now)
    assert missing.tables == {"public.a": UNKNOWN} and "not in the journal" in missing.why[0]
    # a handover with no freeze before it: the interval is lost
    no_freeze = [deploy("d1", reading(FREEZE, a=1), reading(HANDOVER, a=5)), deploy("d2")]
    no_freeze[1].counter_readings = [Reading.from_json(reading(HANDOVER, a=9))]
    found = writes_since_backup(no_freeze, "d1", Reading.from_json(reading(FREEZE, a=9)))
    assert found.tables == {"public.a": UNKNOWN}
    failed = Reading(FREEZE, error="connection lost")
    assert writes_since_backup(swapped, "d1", failed).tables == {"public.a": UNKNOWN}


def test_records_from_before_readings_are_read_as_handovers() -> None:
    old = RunRecord.from_json(
        {
            "deploy_id": "d0",
            "kind": "upgradedb",
            "after_migrate": {"write_counters": {"public.a": 3}},
            "after": {"write_counters": {"public.a": 9}},
        }
    )
    assert old.record_version == 1
    assert [(r.event, r.counters) for r in old.counter_readings] == [(HANDOVER, {"public.a": 3})]
    now = Reading(FREEZE, database="7/", counters={"public.a": 4}, files={"public.a": 1})
    # old readings carry no database identity or file nodes: counters alone compare
    assert writes_since_backup([old], "d0", now).tables == {"public.a": 1}


def test_readings_on_a_real_server(sandbox: SandboxInfo, scratch_db: Scratch) -> None:
    name, admin = scratch_db()
    admin.execute("create table w (id int primary key, v int)")
    admin.execute("create table t (id int primary key)")
    admin.execute("insert into t values (1)")
    start = read_counters(admin, HANDOVER)
    # a writer that has disconnected has flushed its statistics (a live idle session may
    # hold them back for up to PGSTAT_IDLE_INTERVAL, 10 s, in PostgreSQL 15)
    with psycopg.connect(sandbox.admin_conninfo(name), autocommit=True) as writer:
        writer.execute("insert into w select g, g from generate_series(1, 5) g")
        writer.execute("update w set v = 0 where id <= 2")
        writer.execute("delete from w where id = 5")
        with writer.transaction(force_rollback=True):
            writer.execute("insert into w values (99, 99)")  # rolled back: still a write
        writer.execute("truncate t")  # no row counted: the file node changes
    freeze = Reading.from_json(reading(FREEZE))
    records = [RunRecord(deploy_id="r", kind="restore", counter_readings=[freeze, start])]
    deadline = time.monotonic() + 5
    while True:
        found = writes_since_backup(records, "r", read_counters(admin, FREEZE)).tables
        if found == {"public.w": 9, "public.t": REWRITTEN}:
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    assert start.database and start.database.split("/")[0].isdigit()
