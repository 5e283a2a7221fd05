"""Point-in-time recovery with pgBackRest (backup.strategy: pitr).

A deploy under `pitr` takes no dump in its window. While the site serves, the
repository gets a new differential/incremental backup when the newest is older than
`max_age`, and `pgbackrest check` proves the WAL archive works; in the window a named
restore point (`seed-<deploy id>`) marks the before-state and the WAL segment holding
it is switched out and waited for in the archive. Going back is a restore of the whole
cluster to that point: the cluster stopped, `pgbackrest restore --delta --type=name`
from a backup that ended before the point, started, recovery replays the WAL to the
point and promotes.

Facts this module respects (pgBackRest 2.45, PostgreSQL 15, checked here):
- `backup` runs on the repository host, `restore`, `check` and `archive-push` on the
  database host; the two reach each other by pgBackRest's own transport (its SSH with
  the OS user's keys, or its TLS server) configured by whoever set up the hosts: Seed
  reaches each host over its own SSH and runs pgBackRest there.
- `pg_create_restore_point` and `pg_switch_wal` are superuser-only unless EXECUTE was
  granted: checked at pre-flight (`missing_privileges`).
- Restore point names are not unique to PostgreSQL: recovery stops at the first one.
  Deploy ids are.
- The timeline a point was made on is the first 8 hex digits of its WAL file name;
  restores name it (`--target-timeline`), so a point on a timeline that a later
  restore abandoned is never silently replaced by the newest timeline's history.
- A restore rewinds the whole cluster: every database, the roles, the statistics.
- `expire` cannot pin a backup: any backup that ended before the point will do, so the
  newest such one still in the repository is chosen at restore time.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from seed.config.environment import Environment, PgBackRestConfig
from seed.errors import PreflightFailed, SeedError, StepFailed
from seed.remote.ssh import Remote, RemoteError, RemoteJob, q

POINT_PREFIX = "seed-"
LABEL = r"\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?"  # a backup's label: full, or diff/incr of one
SCRATCH_PREFIXES = ("seed_", "template")  # Seed's own scratch databases, templates
ALWAYS_REWOUND = ("postgres",)
SCRATCH_KINDS = ("replaced", "restore", "snap", "copy", "verify", "rehearse", "mask")


def point_name(run_id: str) -> str:
    """The restore point of run `run_id` (a deploy, a manual backup)."""
    return POINT_PREFIX + run_id


def lsn_value(lsn: str) -> int:
    """`0/3000050` as a number (comparable)."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def config(env: Environment) -> PgBackRestConfig:
    cfg = env.backup.pgbackrest
    if cfg is None:
        raise PreflightFailed(
            f"backup.pgbackrest is not set in {env.path.name}: backup.strategy pitr needs it"
        )
    return cfg


def _error_line(text: str) -> str:
    """pgBackRest's first ERROR line (its code and message), else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ERROR:"):
            return line
    return lines[-1] if lines else "(no output)"


def run(
    env: Environment,
    remote: Remote,
    repo: bool,
    args: list[str],
    what: str,
    timeout: float | None = None,
) -> str:
    """pgBackRest with `args` on the repository host (`repo`) or the database host; a
    failure raises StepFailed naming the host and pgBackRest's own error line."""
    cfg = config(env)
    prefix = cfg.repo_command if repo else cfg.command
    command = f"{prefix} --stanza={q(cfg.stanza)} " + " ".join(q(a) for a in args)
    res = remote.run(command, timeout=timeout, private_env=env.command_values())
    if not res.ok:
        if res.exit_code == 127:
            raise StepFailed(
                f"{what} on {remote.label}: {prefix!r} not found (exit 127): install "
                "pgBackRest there (Debian package pgbackrest) or set "
                f"backup.pgbackrest.{'repo_command' if repo else 'command'}"
            )
        raise StepFailed(
            f"{what} on {remote.label} failed (exit {res.exit_code}): "
            f"{_error_line(res.stderr + chr(10) + res.stdout)}"
        )
    return res.stdout


# -- the repository --------------------------------------------------------------------------


