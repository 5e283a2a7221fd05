"""SIGKILL of `fab` at every step of a deploy, then recovery (issue: faults).

Each case starts from v2 deployed (with database-level properties a restore
must carry over) and deploys v3 — a destructive migration, so only the backup
can put the data back — with `SEED_FAULT=kill@<point>`: the process kills
itself with SIGKILL there, exactly as `kill -9`, an OOM kill or a lost CI
runner would. Then, as a person or a pipeline would:

1. `upgradedb` refuses (exit 4, "recovery pending") — nothing may run on top;
2. `rollback` (or `upgradedb --resume` where the deploy had passed its post
   checks) recovers, exit 0;
3. the environment is exactly the old state (every table's count + checksum,
   the django_migrations set, database-level settings and ACL, `current`, the
   release folders, the app serving v2) or exactly the new one, and the lock is
   free (a new run takes it).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import whole_state
from tests.faults.matrix import MATRIX, Row


def lock_is_free(dep: Deployment) -> bool:
    held = dep.scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and granted", "postgres"
    )
    return held == 0 and not (dep.state_dir / "lock.json").exists()


def killed_at(dep: Deployment, point: str, *args: str) -> None:
    res = dep.fab("local", *args, extra_env={"SEED_FAULT": f"kill@{point}"})
    assert res.returncode == -9, f"expected SIGKILL at {point!r}:\n{res.stdout}{res.stderr}"


def refused_until_recovered(dep: Deployment) -> None:
    """The next deploy waits while a job of the dead one still runs (the environment is
    locked by it), then refuses: recovery first."""
    res = dep.fab("local", "upgradedb", "--ref", "v3", "--wait", "120")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "recovery pending" in res.stderr and "fab local rollback" in res.stderr


def v3_serving(dep: Deployment) -> dict[str, Any]:
    """What a good v3 deploy leaves: migrations 0001-0005, the v3 release current, serving."""
    applied = dep.scalar("select count(*) from django_migrations where app = 'shop'")
    return {
        "shop migrations": applied,
        "name column": dep.scalar(
            "select count(*) from information_schema.columns "
            "where table_name = 'shop_customer' and column_name = 'name'"
        ),
        "serving": dep.http("/version/")[1].strip(),
        "releases": len(dep.releases()),
    }


# where the next deploy's refusal (exit 4, "recovery pending") is checked as well (it
# is the same check after every point; a few of them keep the suite fast)
REFUSAL_CHECKED = {"before upload release", "migrate job started", "after restart"}

# point -> which state recovery must reach. "old" points recover with `rollback`;
# "new" ones (the migrated database had passed its post checks) with `upgradedb --resume`.
KILL_POINTS = [
    ("before upload release", "old"),
    ("before maintenance on", "old"),
    ("before before-state", "old"),
    ("backup job started", "old"),
    ("before migrate", "old"),
    ("migrate job started", "old"),
    ("before post checks", "old"),
    ("after post checks", "new"),
    ("after switch", "old"),
    ("after restart", "old"),
    ("before maintenance off", "new"),
]


@pytest.mark.parametrize(("point", "expect"), KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_sigkill_of_fab(at_v2: Deployment, point: str, expect: str) -> None:
    stopped_then_recovered(at_v2, "kill", point, expect)


# what each fault makes `fab` end with
RETURN_CODES = {"kill": -9, "int": 130, "term": 143, "cancel": 130}
FAULT_NAMES = {
    "kill": "SIGKILL",
    "int": "SIGINT",
    "term": "SIGTERM",
    "cancel": "CI cancel (INT, TERM, KILL)",
}


def stopped_then_recovered(dep: Deployment, fault: str, point: str, expect: str) -> None:
    """`upgradedb --ref v3` stopped by `fault` at `point`; then the next deploy refuses and
    recovery (`rollback`, or `upgradedb --resume` where the database had passed its post
    checks) gives exactly the old (or new) state back, the lock free."""
    before = whole_state(dep)
    res = dep.fab("local", "upgradedb", "--ref", "v3", extra_env={"SEED_FAULT": f"{fault}@{point}"})
    assert res.returncode == RETURN_CODES[fault], f"{fault} at {point!r}:\n{res.stdout}{res.stderr}"
    if fault != "kill":  # the record says so at once, and what to do
        last = res.stderr.strip().splitlines()[-1]
        assert "interrupted by SIG" in last and "nothing more was done" in last, last
        assert dep.last_report()["outcome"] == "interrupted"
    started = time.monotonic()
    if point in REFUSAL_CHECKED or expect == "new":
        refused_until_recovered(dep)
    name = f"{FAULT_NAMES[fault]} {point}"
    if expect == "old":
        res = dep.fab("local", "rollback", "--wait", "120")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "recovered interrupted deploy" in res.stderr
        elapsed = time.monotonic() - started
        assert whole_state(dep) == before
        MATRIX.append(Row(name, "old state, verified", elapsed, "rollback"))
    else:
        res = dep.fab("local", "upgradedb", "--resume")
        assert res.returncode == 0, res.stdout + res.stderr
        elapsed = time.monotonic() - started
        assert v3_serving(dep) == {
            "shop migrations": 5,
            "name column": 0,
            "serving": "v3",
            "releases": len(before["releases"]) + 1,
        }
        MATRIX.append(Row(name, "new state, checks passed", elapsed, "--resume"))
        # and the resumed deploy is an ordinary one: rollback undoes it exactly
        res = dep.fab("local", "rollback")
        assert res.returncode == 0, res.stdout + res.stderr
        assert whole_state(dep) == before
    assert lock_is_free(dep)


def test_sigkill_during_a_manual_rollback_restore(at_v2: Deployment) -> None:
    """The rollback itself dies while pg_restore runs: the next rollback finishes it."""
    before = whole_state(at_v2)
    res = at_v2.fab("local", "upgradedb", "--ref", "v3")
    assert res.returncode == 0, res.stderr
    killed_at(at_v2, "restore job started", "rollback")
    started = time.monotonic()
    refused_until_recovered(at_v2)
    res = at_v2.fab("local", "rollback", "--wait", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recovered interrupted rollback" in res.stderr
    elapsed = time.monotonic() - started
    assert whole_state(at_v2) == before
    assert lock_is_free(at_v2)
    MATRIX.append(
        Row("SIGKILL fab during rollback's restore", "old state, verified", elapsed, "rollback")
    )


def test_sigkill_during_an_automatic_rollback(at_v2: Deployment) -> None:
    """bad-data fails its checks; fab dies while its own rollback restores: recovery."""
    before = whole_state(at_v2)
    killed_at(at_v2, "restore job started", "upgradedb", "--ref", "bad-data")
    started = time.monotonic()
    refused_until_recovered(at_v2)
    res = at_v2.fab("local", "rollback", "--wait", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    elapsed = time.monotonic() - started
    assert whole_state(at_v2) == before
    assert lock_is_free(at_v2)
    MATRIX.append(
        Row("SIGKILL fab during automatic rollback", "old state, verified", elapsed, "rollback")
    )


def test_sigkill_during_a_code_only_deploy(at_v2: Deployment) -> None:
    """A deploy without migrations dies as its switch starts: recovery only puts the code
    back, host by host while the site serves (no maintenance), and puts back into traffic
    the hosts the dead run may have drained; `--resume` is refused (nothing migrated to
    keep). (Switching hosts back is the rollback of a code-only deploy: test_code_only.)"""
    log = at_v2.home / "drain.log"
    log.unlink(missing_ok=True)
    envdir = at_v2.variant(
        "drain-kill",
        {
            "app.drain": f'echo "drain $SEED_HOST" >> {log}',
            "app.undrain": f'echo "undrain $SEED_HOST" >> {log}',
        },
    )
    before = whole_state(at_v2)
    res = at_v2.fab(
        "local", "upgradedb", "--ref", "v2", envdir=envdir,
        extra_env={"SEED_FAULT": "kill@before switch 1/1"},
    )  # fmt: skip
    assert res.returncode == -9, res.stdout + res.stderr
    started = time.monotonic()
    resumed = at_v2.fab("local", "upgradedb", "--resume", envdir=envdir)
    assert resumed.returncode == 4 and "code-only deploy" in resumed.stderr, resumed.stderr
    res = at_v2.fab("local", "rollback", "--wait", "120", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recovered interrupted code-only deploy" in res.stderr
    elapsed = time.monotonic() - started
    assert "maintenance on" not in res.stderr
    assert log.read_text().splitlines() == ["undrain 127.0.0.1"]
    assert whole_state(at_v2) == before
    assert lock_is_free(at_v2)
    MATRIX.append(
        Row("SIGKILL fab as a code-only switch starts", "old state, verified", elapsed, "rollback")
    )


def test_sigkill_during_an_online_deploy(at_v2: Deployment) -> None:
    """An online deploy (`expand`: a column and a concurrently built index on orders) dies
    right after its migrate: `--resume` is refused, and `rollback` recovers the way the
    deploy would have undone itself — no maintenance, the code put back (nothing switched
    yet), the migrations reversed with the dead deploy's code and verified."""
    before = whole_state(at_v2)
    before["figures"].pop("public.django_migrations")  # (reversed: the same set, new ids)
    killed_at(at_v2, "after migrate", "upgradedb", "--ref", "expand")
    started = time.monotonic()
    resumed = at_v2.fab("local", "upgradedb", "--resume")
    assert resumed.returncode == 4 and "online deploy" in resumed.stderr, resumed.stderr
    res = at_v2.fab("local", "rollback", "--wait", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recovered interrupted online deploy" in res.stderr
    elapsed = time.monotonic() - started
    assert "maintenance on" not in res.stderr
    after = whole_state(at_v2)
    after["figures"].pop("public.django_migrations")
    assert after == before
    assert lock_is_free(at_v2)
    MATRIX.append(
        Row("SIGKILL fab after an online migrate", "old state, verified", elapsed, "rollback")
    )
