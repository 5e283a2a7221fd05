"""Read-only tasks: `fab <env> status`, `fab <env> history`, `fab <env> plan`."""

from __future__ import annotations

import json
from typing import Any

from invoke.context import Context

from seed.cli.edge import (
    local_root,
    project_root,
    run_context,
    run_printing,
    selected_environment,
    selected_name,
    task,
    user_errors,
)
from seed.commands.config import settings as config_settings
from seed.commands.overview import history as read_history
from seed.commands.overview import status as read_status
from seed.commands.plan import describe, lint_ref
from seed.commands.plan import plan as make_plan
from seed.commands.rehearse import Rehearse
from seed.config.environment import environments_dir
from seed.errors import ChecksFailed
from seed.journal.store import freeze_text
from seed.run.report import Scrubber


def _print_json(data: Any, scrub: Scrubber) -> None:
    print(json.dumps(scrub.data(data), indent=2, default=str))


@task(help={"json": "print it as JSON"})
@user_errors
def status(c: Context, json_: bool = False) -> None:
    """Per host release and sha, applied migrations, last deploy, lock holder (read-only)."""
    env = selected_environment(c)
    scrub = Scrubber(env.secrets())
    data = read_status(env, local_root(), scrub)
    if json_:
        _print_json(data, scrub)
        return
    print(f"{env.name}: {env.description}" + (" (protected)" if env.protected else ""))
    for h in data["hosts"]:
        where = f"{h['current']} (sha {(h['sha'] or '?')[:12]})" if h["current"] else "no release"
        extra = "" if h["releases"] is None else f", {h['releases']} release(s) on disk"
        print(f"  {h['host']:<28} {','.join(h['roles']):<16} {where}{extra}")
    d = data["database"]
    newest = ", ".join(f"{app} {name}" for app, name in sorted(d["newest_per_app"].items()))
    print(
        f"  database {d['name']}: PostgreSQL {d['server_version'] // 10000}, "
        f"{d['size_bytes'] / 1e6:.1f} MB, {d['applied_migrations']} migrations applied"
        + (f" (newest: {newest})" if newest else "")
    )
    lock = data["lock"]
    if lock["held"]:
        rec = lock["record"] or {}
        print(
            f"  lock: HELD by {rec.get('deploy_id', '?')} ({rec.get('who', '?')}, "
            f"{rec.get('command', '?')!r}, since {rec.get('since', '?')})"
        )
    else:
        stale = (
            " (a lock record is left over from a run that ended)" if lock["stale_record"] else ""
        )
        print(f"  lock: free{stale}")
    if data.get("frozen"):
        print(f"  FROZEN for deploys {freeze_text(data['frozen'])} (`unfreeze` lifts it)")
    for run in data["interrupted"]:
        print(
            f"  INTERRUPTED: {run['kind']} {run['deploy_id']} by {run['who']} at "
            f"{run['started_at']} never finished"
        )
    if data["recovery_pending"]:
        print(f"  recovery pending: run `fab {env.name} rollback` (or `upgradedb --resume`)")
    last = data["last_deploy"]
    if last:
        print(
            f"  last deploy: {last['deploy_id']} {last['outcome']} (exit {last['exit_code']}) "
            f"by {last['who']} at {last['started_at']}, sha {(last['sha_after'] or '?')[:12]}"
        )
    else:
        print("  last deploy: none recorded")