@dataclass(frozen=True)
class PhysicalBackup:
    """One backup in the repository (from `info --output=json`)."""

    label: str
    type: str  # full | diff | incr
    started: float  # epoch seconds
    stopped: float
    lsn_start: str
    lsn_stop: str
    wal_start: str
    wal_stop: str
    size: int  # the cluster's size
    repo_size: int  # what this backup stored in the repository
    prior: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_info(cls, item: dict[str, Any]) -> PhysicalBackup:
        info, lsn, stamp = item.get("info", {}), item.get("lsn", {}), item.get("timestamp", {})
        archive = item.get("archive", {})
        return cls(
            label=str(item["label"]),
            type=str(item.get("type", "")),
            started=float(stamp.get("start") or 0),
            stopped=float(stamp.get("stop") or 0),
            lsn_start=str(lsn.get("start") or "0/0"),
            lsn_stop=str(lsn.get("stop") or "0/0"),
            wal_start=str(archive.get("start") or ""),
            wal_stop=str(archive.get("stop") or ""),
            size=int(info.get("size") or 0),
            repo_size=int((info.get("repository") or {}).get("delta") or 0),
            prior=item.get("prior"),
        )


@dataclass(frozen=True)
class RepoInfo:
    """`pgbackrest info` of the stanza."""

    status_code: int
    status: str
    cipher: str
    backups: tuple[PhysicalBackup, ...]
    archive_min: str
    archive_max: str

    def newest(self) -> PhysicalBackup | None:
        return self.backups[-1] if self.backups else None

    def before(self, lsn: str) -> PhysicalBackup | None:
        """The newest backup that ended at or before `lsn` (a restore from it can reach
        a point at `lsn`)."""
        limit = lsn_value(lsn)
        fit = [b for b in self.backups if lsn_value(b.lsn_stop) <= limit]
        return fit[-1] if fit else None


def parse_info(text: str, stanza: str) -> RepoInfo:
    """The stanza's part of `pgbackrest info --output=json`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StepFailed(f"pgbackrest info gave no JSON ({exc})") from None
    entry = next((s for s in data if isinstance(s, dict) and s.get("name") == stanza), None)
    if entry is None:
        raise StepFailed(f"pgbackrest info knows no stanza {stanza!r}")
    status = entry.get("status") or {}
    archives = entry.get("archive") or [{}]
    backups = sorted(
        (PhysicalBackup.from_info(b) for b in entry.get("backup") or [] if not b.get("error")),
        key=lambda b: (b.stopped, b.label),
    )
    return RepoInfo(
        status_code=int(status.get("code", -1)),
        status=str(status.get("message", "")),
        cipher=str(entry.get("cipher", "")),
        backups=tuple(backups),
        archive_min=str(archives[-1].get("min") or ""),
        archive_max=str(archives[-1].get("max") or ""),
    )


def repo_info(env: Environment, repo: Remote) -> RepoInfo:
    """The repository's backups and archive, read on the repository host."""
    cfg = config(env)
    out = run(env, repo, True, ["--output=json", "info"], "pgbackrest info", timeout=120)
    info = parse_info(out, cfg.stanza)
    # 0 ok, 2 no valid backups yet (the first deploy takes a full one); others are broken
    if info.status_code not in (0, 2):
        raise StepFailed(
            f"pgBackRest stanza {cfg.stanza} on {repo.label}: {info.status} "
            f"(status {info.status_code}): see `pgbackrest info` there"
        )
    if info.cipher != cfg.cipher:
        raise StepFailed(
            f"the pgBackRest repository of {cfg.stanza} on {repo.label} is encrypted with "
            f"{info.cipher or 'nothing'}, not {cfg.cipher}: set repo1-cipher-type there"
        )
    return info


def same_version(env: Environment, db: Remote, repo: Remote) -> str:
    """pgBackRest's version on both hosts: its two sides must run the same one."""
    cfg = config(env)
    found = {}
    for remote, command in ((db, cfg.command), (repo, cfg.repo_command)):
        res = remote.run(f"{command} version", timeout=60, private_env=env.command_values())
        if not res.ok:
            raise StepFailed(
                f"`{command} version` on {remote.label} failed (exit {res.exit_code}): "
                f"{_error_line(res.stderr + chr(10) + res.stdout)}"
            )
        found[remote.label] = res.stdout.strip()
    if len(set(found.values())) > 1:
        raise PreflightFailed(
            "pgBackRest differs between the hosts ("
            + ", ".join(f"{host}: {v}" for host, v in found.items())
            + "): both sides must run the same version"
        )
    return next(iter(found.values()))


