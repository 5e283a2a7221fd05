"""The writes rule through `fab` (issue 18, defect 2): rows the app wrote are never dropped
silently by a restore — not those the new release wrote between its restart and the end
of the deploy (a), not those written before a later deploy when going further back (b),
not those written before an automatic rollback after the restart (c).

The app's writes are made as the app role (`shop`) by `psql`, from a hook after the
restart (the new release serving) or between commands.
"""

from __future__ import annotations

import shlex

from tests.e2e.conftest import Deployment
from tests.e2e.test_rollback import whole_state

MARK = "written-by-the-app@example.com"


def app_write(dep: Deployment) -> str:
    """A shell command writing one customer's e-mail as the app role (what a restore loses)."""
    statement = f"update shop_customer set email = '{MARK}' where id = 1"
    return f"psql -X -q {shlex.quote(dep.sandbox.app_conninfo())} -c {shlex.quote(statement)}"


def written(dep: Deployment) -> bool:
    return dep.scalar("select email from shop_customer where id = 1") == MARK


def undo_write(dep: Deployment, email: str) -> None:
    with dep.admin("shop") as conn:
        conn.execute("update shop_customer set email = %s where id = 1", (email,))


def test_rows_the_new_release_wrote_during_the_deploy_stop_a_rollback(at_v2: Deployment) -> None:
    """(a) The app writes right after the restart; `rollback` must see it."""
    before = whole_state(at_v2)
    email = at_v2.scalar("select email from shop_customer where id = 1")
    hook = {"run": app_write(at_v2), "on": "local"}
    envdir = at_v2.variant("writes-after-restart", {"hooks": {"restart": {"after": hook}}})
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert written(at_v2)
    res = at_v2.fab("local", "rollback")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "writes happened since" in res.stderr and "public.shop_customer 1" in res.stderr
    assert written(at_v2)  # nothing changed; the app serves v3 again
    assert at_v2.http("/version/")[1].strip() == "v3"
    res = at_v2.fab("local", "rollback", "--discard-writes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not written(at_v2)
    assert whole_state(at_v2) == before
    assert at_v2.scalar("select email from shop_customer where id = 1") == email


def test_writes_before_a_later_deploy_stop_a_restore_of_an_older_backup(
    at_v2: Deployment,
) -> None:
    """(b) backup, the app writes, a deploy (no migration), then `restore --backup <first>`:
    the writes before that deploy are lost by the restore, so it refuses."""
    email = at_v2.scalar("select email from shop_customer where id = 1")
    res = at_v2.fab("local", "backup", "--label", "before the write")
    assert res.returncode == 0, res.stdout + res.stderr
    backup_id = at_v2.last_report()["deploy_id"]
    with at_v2.admin("shop") as conn:  # the app's write, with the app role
        conn.execute("set role shop")
        conn.execute("update shop_customer set email = %s where id = 1", (MARK,))
    res = at_v2.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stdout + res.stderr
    res = at_v2.fab("local", "restore", "--backup", backup_id)
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"writes happened since {backup_id}: public.shop_customer 1" in res.stderr
    assert written(at_v2)
    undo_write(at_v2, email)


def test_the_automatic_rollback_after_the_restart_does_not_drop_the_apps_writes(
    at_v2: Deployment,
) -> None:
    """(c) v3 serves and writes, then its health check fails: a restore would drop the row
    and v3 cannot be reversed exactly: stop, maintenance on, exit 6, both ways out named."""
    before = whole_state(at_v2)
    hook = {"run": app_write(at_v2), "on": "local"}
    envdir = at_v2.variant(
        "writes-then-unhealthy",
        {
            "app.health.text": "ok v2",
            "app.health.timeout": 4,
            "hooks": {"restart": {"after": hook}},
        },
    )
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    assert res.returncode == 6, res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "failed at health" in last and "NOT rolled back" in last
    assert "public.shop_customer 1" in last
    assert "fab local upgradedb --resume" in last and "rollback --discard-writes" in last
    assert written(at_v2)
    assert at_v2.http("/version/")[0] == 0  # maintenance stays on: nothing serves
    report = at_v2.last_report()
    assert report["writes_since"]["tables"] == {"public.shop_customer": 1}
    steps = {s["name"] for s in report["steps"]}
    assert "rollback: database" not in steps and "rollback: code" not in steps
    # recovery pending: nothing else runs until one of the two ways out
    res = at_v2.fab("local", "upgradedb", "--ref", "v2")
    assert res.returncode == 4 and "recovery pending" in res.stderr, res.stderr
    res = at_v2.fab("local", "rollback", "--discard-writes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recovered interrupted deploy" in res.stderr
    assert not written(at_v2)
    assert whole_state(at_v2) == before
