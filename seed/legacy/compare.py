"""An import's record (`import.json`, kept with its rejects.csv and duplicates.csv in
`.seed/<env>/imports/<id>/`) and the differences of a run from an earlier one:
staging's import first, then production's shows what differs before it loads.

What is compared: the source data (a digest of the extracted rows, so the same export
as CSV or .xlsx compares equal), the mapping file, the deployed release, each step's
counts, the reject reasons (by kind, the offending value left out) and, for the same
source, which rows are rejected here and not there and the other way round. Rows that
would be new or would update an existing row are shown too; they are expected to differ
between environments and are not counted as differences.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seed.errors import ConfigError, PreflightFailed

RECORD = "import.json"
KEYS = "keys.tsv.gz"  # per valid record: digest of its key, digest of its values
COUNTS = (  # (key, label, counted as a difference)
    ("rows_in", "rows in", True),
    ("rejected", "rejected", True),
    ("merged", "merged", True),
    ("valid", "valid", True),
    ("new", "new rows", False),
    ("existing", "existing rows updated", False),
)
_VALUE = re.compile(r":\s*'.*'$")


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of the extracted rows' text (columns and values, in order)."""
    h = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame.fillna("\x00"), index=False).to_numpy().tobytes())
    return h.hexdigest()


def key_digests(frame: pd.DataFrame, key: list[str]) -> dict[str, str]:
    """Each record's key digest → digest of its values (cleaned text): which records a
    later run has that this one lacks, and which it has with other values. Digests,
    not the values (though a guessed key can be confirmed with one)."""
    if frame.empty:
        return {}
    filled = frame.fillna("\x00")
    keys = pd.util.hash_pandas_object(filled[key], index=False).to_numpy()
    rows = pd.util.hash_pandas_object(filled, index=False).to_numpy()
    return {f"{k:016x}": f"{r:016x}" for k, r in zip(keys.tolist(), rows.tolist(), strict=True)}


def write_keys(folder: Path, digests: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{k}\t{v}\n" for k, v in digests.items())
    with gzip.open(folder / KEYS, "wt", encoding="ascii") as f:
        f.write(text)


def read_keys(record: dict[str, Any]) -> dict[str, str] | None:
    try:
        with gzip.open(Path(record["folder"]) / KEYS, "rt", encoding="ascii") as f:
            return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    except (OSError, ValueError, KeyError):
        return None


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reason_kind(reason: str) -> str:
    """`email: not an email address: 'x@'` → `email: not an email address`."""
    return _VALUE.sub("", reason)


def reason_counts(rejects: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(reason_kind(r["reason"]) for r in rejects).most_common())


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the import record: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not an import record (bad JSON: {exc})") from None
    if not isinstance(data, dict) or "counts" not in data or "target" not in data:
        raise ConfigError(f"{path}: not an import record (import.json of an import run)")
    data["folder"] = str(path.parent)
    return data


def find_earlier(local_root: Path, env_name: str, table: str) -> dict[str, Any]:
    """The newest loaded import into `table` on `env_name` (this machine's records)."""
    folder = local_root / env_name / "imports"
    for path in sorted(folder.glob(f"*/{RECORD}"), reverse=True):
        try:
            record = read_record(path)
        except ConfigError:
            continue
        if record.get("outcome") == "loaded" and record["target"].get("table") == table:
            return record
    raise PreflightFailed(
        f"no import into {table} on {env_name} yet ({folder}): run the same import there "
        f"first, or pass --compare-with the path of its {RECORD}"
    )


def earlier_record(local_root: Path, spec: str, table: str) -> dict[str, Any]:
    """`spec`: an environment's name, or the path of a kept import.json (or its folder)."""
    path = Path(spec)
    if "/" in spec or spec.endswith(".json") or path.exists():
        if path.is_dir():
            path = path / RECORD
        record = read_record(path)
        if record["target"].get("table") != table:
            raise ConfigError(
                f"{path}: an import into {record['target'].get('table')}, not into {table}"
            )
        return record
    return find_earlier(local_root, spec, table)


def rejected_rows(record: dict[str, Any]) -> dict[int, str]:
    path = Path(record["folder"]) / "rejects.csv"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {int(row["row"]): row["reason"] for row in csv.DictReader(f)}
    except (OSError, ValueError, KeyError):
        return {}


@dataclass
class Comparison:
    against: dict[str, Any]  # env, id, finished of the earlier run
    lines: list[str] = field(default_factory=list)
    differences: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"against": self.against, "differences": self.differences, "lines": self.lines}


