"""seed.legacy.compare: the kept record of an import and a later run's differences from it."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from seed.errors import ConfigError, PreflightFailed
from seed.legacy.compare import (
    compare,
    earlier_record,
    frame_digest,
    key_digests,
    reason_counts,
    reason_kind,
    write_keys,
    write_record,
)
from seed.run.digests import Digester


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "20261128T010000Z-aaaa",
        "env": "staging",
        "finished": "2026-11-28T01:00:00+00:00",
        "outcome": "loaded",
        "target": {"model": "shop.Customer", "table": "shop_customer"},
        "source": {"path": "export.csv", "digest": "d" * 64},
        "mapping": {"path": "import/customers.yml", "digest": "m" * 64},
        "release": "20261127-abc",
        "counts": {
            "rows_in": 10,
            "valid": 6,
            "rejected": 3,
            "merged": 1,
            "new": 6,
            "existing": 0,
        },
        "reasons": {"email: not an email address": 2, "created_at: required, but empty": 1},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def test_reason_kinds_leave_the_value_out() -> None:
    assert reason_kind("email: not an email address: 'x@'") == "email: not an email address"
    assert reason_kind("email: required, but empty") == "email: required, but empty"
    # Django's messages quote the value anywhere in them
    assert (
        reason_kind("model: price: “12,5x” value must be a decimal number.")
        == "model: price: “…” value must be a decimal number."
    )
    rejects = [
        {"row": 2, "reason": "country: not a country: 'Atlantis'"},
        {"row": 3, "reason": "country: not a country: 'Mordor'"},
        {"row": 4, "reason": "email: required, but empty"},
    ]
    assert reason_counts(rejects) == {
        "country: not a country": 2,
        "email: required, but empty": 1,
    }


def test_the_digest_is_of_the_rows_text() -> None:
    a = pd.DataFrame({"x": ["007", "1"], "y": ["a", None]})
    assert frame_digest(a) == frame_digest(a.copy())
    assert frame_digest(a) != frame_digest(pd.DataFrame({"x": ["7", "1"], "y": ["a", None]}))
    assert frame_digest(a) != frame_digest(pd.DataFrame({"x": ["007", "1"], "y": ["a", ""]}))
    assert frame_digest(a) != frame_digest(a.rename(columns={"y": "z"}))


def test_the_same_run_again_has_no_differences(tmp_path: Path) -> None:
    before = record(folder=str(tmp_path))
    now = copy.deepcopy(before)
    result = compare(before, now, {})
    assert result.differences == 0
    assert "same     source data: 10 rows (digest dddddddddddd)" in result.lines
    assert "same     rejected: 3" in result.lines


def test_counts_reasons_and_rows_that_differ_are_listed(tmp_path: Path) -> None:
    (tmp_path / "rejects.csv").write_text(
        "row,reason\n2,email: not an email address: 'a'\n3,email: not an email address: 'b'\n"
        "9,created_at: required, but empty\n"
    )
    before = record(folder=str(tmp_path))
    now = record(
        counts={"valid": 5, "rejected": 4, "new": 1, "existing": 4},
        reasons={"email: not an email address": 3, "created_at: required, but empty": 1},
        release="20261128-def",
    )
    rows = {2: "email: x", 3: "email: y", 5: "email: not an email address: 'c'", 9: "created"}
    result = compare(before, now, rows)
    assert result.lines == [
        "same     source data: 10 rows (digest dddddddddddd)",
        "same     mapping import/customers.yml",
        "DIFFERS  release: staging had 20261127-abc, here 20261128-def",
        "same     rows in: 10",
        "DIFFERS  rejected: 3 on staging, 4 here (+1)",
        "same     merged: 1",
        "DIFFERS  valid: 6 on staging, 5 here (-1)",
        "expected new rows: 6 on staging, 1 here (its data differs)",
        "expected existing rows updated: 0 on staging, 4 here (its data differs)",
        "DIFFERS  rejected for 'email: not an email address': 2 on staging, 3 here",
        # the reason's kind: the offending value stays in rejects.csv, out of the report
        "DIFFERS  rejected here, loaded on staging: row 5 (email: not an email address)",
    ]
    assert result.differences == 5


def test_another_source_is_one_difference_and_no_row_by_row(tmp_path: Path) -> None:
    before = record(folder=str(tmp_path))
    now = record(source={"digest": "e" * 64}, counts={"rows_in": 11, "valid": 7})
    result = compare(before, now, {42: "email: required, but empty"})
    assert result.lines[0] == (
        "DIFFERS  source data: staging read 10 rows (digest dddddddddddd), this run 11 "
        "(digest eeeeeeeeeeee)"
    )
    assert not any("rejected here" in line for line in result.lines)
    assert result.differences == 3


def test_the_earlier_run_is_the_newest_loaded_into_the_same_table(tmp_path: Path) -> None:
    imports = tmp_path / "staging" / "imports"
    write_record(imports / "20261128T010000Z-aaaa", record(id="a"))
    write_record(imports / "20261128T020000Z-bbbb", record(id="b"))
    write_record(imports / "20261128T030000Z-cccc", record(id="c", outcome="dry run"))
    write_record(imports / "20261128T040000Z-dddd", record(id="d", target={"table": "shop_order"}))
    (imports / "20261128T050000Z-eeee").mkdir()
    (imports / "20261128T050000Z-eeee" / "import.json").write_text("{not json")
    found = earlier_record(tmp_path, "staging", "shop_customer")
    assert found["id"] == "b" and found["folder"] == str(imports / "20261128T020000Z-bbbb")
    with pytest.raises(PreflightFailed, match="no import into shop_customer on production yet"):
        earlier_record(tmp_path, "production", "shop_customer")
    # a record handed over as a file (e.g. a CI artifact)
    path = imports / "20261128T010000Z-aaaa" / "import.json"
    assert earlier_record(tmp_path, str(path), "shop_customer")["id"] == "a"
    assert earlier_record(tmp_path, str(path.parent), "shop_customer")["id"] == "a"
    with pytest.raises(ConfigError, match="an import into shop_customer, not into shop_order"):
        earlier_record(tmp_path, str(path), "shop_order")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match="not an import record"):
        earlier_record(tmp_path, str(bad), "shop_customer")


def test_records_are_compared_key_by_key_without_keeping_their_values(tmp_path: Path) -> None:
    then = pd.DataFrame(
        {
            "email": ["a@x.nl", "b@x.nl", "c@x.nl"],
            "phone": ["+31612345678", "", "+31612345679"],
        }
    )
    now = pd.DataFrame(
        {
            "email": ["a@x.nl", "b@x.nl", "d@x.nl"],
            "phone": ["+31612345678", "+31600000000", ""],
        }
    )
    team = Digester.from_secret("team secret")
    write_keys(tmp_path, key_digests(then, ["email"], team), team.key_id)
    stored = (tmp_path / "keys.tsv.gz").read_bytes()
    plain = gzip.decompress(stored)
    assert b"x.nl" not in plain and b"3161" not in plain
    before = record(folder=str(tmp_path), target={"key": ["email"]})
    now_keys = key_digests(now, ["email"], team)
    result = compare(before, record(target={"key": ["email"]}), {}, now_keys, team.key_id)
    assert result.lines[-1] == (
        "DIFFERS  valid records by key (email): 1 only here, 1 only on staging, 1 with other values"
    )
    then_keys = key_digests(then, ["email"], team)
    same = compare(before, record(target={"key": ["email"]}), {}, then_keys, team.key_id)
    assert same.lines[-1] == "same     valid records, key by key: 3"
    assert same.differences == 0


def test_key_digests_are_keyed(tmp_path: Path) -> None:
    """A guessed e-mail address cannot be confirmed without the key: the unkeyed hash of
    a guess is not in the file, the same address under another key digests otherwise;
    records under different keys (or an older Seed's unkeyed file) are not compared."""
    frame = pd.DataFrame({"email": ["a@x.nl", "b@x.nl"], "phone": ["", "+31612345679"]})
    team, other = Digester.from_secret("team secret"), Digester.from_secret("another")
    mine = key_digests(frame, ["email"], team)
    assert set(mine).isdisjoint(key_digests(frame, ["email"], other))
    assert mine == key_digests(frame.copy(), ["email"], team)  # same key: comparable
    unkeyed = pd.util.hash_pandas_object(frame[["email"]], index=False).to_numpy()
    assert not {f"{k:016x}" for k in unkeyed.tolist()} & set(mine)
    write_keys(tmp_path, mine, team.key_id)
    before = record(folder=str(tmp_path), target={"key": ["email"]})
    elsewhere = compare(before, record(), {}, key_digests(frame, ["email"], other), other.key_id)
    assert elsewhere.lines[-1] == (
        "cannot   compare valid records key by key: their digests differ in key (staging's "
        "are under another key); set digests.secret to the same team secret in both environments"
    )
    assert elsewhere.differences == 0
    # keys.tsv.gz as an older Seed wrote it: unkeyed digests, no header line
    with gzip.open(tmp_path / "keys.tsv.gz", "wt", encoding="ascii") as f:
        f.write("".join(f"{k:016x}\t{k:016x}\n" for k in unkeyed.tolist()))
    old = compare(before, record(), {}, mine, team.key_id)
    assert "(staging's were made by an older Seed (unkeyed))" in old.lines[-1]
