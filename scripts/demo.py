"""`make demo`: the sandbox and Seed's main job end to end, exactly as a user types it.

Starts a fresh sandbox, deploys v1 and v2 (success), then bad-data and bad-crash
(which must fail and be rolled back automatically: exit 5), then v3 (success),
and prints a summary table. Exits 0 when every step behaved as expected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAB = str(Path(sys.executable).parent / "fab")

STEPS: list[tuple[str, list[str], int]] = [
    ("fresh sandbox", ["sandbox.down", "--purge"], 0),
    ("sandbox up", ["sandbox.up"], 0),
    ("deploy v1", ["local", "upgradedb", "--ref", "v1"], 0),
    ("deploy v2 (expand)", ["local", "upgradedb", "--ref", "v2"], 0),
    ("deploy bad-data", ["local", "upgradedb", "--ref", "bad-data"], 5),
    ("deploy bad-crash", ["local", "upgradedb", "--ref", "bad-crash"], 5),
    ("deploy v3 (contract)", ["local", "upgradedb", "--ref", "v3"], 0),
]


def run(args: list[str]) -> int:
    print(f"\n$ fab {' '.join(args)}", flush=True)
    return subprocess.run([FAB, *args], cwd=REPO, stdin=subprocess.DEVNULL, check=False).returncode


def app_version() -> str:
    port = os.environ.get("SEED_SANDBOX_APP_PORT", "8765")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version/", timeout=10) as r:
            return str(r.read().decode())
    except OSError as exc:
        return f"unreachable ({exc})"


def main() -> int:
    rows = []
    for name, args, expected in STEPS:
        started = time.monotonic()
        code = run(args)
        rows.append((name, expected, code, time.monotonic() - started))
        if name.startswith("sandbox") and code != 0:
            break
    serving = app_version()
    rows.append(("app serves v3", 0, 0 if serving == "v3" else 1, 0.0))

    print("\nSeed demo summary")
    print(f"{'step':<24} {'expected':>8} {'exit':>5}  {'result':<11} {'time':>8}")
    ok = True
    for name, expected, code, seconds in rows:
        good = code == expected
        ok &= good
        result = "as expected" if good else "WRONG"
        print(f"{name:<24} {expected:>8} {code:>5}  {result:<11} {seconds:7.1f}s")
    print(f"\nthe app at the end: {serving}")
    print("the sandbox keeps running: try `fab local upgradedb --ref v3`, `fab sandbox.status`,")
    print("reports are in .seed/local/reports/; stop it with `fab sandbox.down`.")
    print("demo: " + ("every step behaved as expected" if ok else "SOMETHING WENT WRONG"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