def check_archive(env: Environment, db: Remote) -> str:
    """`pgbackrest check` on the database host: a WAL segment switched out and found in
    the repository proves archive_command, the link and the repository work."""
    cfg = config(env)
    started = time.monotonic()
    run(
        env,
        db,
        False,
        [f"--archive-timeout={cfg.archive_timeout:g}", "check"],
        "pgbackrest check (the WAL archive)",
        timeout=cfg.archive_timeout + 60,
    )
    return f"WAL archive works ({time.monotonic() - started:.1f}s)"


def backup_type(env: Environment, info: RepoInfo, now: float) -> str | None:
    """The backup to take before the window: full when there is none, the configured
    type when the newest is older than max_age, else None."""
    cfg = config(env)
    newest = info.newest()
    if newest is None:
        return "full"
    if now - newest.stopped > cfg.max_age_hours * 3600:
        return cfg.type
    return None


def take_backup(
    env: Environment,
    repo: Remote,
    kind: str,
    job_dir: str,
    on_output: Callable[[str], None] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> PhysicalBackup:
    """A `kind` backup on the repository host, as a remote job (a dropped link leaves it
    running; its exit status stays on disk); returns the new backup from `info`."""
    cfg = config(env)
    before = {b.label for b in repo_info(env, repo).backups}
    # no expire after it: retention runs after a good deploy, and keeps what rollbacks need
    command = (
        f"{cfg.repo_command} --stanza={q(cfg.stanza)} --type={q(kind)} --start-fast "
        "--no-expire-auto --log-level-console=info backup"
    )
    job = start_job(env, repo, job_dir, "set -o pipefail\n" + command + "\n")
    code, output = job.wait(on_output=on_output, on_lost=on_lost)
    if code != 0:
        raise StepFailed(
            f"pgbackrest backup ({kind}) on {repo.label} failed (exit {code}): "
            f"{_error_line(output)}"
        )
    new = [b for b in repo_info(env, repo).backups if b.label not in before]
    if not new:
        raise StepFailed(f"pgbackrest backup on {repo.label} ended but `info` lists no new one")
    return new[-1]


def _exports(env: Environment) -> str:
    """The command settings' variables as shell lines."""
    lines = []
    for name, value in sorted(env.command_values().items()):
        if value is not None:
            lines.append(f"export {name}={q(value)}\n")
    return "".join(lines)


def start_job(env: Environment, remote: Remote, job_dir: str, body: str) -> RemoteJob:
    """`body` as a detached job; the command settings' variables reach it in a 0600 file
    its first line reads and removes (never on a command line, never left in the script)."""
    remote.mkdirs(job_dir, mode=0o700)
    remote.put_bytes(_exports(env).encode(), posixpath.join(job_dir, "vars"), mode=0o600)
    return RemoteJob.start(remote, job_dir, ". ./vars && rm -f ./vars\n" + body)


def expire(env: Environment, repo: Remote, needed: dict[str, RestorePoint]) -> str:
    """pgBackRest's retention (`expire`, as the repository's configuration says), unless it
    would remove the backup a needed restore point is restored from (`needed`: why → point):
    expire cannot keep one backup, so it is postponed until nothing needs that backup (the
    next good deploy). A dry run says what it would remove."""
    info = repo_info(env, repo)
    base = {why: info.before(point.lsn) for why, point in needed.items()}
    out = run(
        env,
        repo,
        True,
        ["--dry-run", "--log-level-console=info", "expire"],
        "pgbackrest expire --dry-run",
        timeout=600,
    )
    doomed: set[str] = set()
    archive = False
    for line in out.splitlines():
        if "expire" in line and "backup" in line:
            doomed.update(re.findall(LABEL, line))
        archive = archive or "remove archive" in line
    kept = [f"{b.label} ({why})" for why, b in base.items() if b is not None and b.label in doomed]
    if kept:
        return f"expire postponed: it would remove {', '.join(sorted(kept))}"
    if not doomed and not archive:
        return "nothing to expire"
    run(env, repo, True, ["expire"], "pgbackrest expire", timeout=3600)
    return f"expired {', '.join(sorted(doomed))}" if doomed else "expired old WAL only"


# -- the cluster -----------------------------------------------------------------------------


def missing_privileges(conn: psycopg.Connection[Any]) -> list[str]:
    """What the admin role may not run of what a pitr deploy needs."""
    missing = []
    for fn in ("pg_create_restore_point(text)", "pg_switch_wal()"):
        row = conn.execute(
            "select has_function_privilege(current_user, %s, 'execute')", [fn]
        ).fetchone()
        if not (row and row[0]):
            missing.append(fn.partition("(")[0])
    return missing


def archiving(conn: psycopg.Connection[Any]) -> str | None:
    """None when the cluster archives WAL, else why not."""
    mode = conn.execute("select current_setting('archive_mode')").fetchone()
    if not mode or mode[0] not in ("on", "always"):
        return f"archive_mode is {mode[0] if mode else '?'}"
    command = conn.execute("select current_setting('archive_command')").fetchone()
    library = conn.execute("select current_setting('archive_library')").fetchone()
    if not (command and command[0]) and not (library and library[0]):
        return "no archive_command"
    failed = conn.execute(
        "select failed_count, last_failed_wal, last_failed_time > "
        "coalesce(last_archived_time, '-infinity') from pg_stat_archiver"
    ).fetchone()
    if failed and failed[2]:
        return f"archiving is failing (last failed WAL {failed[1]}, {failed[0]} failures)"
    return None


def seeds_own(name: str, dbname: str) -> bool:
    """Seed's scratch databases beside `dbname` (restores, snapshots, replaced databases
    kept, copies, verifications, rehearsals: `<db>_<what>_<tag>`), templates, `postgres`."""
    if name in ALWAYS_REWOUND or name.startswith(SCRATCH_PREFIXES):
        return True
    return (
        re.match(re.escape(dbname[:40]) + r".*_(" + "|".join(SCRATCH_KINDS) + r")_", name)
        is not None
    )


def shared_with(conn: psycopg.Connection[Any], dbname: str, allowed: tuple[str, ...]) -> list[str]:
    """The cluster's other databases a restore would rewind and the file does not allow."""
    rows = conn.execute("select datname from pg_database order by 1").fetchall()
    others = []
    for (name,) in rows:
        if name == dbname or seeds_own(str(name), dbname):
            continue
        if "*" in allowed or name in allowed:
            continue
        others.append(str(name))
    return others


def streaming_replicas(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "select coalesce(application_name, '') || '@' || coalesce(client_addr::text, 'local') "
        "from pg_stat_replication"
    ).fetchall()
    return [str(r[0]) for r in rows]


def refuse_shared_cluster(env: Environment, conn: psycopg.Connection[Any]) -> None:
    """A restore rewinds the whole cluster: refused (before anything changes) when it holds
    other databases the file did not name, or streaming replicas it did not allow."""
    cfg = config(env)
    others = shared_with(conn, env.db.name, cfg.rewind)
    if others:
        raise PreflightFailed(
            f"the cluster of {env.db.name} also holds {', '.join(others)}: a point-in-time "
            "restore would rewind them too; list them in backup.pgbackrest.rewind (or * ) "
            "if that is acceptable, or use backup.strategy dump"
        )
    replicas = streaming_replicas(conn)
    if replicas and not cfg.allow_replicas:
        raise PreflightFailed(
            f"streaming replicas follow the cluster ({', '.join(replicas)}): after a "
            "point-in-time restore they must be cloned again; set "
            "backup.pgbackrest.allow_replicas: true if that is planned for"
        )


@dataclass(frozen=True)
class RestorePoint:
    name: str
    lsn: str
    wal: str  # the WAL file holding it
    created_at: str

    @property
    def timeline(self) -> int:
        return int(self.wal[:8], 16) if len(self.wal) >= 8 else 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "timeline": self.timeline}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestorePoint:
        return cls(str(data["name"]), str(data["lsn"]), str(data["wal"]), str(data["created_at"]))


