"""seed.journal.store against the session sandbox's real sshd: the records, read in one command."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from seed.config.environment import Environment
from seed.journal.record import RunRecord
from seed.journal.store import Journal
from seed.remote.ssh import Remote
from seed.run.report import Scrubber


@pytest.fixture()
def journal(sandbox_env: Environment, tmp_path: Path) -> Iterator[Journal]:
    env = dataclasses.replace(sandbox_env, state_dir=str(tmp_path / "state"))
    remote = Remote(env, env.roles.db).open()
    try:
        yield Journal(env, remote, tmp_path / "local", Scrubber())
    finally:
        remote.close()


def test_records_are_read_in_one_command_oldest_first(journal: Journal) -> None:
    assert journal.records() == []  # no journal directory yet
    journal.ensure()
    assert journal.records() == []
    ids = [f"20261128T{i:06d}Z-{i % 7:04x}" for i in range(300)]
    for deploy_id in reversed(ids):  # written newest first: the order comes from the ids
        record = RunRecord(deploy_id=deploy_id, message="a\n==> ./x <==\nb", extra={"n": 1})
        journal.write(deploy_id, record)
    only = journal.records()
    assert [r.deploy_id for r in only] == ids
    assert only[0].message == "a\n==> ./x <==\nb"  # the separator inside a value
    assert only[0].extra == {"n": 1}  # a key this version does not know, kept
    assert only == journal._records_one_by_one()
    # a damaged record and a file that is no record are left out, as one by one
    directory = Path(journal.dir)
    (directory / "20261128T999999Z-dead.json").write_text('{"id": "half')
    (directory / "notes.txt").write_text("not a record")
    (directory / "sub.json").mkdir()
    assert journal.records() == only == journal._records_one_by_one()
    single = Journal(journal.env, journal.remote, Path("/nonexistent"), Scrubber())
    assert [r.to_json() for r in single.records()] == [r.to_json() for r in only]
