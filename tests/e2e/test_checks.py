"""Checks end to end: real Django migrations that silently break data, caught and rolled
back; checks that travel in the release's deploy/checks.yml; `fab local validate`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.e2e.conftest import Deployment
from tests.e2e.personal import private_hits


@pytest.fixture(scope="module")
def at_v2(deployment: Deployment) -> Iterator[Deployment]:
    deployment.reset()
    deployment.deploy("v1", "v2")
    yield deployment


def checks_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_v2_passes_the_checks_it_brings(at_v2: Deployment) -> None:
    report = at_v2.last_report()
    assert report["exit_code"] == 0 and report["sha_after"]
    checks = checks_of(report)
    # from deploy/checks.yml in the v2 release: the split keeps every sampled name
    split = checks["names survive the split"]
    assert split["passed"] and split["actual"] == "500 sampled rows as before"
    assert checks["customer rows unchanged"]["passed"]
    assert checks["customer rows unchanged"]["actual"].startswith("20000 rows, checksum ")
    assert checks["every customer has a first name"]["passed"]
    # the environment file's checks and the built-in invariants
    assert checks["customers unchanged"]["before"] == 20000
    for name in (
        "invariant: no invalid indexes",
        "invariant: sequences ahead of their columns",
        "invariant: NOT VALID constraints hold",
        "invariant: manage.py migrate --check",
        "invariant: manage.py check --deploy",
    ):
        assert checks[name]["passed"], checks[name]
    health = [c for n, c in checks.items() if n.startswith("http health ")]
    assert len(health) == 1 and health[0]["passed"], health
    assert health[0]["actual"].startswith("200 ") and "v2" in health[0]["actual"]
    assert all(c["seconds"] >= 0 and "expected" in c for c in report["checks"])
    # the after-state a later `validate` compares with
    assert set(report["after"]["checks"]) >= {"customer rows unchanged", "names survive the split"}


@pytest.mark.parametrize(
    ("ref", "what"),
    [
        ("bad-swap", "swaps totals between orders: count and sum(total) unchanged"),
        ("bad-corrupt", "rounds every total"),
        ("bad-null", "nulls the status of cancelled orders"),
    ],
)
def test_a_migration_that_silently_breaks_data_is_rolled_back(
    at_v2: Deployment, ref: str, what: str
) -> None:
    before = at_v2.figures()
    current = at_v2.current()
    res = at_v2.fab("local", "upgradedb", "--ref", ref)
    output = res.stdout + res.stderr
    assert res.returncode == 5, output
    assert "Traceback" not in output
    report = at_v2.last_report()
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert "order rows unchanged" in failed, (what, failed)
    assert report["message"].startswith(f"deploy of {ref} failed at post check '")
    assert report["message"].endswith("rolled back; verified identical")
    # everything back: data (every table's checksum), code
    assert at_v2.figures() == before
    assert at_v2.current() == current
    assert report["rollback"]["verification"]["identical"] is True


def test_a_post_check_typo_rolls_back(at_v2: Deployment) -> None:
    checks = [{"name": "post typo", "sql": "select count(* from shop_customer", "expect": 1}]
    # two fingerprint sessions: the before-state and the verification run in parallel
    envdir = at_v2.variant("post-typo", {"checks": checks, "db.fingerprint_sessions": 2})
    before, current = at_v2.figures(), at_v2.current()
    res = at_v2.fab("local", "upgradedb", "--ref", "v3", envdir=envdir)
    output = res.stdout + res.stderr
    assert res.returncode == 5, output
    last = res.stderr.strip().splitlines()[-1]
    assert "check 'post typo' errored: syntax error" in last, last
    assert at_v2.figures() == before and at_v2.current() == current


def test_validate_compares_with_the_last_after_state(at_v2: Deployment) -> None:
    res = at_v2.fab("local", "validate", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    checks = checks_of(report)
    assert report["outcome"] == "succeeded" and report["baseline"]["deploy_id"]
    assert checks["customer rows unchanged"]["passed"]
    assert not checks["customer rows unchanged"]["skipped"]
    assert checks["names survive the split"]["actual"] == "500 sampled rows as before"
    assert "check:" in res.stderr  # the plain table for a log

    # a change behind the app's back: caught, exit 7, nothing changed by validate
    email = at_v2.scalar("select email from shop_customer where id = 4242")
    with at_v2.admin("shop") as conn:
        conn.execute("update shop_customer set email = 'someone@else.example' where id = 4242")
    try:
        drifted = at_v2.figures()
        res = at_v2.fab("local", "validate")
        assert res.returncode == 7, res.stdout + res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert "customer rows unchanged" in last and "nothing was changed" in last, last
        assert at_v2.figures() == drifted
    finally:
        with at_v2.admin("shop") as conn:
            conn.execute("update shop_customer set email = %s where id = 4242", (email,))
    assert at_v2.fab("local", "validate").returncode == 0


def test_validate_without_a_baseline_skips_before_checks(at_v2: Deployment) -> None:
    envdir = at_v2.variant("fresh-journal", {"state_dir": str(at_v2.root / "server" / "elsewhere")})
    res = at_v2.fab("local", "validate", "--json", envdir=envdir)
    assert res.returncode == 0, res.stdout + res.stderr
    checks = checks_of(json.loads(res.stdout))
    assert checks["customer rows unchanged"]["skipped"] == "no baseline"
    assert checks["customers unchanged"]["skipped"] == "no baseline"
    assert checks["no orphan orders"]["passed"] and not checks["no orphan orders"]["skipped"]


def test_reports_and_records_hold_no_personal_data(at_v2: Deployment) -> None:
    """After deploys whose checks sample customers (v2's deploy/checks.yml), rollbacks and
    validate runs — one with a sampled row changed behind the app's back — no file Seed
    wrote here (reports, journal mirror) or on the state host (journal) holds a customer's
    name or e-mail address: the samples are keyed digests, and the difference names the
    column. The digest key on the state host is private."""
    journal = sorted((at_v2.state_dir / "journal").glob("*.json"))
    deploys = [json.loads(p.read_text()) for p in journal]
    (sample,) = [
        r["after"]["checks"]["names survive the split"]
        for r in deploys
        if r.get("outcome") == "succeeded"
        and "names survive the split" in r.get("after", {}).get("checks", {})
    ][-1:]
    key = sorted(sample["rows"])[0]
    email = at_v2.scalar(f"select email from shop_customer where id = {int(key)}")
    with at_v2.admin("shop") as conn:
        conn.execute("update shop_customer set email = 'x' || email where id = %s", (int(key),))
    try:
        res = at_v2.fab("local", "validate", "--json")
        assert res.returncode == 7, res.stdout + res.stderr
        check = checks_of(json.loads(res.stdout))["names survive the split"]
        assert check["actual"] == f"1 of 500 differ: key {key}: email differs", check
        assert email not in res.stdout + res.stderr
    finally:
        with at_v2.admin("shop") as conn:
            conn.execute("update shop_customer set email = %s where id = %s", (email, int(key)))
    found = private_hits(at_v2, [at_v2.home, at_v2.state_dir])
    assert not found, found
    assert (at_v2.state_dir / "digest.key").stat().st_mode & 0o777 == 0o600


def test_validate_runs_django_check_deploy_at_its_fail_level(at_v2: Deployment) -> None:
    """Without the sandbox's silenced ids, its plain-HTTP warnings fail at level WARNING."""
    strict = at_v2.variant("strict-django", {"invariants.django_check": {"fail_level": "WARNING"}})
    res = at_v2.fab("local", "validate", "--json", envdir=strict)
    assert res.returncode == 7, res.stdout + res.stderr
    check = checks_of(json.loads(res.stdout))["invariant: manage.py check --deploy"]
    assert not check["passed"] and "security.W004" in check["actual"]
    assert "invariant: manage.py check --deploy" in res.stderr.strip().splitlines()[-1]


def test_status_and_history_read_without_changing_anything(at_v2: Deployment) -> None:
    before, current = at_v2.figures(), at_v2.current()
    res = at_v2.fab("local", "status", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(res.stdout)
    (host,) = data["hosts"]
    assert host["roles"] == ["app", "migrate", "db"]
    assert f"releases/{host['current']}" == current and len(host["sha"]) == 40
    assert data["database"]["newest_per_app"]["shop"] == "0004_fill_first_last_name"
    assert data["lock"] == {"held": False, "holder_pids": [], "record": None, "stale_record": False}
    assert data["last_deploy"]["kind"] == "upgradedb"

    # a deploy holding the lock (here: a session holding the same advisory lock)
    with at_v2.admin() as holder:
        holder.execute("select pg_advisory_lock(hashtextextended('seed:' || 'shop', 0))")
        pid = holder.info.backend_pid
        data = json.loads(at_v2.fab("local", "status", "--json").stdout)
        assert data["lock"]["held"] and data["lock"]["holder_pids"] == [pid]
        assert "lock: HELD" in at_v2.fab("local", "status").stdout

    res = at_v2.fab("local", "history", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    runs = json.loads(res.stdout)
    assert [r["started_at"] for r in runs] == sorted((r["started_at"] for r in runs), reverse=True)
    rolled_back = [r for r in runs if r["exit_code"] == 5]
    assert rolled_back and all(r["rollback_method"] == "restore" for r in rolled_back)
    deployed = [r for r in runs if r["kind"] == "upgradedb" and r["exit_code"] == 0]
    assert deployed[0]["sha_after"] == host["sha"] and deployed[0]["backup"]
    assert "shop.0004_fill_first_last_name" in deployed[0]["migrations_applied"]
    table = at_v2.fab("local", "history").stdout.splitlines()
    assert table[0].startswith("id ") and len(table) == len(runs) + 1
    assert at_v2.figures() == before and at_v2.current() == current


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root (links not followed) with its size and mtime."""
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def test_plan_reads_the_servers_and_changes_nothing(at_v2: Deployment) -> None:
    figures = at_v2.figures()
    applied = at_v2.scalar("select count(*) from django_migrations")
    files = {p: tree(p) for p in (at_v2.deploy_to, at_v2.state_dir, at_v2.backup_dir)}
    leftovers = set(Path("/tmp").glob("seed-plan-*"))

    res = at_v2.fab("local", "plan", "--ref", "v3", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    plan = json.loads(res.stdout)
    assert plan["migrations"]["to_apply"] == ["shop.0005_remove_customer_name"]
    assert plan["migrations"]["per_app"] == {"shop": ["0005_remove_customer_name"]}
    assert plan["migrations"]["classes"] == ["destructive"]
    assert plan["migrations"]["venv"] == "deployed (shared)"
    assert plan["sha_current"] != plan["sha_target"] and not plan["up_to_date"]
    assert plan["backup"]["fits"] and plan["lock"]["held"] is False
    assert plan["hooks"]["restart"]

    text = at_v2.fab("local", "plan", "--ref", "bad-crash").stdout
    assert "migrate shop.0005_customer_loyalty_points: AddField [additive]" in text
    assert "RunPython [data]" in text and "lock: free" in text
    main = json.loads(at_v2.fab("local", "plan", "--json").stdout)  # app.ref: main = v4
    assert main["ref"] == "main" and main["migrations"]["to_apply"] == [
        "shop.0005_remove_customer_name",
        "shop.0006_customer_contact_details",
    ]

    assert at_v2.figures() == figures
    assert at_v2.scalar("select count(*) from django_migrations") == applied
    assert {p: tree(p) for p in files} == files
    assert set(Path("/tmp").glob("seed-plan-*")) == leftovers


def test_a_table_the_app_role_cannot_read_is_skipped_not_failed(at_v2: Deployment) -> None:
    """A table owned by another role with no grant to the app role (`shop`): the built-in
    invariants that read user tables skip it and say so; the deploy and validate pass."""
    databases = "select datname from pg_database where datname like 'shop_replaced_%'"
    with at_v2.admin() as conn:
        replaced = {r[0] for r in conn.execute(databases).fetchall()}
    with at_v2.admin("shop") as conn:
        conn.execute(
            "create role auditor; create table public.audit_log (id serial primary key, note text);"
            "alter table public.audit_log owner to auditor;"
            "insert into public.audit_log (note) select 'n' || g from generate_series(1, 5) g;"
            # a NOT VALID constraint on it: the constraint invariant reads the table too
            "alter table public.audit_log add constraint audit_note check (note <> '') not valid"
        )
    try:
        current = at_v2.current()
        res = at_v2.fab("local", "upgradedb", "--ref", "v2")  # deployed already: no migration
        output = res.stdout + res.stderr
        assert res.returncode == 0, output
        checks = checks_of(at_v2.last_report())
        skipped = "skipped 1 table the app role cannot read: public.audit_log"
        for name in ("sequences ahead of their columns", "NOT VALID constraints hold"):
            check = checks[f"invariant: {name}"]
            assert check["passed"] and check["outcome"] == "passed", check
            assert skipped in check["actual"], check
        assert skipped in output
        assert at_v2.current() != current  # the new release is live (nothing was rolled back)

        res = at_v2.fab("local", "validate", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        check = checks_of(json.loads(res.stdout))["invariant: sequences ahead of their columns"]
        assert check["passed"] and skipped in check["actual"], check
    finally:
        with at_v2.admin("shop") as conn:
            conn.execute("drop table if exists public.audit_log")
        with at_v2.admin() as conn:
            # a rollback (the bug) keeps the replaced database, holding the role's objects
            for (name,) in conn.execute(databases).fetchall():
                if name not in replaced:
                    conn.execute(sql.SQL("drop database {}").format(sql.Identifier(name)))
            conn.execute("drop role if exists auditor")


def test_an_invariant_that_cannot_run_warns_unless_on_error_fail(at_v2: Deployment) -> None:
    """`validate`: a built-in invariant whose query errors is outcome `error` (exit 0), and a
    failure (exit 7) with `invariants.on_error: fail`."""
    with at_v2.admin("shop") as conn:
        conn.execute(
            "create function seed_boom(t text) returns boolean language plpgsql"
            " as $$ begin raise exception 'boom on %', t; end $$;"
            "alter table shop_customer add constraint customer_boom"
            " check (seed_boom(email)) not valid"
        )
    try:
        res = at_v2.fab("local", "validate", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        check = checks_of(json.loads(res.stdout))["invariant: NOT VALID constraints hold"]
        assert check["outcome"] == "error" and check["passed"], check
        assert check["error"].startswith("boom on "), check
        line = "check 'invariant: NOT VALID constraints hold' ERROR (invariants.on_error: warn"
        assert line in res.stderr, res.stderr

        strict = at_v2.variant("on-error-fail", {"invariants.on_error": "fail"})
        res = at_v2.fab("local", "validate", "--json", envdir=strict)
        assert res.returncode == 7, res.stdout + res.stderr
        check = checks_of(json.loads(res.stdout))["invariant: NOT VALID constraints hold"]
        assert check["outcome"] == "failed" and not check["passed"], check
        assert "invariant: NOT VALID constraints hold" in res.stderr.strip().splitlines()[-1]
    finally:
        with at_v2.admin("shop") as conn:
            conn.execute(
                "alter table shop_customer drop constraint if exists customer_boom;"
                "drop function if exists seed_boom(text)"
            )