def create_restore_point(conn: psycopg.Connection[Any], name: str) -> RestorePoint:
    """The named point, and its WAL segment switched out so that it gets archived."""
    row = conn.execute(
        "select p::text, pg_walfile_name(p), now()::text from pg_create_restore_point(%s) as p",
        [name],
    ).fetchone()
    assert row is not None
    conn.execute("select pg_switch_wal()")
    return RestorePoint(name, str(row[0]), str(row[1]), str(row[2]))


def wait_archived(conn: psycopg.Connection[Any], wal: str, timeout: float) -> float:
    """Seconds until `wal` (or a later segment) is in the archive; StepFailed after
    `timeout`, naming the last failure if archiving fails."""
    started = time.monotonic()
    while True:
        row = conn.execute(
            "select last_archived_wal, last_failed_wal, "
            "last_failed_time > coalesce(last_archived_time, '-infinity') from pg_stat_archiver"
        ).fetchone()
        assert row is not None
        last = str(row[0] or "")
        if re.fullmatch(r"[0-9A-F]{24}", last) and last >= wal:
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited > timeout:
            failing = f"; archiving fails (last failed {row[1]})" if row[2] else ""
            raise StepFailed(
                f"WAL segment {wal} (the restore point's) was not archived within "
                f"{timeout:g}s{failing}: see the PostgreSQL log and `pgbackrest check`"
            )
        time.sleep(0.05 if waited < 2 else 0.25)