@task(help={"json": "print it as JSON"})
@user_errors
def history(c: Context, json_: bool = False) -> None:
    """Every run from the journal, newest first: who, when, shas, migrations, backup, result."""
    env = selected_environment(c)
    scrub = Scrubber(env.secrets())
    records = read_history(env, local_root(), scrub)
    if json_:
        _print_json(records, scrub)
        return
    if not records:
        print(f"no runs recorded for {env.name}")
        return
    print(
        f"{'id':<23} {'kind':<10} {'result':<10} {'exit':>4} {'secs':>6} {'down':>6}  "
        f"{'who':<16} {'sha':<12} {'migr':>4} {'mode':<11}  rollback / message"
    )
    for r in records:
        secs = "" if r["duration_s"] is None else f"{r['duration_s']:.0f}"
        down = "" if r["downtime_seconds"] is None else f"{r['downtime_seconds']:.1f}"
        tail = r["rollback_method"] or ""
        if (r["outcome"] != "succeeded" or r["kind"] in ("freeze", "unfreeze")) and r["message"]:
            tail = (tail + " " if tail else "") + str(r["message"])[:80]
        print(
            f"{r['deploy_id'] or '?':<23} {r['kind'] or '?':<10} {r['outcome'] or '?':<10} "
            f"{'' if r['exit_code'] is None else r['exit_code']:>4} {secs:>6} {down:>6}  "
            f"{(r['who'] or '?')[:16]:<16} {(r['sha_after'] or '')[:12]:<12} "
            f"{len(r['migrations_applied']):>4} {r['mode'] or '':<11}  {tail}"
        )


@task(
    help={
        "ref": "git branch, tag or sha to plan (default: app.ref of the environment)",
        "json": "print it as JSON",
        "mode": "code-only or maintenance: the mode upgradedb --mode would run in",
    }
)
@user_errors
def plan(c: Context, ref: str = "", json_: bool = False, mode: str = "") -> None:
    """What upgradedb would do: mode, code, migrations, backup space, lock, hooks (read-only)."""
    env = selected_environment(c)
    scrub = Scrubber(env.secrets())
    data = make_plan(env, ref or None, local_root(), scrub, mode or None)
    if json_:
        _print_json(data, scrub)
        return
    for line in describe(data):
        print(scrub(line))


@task(
    help={
        "ref": "git branch, tag or sha to check (default: app.ref of the environment)",
        "json": "print the findings as JSON",
    }
)
@user_errors
def lint(c: Context, ref: str = "", json_: bool = False) -> None:
    """The migration safety gate on what upgradedb would apply; exit 7 when a finding blocks.

    squawk on each migration's SQL plus Seed's rules. Read-only."""
    env = selected_environment(c)
    scrub = Scrubber(env.secrets())
    result, data = lint_ref(env, ref or None, local_root(), scrub)
    if json_:
        _print_json(data, scrub)
    else:
        print(f"lint {env.name} at {data['ref']} ({data['sha'][:12]}): {data['summary']}")
        for finding in result.findings:
            print(scrub("  " + finding.describe()))
    if result.blocking:
        raise ChecksFailed(result.refusal())


@task(
    help={
        "ref": "git branch, tag or sha to rehearse (default: app.ref of the environment)",
        "scale_from": "extrapolate to this environment's row counts (default: rehearse.scale_from)",
        "backup": "rehearse on this backup (id or unique prefix; default: latest)",
        "json": "print the JSON report on stdout (progress stays on stderr)",
    }
)
@user_errors
def rehearse(
    c: Context,
    ref: str = "",
    scale_from: str = "",
    backup: str = "latest",
    json_: bool = False,
    report: str = "",
) -> None:
    """Time the pending migrations on a restored copy; exit 7 over budget.

    One by one: time, locks, rewrites, rows, extrapolated to production's size. The real
    database is untouched."""
    env = selected_environment(c)
    run = Rehearse(
        run_context(env, report),
        ref=ref or None,
        scale_from=scale_from or None,
        backup_id=backup,
    )
    run_printing(run, json_)


@task(help={"json": "print the settings as JSON"})
@user_errors
def config(c: Context, json_: bool = False) -> None:
    """Show the environment's settings: merged, where each came from, secrets redacted."""
    found = config_settings(selected_name(c), environments_dir(project_root()))
    if json_:
        print(json.dumps([s.to_json() for s in found], indent=2))
        return
    width = max(len(s.key) for s in found)
    for s in found:
        written = f"  (written {s.written})" if s.written else ""
        print(f"{s.key:<{width}}  {s.value}  [{s.where}]{written}")
