"""`make demo`: the sandbox and Seed's main job end to end, exactly as a user types it.

Starts a fresh sandbox (two app hosts behind HAProxy, the cluster archiving its WAL into
an encrypted pgBackRest repository on a host of its own), deploys v1 and v2 (success),
then bad-data and bad-crash (which must fail and be rolled back automatically: exit 5),
bad-data again under backup.strategy pitr (a restore point in the window instead of a
dump; rolled back by restoring the cluster to it), then v3 (a contract migration:
maintenance mode), v4 (expand-only columns: an online deploy, migrated while v3 serves,
"downtime 0.0 s"), v4 again (no migration: a code-only deploy, host by host out of the
balancer and back, the site never down),
imports a generated messy export of 50,000 legacy customers into v4's customers,
and prints a summary table with each deploy's mode and measured downtime. Exits 0
when every step behaved as expected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAB = str(Path(sys.executable).parent / "fab")
EXPORT = str(REPO / ".seed" / "demo-legacy-export.csv")
PITR = REPO / ".seed" / "demo-pitr"  # environments/local.yml with backup.strategy pitr

STEPS: list[tuple[str, list[str], int]] = [
    ("fresh sandbox", ["sandbox.down", "--purge"], 0),
    ("sandbox up", ["sandbox.up", "--pitr"], 0),
    ("deploy v1", ["local", "upgradedb", "--ref", "v1"], 0),
    ("deploy v2 (expand)", ["local", "upgradedb", "--ref", "v2"], 0),
    ("deploy bad-data", ["local", "upgradedb", "--ref", "bad-data"], 5),
    ("deploy bad-crash", ["local", "upgradedb", "--ref", "bad-crash"], 5),
    ("deploy bad-data (pitr)", ["local", "upgradedb", "--ref", "bad-data"], 5),
    ("deploy v3 (contract)", ["local", "upgradedb", "--ref", "v3"], 0),
    ("deploy v4 (online)", ["local", "upgradedb", "--ref", "v4"], 0),
    ("redeploy v4 (no migration)", ["local", "upgradedb", "--ref", "v4"], 0),
    ("messy export (50,000)", ["python", "-m", "sandbox.messy", "50000", EXPORT], 0),
    (
        "import legacy customers",
        ["local", "import-legacy", "--source", EXPORT, "--mapping", "import/customers.yml"],
        0,
    ),
]


# the mode (and downtime) each deploy must have had
MODES = {
    "deploy bad-data (pitr)": ("maintenance", None),
    "deploy v3 (contract)": ("maintenance", None),
    "deploy v4 (online)": ("online", "0.0s"),
    "redeploy v4 (no migration)": ("code-only", "0.0s"),
}


def run(args: list[str], pitr: bool = False) -> int:
    command = [sys.executable, *args[1:]] if args[0] == "python" else [FAB, *args]
    shown = " ".join(args) if args[0] == "python" else f"fab {' '.join(args)}"
    env = dict(os.environ)
    if pitr:
        shown = f"SEED_ENVIRONMENTS={PITR} {shown}"
        env["SEED_ENVIRONMENTS"] = str(PITR)
    print(f"\n$ {shown}", flush=True)
    return subprocess.run(
        command, cwd=REPO, stdin=subprocess.DEVNULL, check=False, env=env
    ).returncode


def pitr_environments() -> None:
    """environments/local.yml with `strategy: pitr`, in a folder of its own."""
    PITR.mkdir(parents=True, exist_ok=True)
    text = (REPO / "environments" / "local.yml").read_text()
    (PITR / "local.yml").write_text(text.replace("  strategy: dump\n", "  strategy: pitr\n", 1))


def last_deploy() -> tuple[str, str]:
    """Mode and downtime of the newest report (after an upgradedb step)."""
    home = Path(os.environ.get("SEED_HOME", REPO / ".seed"))
    reports = sorted((home / "local" / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        return "", ""
    report = json.loads(reports[-1].read_text())
    down = report.get("downtime_seconds")
    return str(report.get("mode") or ""), "" if down is None else f"{down:.1f}s"


def app_version() -> str:
    """What the site serves, through the sandbox's load balancer."""
    port = os.environ.get("SEED_SANDBOX_LB_PORT", "8760")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version/", timeout=10) as r:
            return str(r.read().decode())
    except OSError as exc:
        return f"unreachable ({exc})"


def main() -> int:
    rows = []
    pitr_environments()
    for name, args, expected in STEPS:
        started = time.monotonic()
        code = run(args, pitr="(pitr)" in name)
        mode, down = last_deploy() if "upgradedb" in args else ("", "")
        rows.append((name, expected, code, time.monotonic() - started, mode, down))
        if name.startswith("sandbox") and code != 0:
            break
    serving = app_version()
    rows.append(("app serves v4", 0, 0 if serving == "v4" else 1, 0.0, "", ""))

    print("\nSeed demo summary")
    print(
        f"{'step':<28} {'expected':>8} {'exit':>5}  {'result':<11} {'time':>8}  "
        f"{'mode':<11} {'downtime':>8}"
    )
    ok = True
    for name, expected, code, seconds, mode, down in rows:
        want_mode, want_down = MODES.get(name, (mode, down))
        good = code == expected and mode == want_mode and down == (want_down or down)
        ok &= good
        result = "as expected" if good else "WRONG"
        print(
            f"{name:<28} {expected:>8} {code:>5}  {result:<11} {seconds:7.1f}s  "
            f"{mode:<11} {down:>8}"
        )
    print(
        f"\nthe site (HAProxy, 127.0.0.1:{os.environ.get('SEED_SANDBOX_LB_PORT', '8760')}) "
        f"at the end: {serving}"
    )
    print("the sandbox keeps running: try `fab local plan --ref v4`, `fab local lint --ref")
    print("unsafe`, `fab local rehearse --ref rewrite`, `fab sandbox.status`; the import's")
    print("rejects and duplicates are in .seed/local/imports/;")
    print("reports are in .seed/local/reports/; stop it with `fab sandbox.down`.")
    print("demo: " + ("every step behaved as expected" if ok else "SOMETHING WENT WRONG"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