# -- going back ------------------------------------------------------------------------------


def check_restorable(env: Environment, repo: Remote, details: dict[str, Any]) -> str:
    """A run's restore point can be restored: a backup that ended before it is still in the
    repository and the archive reaches its WAL segment (PreflightFailed otherwise: the
    cluster is not touched)."""
    point = RestorePoint.from_json(details["restore_point"])
    try:
        info = repo_info(env, repo)
    except StepFailed as exc:
        raise PreflightFailed(str(exc)) from None
    chosen = info.before(point.lsn)
    if chosen is None:
        raise PreflightFailed(
            f"no backup in the pgBackRest repository ended before restore point {point.name} "
            f"(lsn {point.lsn}): they expired (repo1-retention-full), so it cannot be restored"
        )
    if not info.archive_max or info.archive_max[8:] < point.wal[8:]:
        raise PreflightFailed(
            f"the WAL archive ends at {info.archive_max or 'nothing'}, before restore point "
            f"{point.name} (in {point.wal}): it cannot be reached"
        )
    return (
        f"restore point {point.name} (lsn {point.lsn}, timeline {point.timeline}); backup "
        f"{chosen.label} before it; WAL archived to {info.archive_max}"
    )


def restore_script(env: Environment, point: RestorePoint, label: str) -> str:
    """Stop the cluster, restore it to `point` from backup `label`, start it: one job, so a
    lost link leaves its outcome (and which part ended it) on the database host."""
    cfg = config(env)
    restore = (
        f"{cfg.command} --stanza={q(cfg.stanza)} --delta --type=name --target={q(point.name)} "
        f"--target-action=promote --target-timeline={point.timeline} --set={q(label)} "
        "--log-level-console=info restore"
    )
    return (
        "set -o pipefail\n"
        + 'mark() { echo "seed-mark $1 $(date +%s.%N)"; }\n'
        + "mark stop\n"
        + f"{cfg.stop} || {{ echo 'seed-failed stopping the cluster'; exit 3; }}\n"
        + "mark restore\n"
        + f"{restore} || {{ echo 'seed-failed pgbackrest restore'; exit 4; }}\n"
        + "mark start\n"
        + f"{cfg.start} || {{ echo 'seed-failed starting the cluster'; exit 5; }}\n"
        + "mark started\n"
    )


def marks(output: str) -> dict[str, float]:
    """The moments the restore job noted (`seed-mark <part> <epoch>`)."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "seed-mark":
            try:
                found[parts[1]] = float(parts[2])
            except ValueError:
                continue
    return found


def restore_cluster(
    env: Environment,
    db: Remote,
    point: RestorePoint,
    label: str,
    job_dir: str,
    on_output: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run the restore job and wait; returns seconds per part (stop, restore, start)."""
    job = start_job(env, db, job_dir, restore_script(env, point, label))

    def said(text: str) -> None:
        if on_output is not None:
            for line in text.splitlines():
                if line.strip() and not line.startswith("seed-mark "):
                    on_output(line)

    try:
        code, output = job.wait(on_output=said)
    except RemoteError as exc:
        raise StepFailed(f"the restore job on {db.label} was lost: {exc}") from None
    if code != 0:
        failed = next(
            (line[12:] for line in output.splitlines() if line.startswith("seed-failed ")), ""
        )
        raise StepFailed(
            f"point-in-time restore on {db.label} failed (exit {code}"
            + (f", {failed}" if failed else "")
            + f"): {_error_line(output)}"
        )
    m = marks(output)
    parts = {}
    for part, end in (("stop", "restore"), ("restore", "start"), ("start", "started")):
        if part in m and end in m:
            parts[part] = round(m[end] - m[part], 3)
    return parts


