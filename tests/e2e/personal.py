"""Personal data in what Seed writes: a scan of every file under the control machine's
`.seed/` and the state host's `state_dir` for the names and e-mail addresses the sandbox's
customers have (issue 22: reports and records carry keyed digests, never the values).

Files documented to hold such values (an import's rejects.csv and duplicates.csv, the
user's work list; backups) are the only allowed hits, and they must be 0600.
"""

from __future__ import annotations

import contextlib
import gzip
import re
from collections.abc import Iterable
from pathlib import Path

from tests.e2e.conftest import Deployment

_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# documented to hold the values themselves, private on the control machine
ALLOWED = ("rejects.csv", "duplicates.csv")


def known_values(dep: Deployment, dbname: str = "shop") -> tuple[set[bytes], re.Pattern[bytes]]:
    """(every customer's e-mail address, lower-cased; a pattern matching any customer's
    full name). Single-word names are left out: the example app's source has them."""
    with dep.admin(dbname) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns"
                " where table_name = 'shop_customer'"
            )
        }
        name = "name" if "name" in columns else "concat_ws(' ', first_name, last_name)"
        rows = conn.execute(f"select email, {name} from shop_customer").fetchall()
    emails = {str(e).strip().lower().encode() for e, _ in rows if e}
    names = {str(n) for _, n in rows if n and " " in str(n)}
    firsts = sorted({n.split(" ", 1)[0] for n in names}, key=len, reverse=True)
    lasts = sorted({n.split(" ", 1)[1] for n in names}, key=len, reverse=True)
    alternation = "(?:{}) (?:{})".format(
        "|".join(map(re.escape, firsts)) or "(?!)", "|".join(map(re.escape, lasts)) or "(?!)"
    )
    return emails, re.compile(alternation.encode())


def hits(dep: Deployment, roots: Iterable[Path], dbname: str = "shop") -> dict[str, list[str]]:
    """Each file under `roots` holding a customer's e-mail address or full name → a few
    of the values found (gzip files read decompressed)."""
    emails, names = known_values(dep, dbname)
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or "envs" in path.parts:
                continue
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":
                with contextlib.suppress(OSError, EOFError):
                    data = gzip.decompress(data)
            values = [m.decode() for m in _EMAIL.findall(data) if m.lower() in emails]
            values += [m.decode() for m in names.findall(data)]
            if values:
                found[str(path)] = values[:3]
    return found


def private_hits(
    dep: Deployment, roots: Iterable[Path], dbname: str = "shop"
) -> dict[str, list[str]]:
    """hits() but for the files allowed to hold values, each checked to be 0600."""
    out = {}
    for path, values in hits(dep, roots, dbname).items():
        if Path(path).name in ALLOWED:
            assert Path(path).stat().st_mode & 0o777 == 0o600, path
            continue
        out[path] = values
    return out
