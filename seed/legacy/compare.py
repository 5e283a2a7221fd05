"""An import's record (`import.json`, kept with its rejects.csv and duplicates.csv in
`.seed/<env>/imports/<id>/`) and the differences of a run from an earlier one:
staging's import first, then production's shows what differs before it loads.

What is compared: the source data (a digest of the extracted rows, so the same export
as CSV or .xlsx compares equal), the mapping file, the deployed release, each step's
counts, the reject reasons (by kind, the offending value left out) and, for the same
source, which rows are rejected here and not there and the other way round. Rows that
would be new or would update an existing row are shown too; they are expected to differ
between environments and are not counted as differences.

Nothing here holds a value read from the export but `rejects.csv` and `duplicates.csv`
(the user's work list: the row numbers, the reasons with the offending values, the merged
keys), which stay private on this machine (0600) and out of the report: the report and
`import.json` carry reasons by kind (the value left out), and `keys.tsv.gz` keyed digests
(seed/run/digests.py), so a guessed e-mail address cannot be confirmed against them.
Digests compare only under the same key (its fingerprint is in the file's first line); a
file of an older Seed (unkeyed digests) or another key is not compared, and the
comparison says so.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seed.errors import ConfigError, PreflightFailed
from seed.run.digests import Digester

RECORD = "import.json"
KEYS = "keys.tsv.gz"  # per valid record: digest of its key, digest of its values
KEYS_HEADER = "#hmac-sha256 "  # + the key's fingerprint: keys.tsv.gz's first line
COUNTS = (  # (key, label, counted as a difference)
    ("rows_in", "rows in", True),
    ("rejected", "rejected", True),
    ("merged", "merged", True),
    ("valid", "valid", True),
    ("new", "new rows", False),
    ("existing", "existing rows updated", False),
)
# the offending value in a reason: clean's `: 'x@'` at the end, Django's “x@” anywhere
_VALUE = re.compile(r":\s*'.*'$")
_DJANGO_VALUE = re.compile(r"“[^”]*”|\"[^\"]*\"")


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of the extracted rows' text (columns and values, in order)."""
    h = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame.fillna("\x00"), index=False).to_numpy().tobytes())
    return h.hexdigest()


def key_digests(frame: pd.DataFrame, key: list[str], digester: Digester) -> dict[str, str]:
    """Each record's key digest → digest of its values (cleaned text): which records a
    later run has that this one lacks, and which it has with other values. Keyed digests
    (HMAC-SHA256 of pandas' row hash, 64 bits): without the key a guessed key value
    cannot be confirmed."""
    if frame.empty:
        return {}
    filled = frame.fillna("\x00")
    keys = pd.util.hash_pandas_object(filled[key], index=False).to_numpy()
    rows = pd.util.hash_pandas_object(filled, index=False).to_numpy()
    secret = digester.key

    def mac(h: int) -> str:
        return hmac.digest(secret, h.to_bytes(8, "big"), "sha256").hex()[:16]

    return {mac(k): mac(r) for k, r in zip(keys.tolist(), rows.tolist(), strict=True)}


def write_keys(folder: Path, digests: dict[str, str], key_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = KEYS_HEADER + key_id + "\n" + "".join(f"{k}\t{v}\n" for k, v in digests.items())
    with gzip.open(folder / KEYS, "wt", encoding="ascii") as f:
        f.write(text)


def read_keys(record: dict[str, Any]) -> tuple[str | None, dict[str, str]] | None:
    """(the fingerprint of the key, digests), None for the key of an older Seed's file
    (unkeyed digests); None when there is no file."""
    try:
        with gzip.open(Path(record["folder"]) / KEYS, "rt", encoding="ascii") as f:
            first = f.readline()
            key_id = first[len(KEYS_HEADER) :].strip() if first.startswith(KEYS_HEADER) else None
            lines = [first] if key_id is None else []
            lines.extend(f)
            return key_id, dict(line.rstrip("\n").split("\t", 1) for line in lines if "\t" in line)
    except (OSError, ValueError, KeyError):
        return None


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reason_kind(reason: str) -> str:
    """`email: not an email address: 'x@'` → `email: not an email address`; Django's
    `“x” value must be a decimal number.` → `“…” value must be a decimal number.`"""
    return _DJANGO_VALUE.sub("“…”", _VALUE.sub("", reason))


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
    now_key_id: str | None = None,
) -> Comparison:
    """`before` (the kept record of the earlier run) vs `now` (this run, not loaded yet);
    `now_keys`: this run's key_digests() under the key `now_key_id`. Rejected rows are
    named with the kind of their reason (the offending value is in rejects.csv only)."""
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
            shown = ", ".join(f"{r} ({reason_kind(now_rejects[r])})" for r in only_now[:5])
            more = f" and {len(only_now) - 5} more" if len(only_now) > 5 else ""
            differ(f"rejected here, loaded on {where}: row {shown}{more}")
        if only_then:
            shown = ", ".join(str(r) for r in only_then[:10])
            more = f" and {len(only_then) - 10} more" if len(only_then) > 10 else ""
            differ(f"rejected on {where}, valid here: row {shown}{more}")
    kept = read_keys(before) if now_keys is not None else None
    then_keys = kept[1] if kept is not None else None
    if kept is not None and kept[0] != now_key_id:
        # different keys (or the unkeyed digests of an older Seed): equal records would
        # look different, so none are compared
        why = (
            f"{where}'s were made by an older Seed (unkeyed)"
            if kept[0] is None
            else f"{where}'s are under another key"
        )
        lines.append(
            "cannot   compare valid records key by key: their digests differ in key "
            f"({why}); set digests.secret to the same team secret in both environments"
        )
        return result
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