def parts_text(parts: dict[str, Any]) -> str:
    """`restored to seed-… from <label>: stop 0.2s, restore 0.5s, start 0.4s, replay 0.3s`."""
    times = ", ".join(
        f"{k} {parts[k]:.1f}s" for k in ("stop", "restore", "start", "replay") if k in parts
    )
    return f"restored to {parts.get('point')} from backup {parts.get('backup')}: {times}"


def wait_promoted(
    connect: Callable[[], psycopg.Connection[Any]], point: RestorePoint, timeout: float = 3600
) -> float:
    """Seconds until the restored cluster has replayed to the point and promoted (accepts
    writes); StepFailed if recovery ended elsewhere or did not finish in time."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        try:
            with connect() as conn:
                row = conn.execute("select pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return time.monotonic() - started
        except (psycopg.Error, SeedError) as exc:
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        time.sleep(0.2)
    raise StepFailed(
        f"the restored cluster did not finish recovery to {point.name} within {timeout:g}s"
        + (f" ({last})" if last else "")
        + ": see the PostgreSQL log on the db host"
    )


# -- a scratch cluster (backup --verify-restore) ---------------------------------------------


def scratch_dir(env: Environment, run_id: str) -> str:
    """Where `run_id`'s scratch cluster is restored on the db host."""
    return f"{config(env).verify_dir}/seed-verify-{run_id}"


def free_port_script(low: int = 20000, high: int = 32000) -> str:
    """A shell line printing a TCP port of 127.0.0.1 nothing listens on (bash's /dev/tcp),
    tried from a random place in [low, high) (below Linux's ephemeral ports, so no
    outgoing connection holds it; random, so two verifications at once rarely meet)."""
    span = high - low
    return (
        f"s=$((RANDOM % {span})); for i in $(seq 0 200); do p=$(( {low} + (s + i) % {span} )); "
        '(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; exit 0; }; done; exit 1'
    )


def scratch_script(
    env: Environment, point: RestorePoint, label: str, directory: str, port: int, bindir: str
) -> str:
    """Restore `point` into `directory` as the cluster's owner, WAL archiving off (the
    scratch cluster must never push into the stanza), and start it on 127.0.0.1:`port`
    with its own authentication file (the live cluster's roles and passwords)."""
    cfg = config(env)
    own = cfg.as_owner
    d = directory
    restore = (
        f"{cfg.command} --stanza={q(cfg.stanza)} --pg1-path={q(d)} --type=name "
        f"--target={q(point.name)} --target-action=promote --target-timeline={point.timeline} "
        f"--archive-mode=off --set={q(label)} --log-level-console=warn restore"
    )
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={d} "
        f"-c hba_file={d}/seed_hba.conf -c ident_file={d}/seed_ident.conf "
        "-c archive_mode=off"
    )
    return (
        "set -eu\n"
        + 'mark() { echo "seed-mark $1 $(date +%s.%N)"; }\n'
        + f"{own} mkdir -m 700 {q(d)}\n"
        + "mark restore\n"
        + f"{restore}\n"
        + "printf 'local all all trust\\nhost all all 127.0.0.1/32 scram-sha-256\\n' | "
        + f"{own} tee {q(d + '/seed_hba.conf')} > /dev/null\n"
        + f": | {own} tee {q(d + '/seed_ident.conf')} > /dev/null\n"
        # Debian keeps postgresql.conf in /etc, outside the backup: an empty one will do
        + f"[ -f {q(d + '/postgresql.conf')} ] || : | {own} tee {q(d + '/postgresql.conf')}"
        + " > /dev/null\n"
        + "mark start\n"
        + f"{own} {q(bindir + '/pg_ctl')} -D {q(d)} -l {q(d + '/seed.log')} -w -t 3600 "
        + f"-o {q(options)} start || {{ {own} tail -n 3 {q(d + '/seed.log')}; exit 1; }}\n"
        + "mark started\n"
    )


def scratch_cleanup(env: Environment, directory: str, bindir: str) -> str:
    """Stop the scratch cluster (immediate: it is thrown away) and remove it."""
    own = config(env).as_owner
    if not posixpath.basename(directory).startswith("seed-verify-"):
        raise StepFailed(f"refusing to remove {directory}: not a scratch cluster of Seed's")
    return (
        f"{own} {q(bindir + '/pg_ctl')} -D {q(directory)} -m immediate -w stop "
        f"> /dev/null 2>&1; {own} rm -rf {q(directory)}"
    )