def compare(
    before: dict[str, Any],
    now: dict[str, Any],
    now_rejects: dict[int, str],
    now_keys: dict[str, str] | None = None,
) -> Comparison:
    """`before` (the kept record of the earlier run) vs `now` (this run, not loaded yet);
    `now_keys`: this run's key_digests()."""
    where = before.get("env", "?")
    result = Comparison(
        against={"env": where, "id": before.get("id"), "finished": before.get("finished")}
    )
    lines = result.lines

    def differ(line: str) -> None:
        result.differences += 1
        lines.append(f"DIFFERS  {line}")

    same_source = before["source"].get("digest") == now["source"].get("digest")
    rows_then, rows_now = before["counts"].get("rows_in", 0), now["counts"].get("rows_in", 0)
    if same_source:
        lines.append(
            f"same     source data: {rows_now:,} rows (digest {now['source']['digest'][:12]})"
        )
    else:
        differ(
            f"source data: {where} read {rows_then:,} rows (digest "
            f"{str(before['source'].get('digest'))[:12]}), this run {rows_now:,} (digest "
            f"{str(now['source'].get('digest'))[:12]})"
        )
    if before["mapping"].get("digest") == now["mapping"].get("digest"):
        lines.append(f"same     mapping {now['mapping']['path']}")
    else:
        differ(f"mapping: {where} used a different {Path(now['mapping']['path']).name}")
    if before.get("release") == now.get("release"):
        lines.append(f"same     release {now.get('release')}")
    else:
        differ(f"release: {where} had {before.get('release')}, here {now.get('release')}")
    for key, label, counts in COUNTS:
        a, b = before["counts"].get(key, 0), now["counts"].get(key, 0)
        if a == b:
            lines.append(f"same     {label}: {b:,}")
        elif counts:
            differ(f"{label}: {a:,} on {where}, {b:,} here ({b - a:+,})")
        else:
            lines.append(f"expected {label}: {a:,} on {where}, {b:,} here (its data differs)")
    kinds_then, kinds_now = before.get("reasons", {}), now.get("reasons", {})
    for kind in sorted(set(kinds_then) | set(kinds_now)):
        a, b = kinds_then.get(kind, 0), kinds_now.get(kind, 0)
        if a != b:
            differ(f"rejected for {kind!r}: {a:,} on {where}, {b:,} here")
    if same_source:
        then = rejected_rows(before)
        only_now = sorted(set(now_rejects) - set(then))
        only_then = sorted(set(then) - set(now_rejects))
        if only_now:
            shown = ", ".join(f"{r} ({now_rejects[r]})" for r in only_now[:5])
            more = f" and {len(only_now) - 5} more" if len(only_now) > 5 else ""
            differ(f"rejected here, loaded on {where}: row {shown}{more}")
        if only_then:
            shown = ", ".join(str(r) for r in only_then[:10])
            more = f" and {len(only_then) - 10} more" if len(only_then) > 10 else ""
            differ(f"rejected on {where}, valid here: row {shown}{more}")
    then_keys = read_keys(before) if now_keys is not None else None
    if then_keys is not None and now_keys is not None and then_keys != now_keys:
        added = sum(1 for k in now_keys if k not in then_keys)
        gone = sum(1 for k in then_keys if k not in now_keys)
        changed = sum(1 for k, v in now_keys.items() if k in then_keys and then_keys[k] != v)
        differ(
            f"valid records by key ({', '.join(now['target'].get('key', [])) or 'key'}): "
            f"{added:,} only here, {gone:,} only on {where}, {changed:,} with other values"
        )
    elif then_keys is not None:
        lines.append(f"same     valid records, key by key: {len(then_keys):,}")
    return result
