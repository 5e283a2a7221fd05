"""Verified backups on the state host (DESIGN: Backup facts).

`pg_dump -Fc` runs as a remote job: one pass writes the temp file while sha256
and a full read with `pg_restore -f /dev/null` (a `--list` passes truncated
files) consume the same stream, every stage's exit status checked (pipefail);
then fsync and rename into place. The manifest beside the dump records what a
restore needs to trust it. Files 0600, directory 0700.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import psycopg

from seed.config.environment import Environment, Secret
from seed.errors import PreflightFailed
from seed.journal.record import RunRecord
from seed.remote.ssh import Remote, RemoteJob, q
from seed.run.report import human, throttled


@dataclass
class BackupRecord:
    """The manifest written beside every dump (`<id>.json`, 0600)."""

    id: str
    path: str
    size: int
    sha256: str
    seconds: float
    environment: str = ""
    label: str = ""
    kind: str = "deploy"  # deploy | manual
    deploy_id: str | None = None
    database_size: int = 0
    database_properties: dict[str, Any] = field(default_factory=dict)
    format: str = "custom"
    compression: int = 1
    snapshot: str | None = None
    pg_dump_version: str = ""
    server_version: int = 0
    database: str = ""
    code_sha: str | None = None
    applied_migrations: list[tuple[str, str]] = field(default_factory=list)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_at: str = ""
    created_by: str = ""
    verified: str = "full read (pg_restore -f /dev/null of the stream written), sha256"
    files: list[dict[str, Any]] = field(default_factory=list)  # directory format: per file

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["applied_migrations"] = [list(m) for m in self.applied_migrations]
        if not self.files:
            data["files"] = [
                {"name": posixpath.basename(self.path), "size": self.size, "sha256": self.sha256}
            ]
        return data

    def as_before_state(self) -> dict[str, Any]:
        """What a restore of this backup must reproduce (restore.verify_like_before)."""
        return manifest_before_state(self.to_json())


def manifest_before_state(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "tables": manifest["tables"],
        "applied_migrations": [f"{a}.{n}" for a, n in manifest["applied_migrations"]],
        "database_properties": manifest["database_properties"],
    }


def list_manifests(env: Environment, remote: Remote) -> list[dict[str, Any]]:
    """Every backup manifest in backup.dir, oldest first (ids sort by time)."""
    out = []
    for name in remote.listdir(env.backup.dir):
        if name.endswith(".json") and not name.startswith("."):
            try:
                data = json.loads(remote.get_bytes(posixpath.join(env.backup.dir, name)))
            except (json.JSONDecodeError, OSError):
                continue
            if isinstance(data, dict) and "sha256" in data:
                out.append(data)
    return sorted(out, key=lambda m: str(m.get("created_at", "")) + str(m["id"]))


def read_manifest(env: Environment, remote: Remote, backup_id: str | None) -> dict[str, Any] | None:
    """Backup `backup_id`'s manifest (`<backup.dir>/<id>.json`), None when it is not there."""
    if not backup_id:
        return None
    try:
        data = json.loads(remote.get_bytes(posixpath.join(env.backup.dir, f"{backup_id}.json")))
    except (json.JSONDecodeError, OSError):
        return None
    return data if isinstance(data, dict) and data.get("id") == backup_id else None


def expected_dump_size(manifests: list[dict[str, Any]], database_size: int) -> int:
    """The dump's likely size: the database size times the last backup's compression
    ratio (the database size when there is no earlier backup)."""
    for manifest in reversed(manifests):
        if manifest.get("database_size") and manifest.get("size"):
            ratio = float(manifest["size"]) / float(manifest["database_size"])
            return int(database_size * min(max(ratio, 0.01), 1.0))
    return database_size


def estimate_size(manifests: list[dict[str, Any]], database_size: int) -> int:
    """Room a dump needs: its expected size with a 20 % margin once a backup gave a
    compression ratio (the database size before that)."""
    if not any(m.get("database_size") and m.get("size") for m in manifests):
        return database_size
    return int(expected_dump_size(manifests, database_size) * 1.2)


def retention(
    manifests: list[dict[str, Any]], keep: int, protect: set[str]
) -> list[dict[str, Any]]:
    """The backups to delete: beyond the newest `keep`, never one in `protect`."""
    ordered = list(manifests)
    kept = {str(m["id"]) for m in ordered[-keep:]} | protect
    return [m for m in ordered if str(m["id"]) not in kept]


def delete_backup(remote: Remote, manifest: dict[str, Any]) -> None:
    path = str(manifest["path"])
    remote.check(f"rm -rf {q(path)} && rm -f {q(manifest_path(path))}", f"deleting backup {path}")


def pgpass_line(host: str, port: int, user: str, secret: Secret | None) -> bytes:
    """One libpq password-file line for any database on host:port for `user`."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    password = secret.reveal() if secret else ""
    return f"{esc(host)}:{port}:*:{esc(user)}:{esc(password)}\n".encode()


def schema_fingerprint(
    env: Environment, remote: Remote, job_dir: str, app_name: str, snapshot: str | None = None
) -> str:
    """sha256 of `pg_dump --schema-only` (tables, columns, types, defaults, constraints,
    indexes, grants), without its comments and the random `\\restrict` key newer pg_dumps
    print: equal exactly when the two schemas are. In `snapshot` when given."""
    remote.mkdirs(job_dir, mode=0o700)
    passfile = posixpath.join(job_dir, "pgpass-schema")
    db = env.db
    remote.put_bytes(pgpass_line(db.host, db.port, db.admin_user, db.admin_password), passfile)
    snap = f"--snapshot={q(snapshot)} " if snapshot else ""
    script = (
        f"set -euo pipefail; export PGPASSFILE={q(passfile)} PGAPPNAME={q(app_name)}; "
        f"trap 'rm -f \"$PGPASSFILE\"' EXIT; "
        f"{q(env.backup.tool('pg_dump'))} --schema-only {snap}--host={q(db.host)} "
        f"--port={db.port} --username={q(db.admin_user)} --no-password {q(db.name)} "
        "| grep -v -e '^--' -e '^\\\\restrict ' -e '^\\\\unrestrict ' -e '^$' | sha256sum"
    )
    res = remote.run(f"bash -c {q(script)}", timeout=600)
    digest = res.stdout.split()[0] if res.ok and res.stdout.strip() else ""
    if len(digest) != 64:
        raise PreflightFailed(f"pg_dump --schema-only on {remote.label} failed: {res.tail(2)}")
    return digest


def usable_pg_dump(env: Environment, remote: Remote, server_version: int) -> str:
    """`pg_dump --version` on the state host, refused (PreflightFailed) when it is older than
    the server (`server_version`: server_version_num) or missing."""
    text, major = pg_dump_version(env, remote)
    if major < server_version // 10000:
        raise PreflightFailed(
            f"pg_dump on {remote.label} is {text!r}, older than the server "
            f"({server_version // 10000}); install a pg_dump >= the server's or set "
            "backup.pg_bin to a newer one"
        )
    return text


def pg_dump_version(env: Environment, remote: Remote) -> tuple[str, int]:
    """(`pg_dump --version` text, major) on the state host; missing → PreflightFailed.

    pg_restore and vacuumdb (a rollback needs both) are asked in the same command.
    """
    tools = [env.backup.tool(name) for name in ("pg_dump", "pg_restore", "vacuumdb")]
    probe = " && ".join(
        f"{{ {q(t)} --version || {{ echo 'seed-missing {t}' >&2; exit 1; }}; }}" for t in tools
    )
    res = remote.run(probe)
    if not res.ok:
        missing = re.search(r"seed-missing (.+)", res.stderr)
        tool = missing.group(1).strip() if missing else tools[0]
        raise PreflightFailed(
            f"{tool} not found on state host {remote.label}; install the PostgreSQL client "
            "matching the server version (e.g. apt-get install postgresql-client), or set "
            "backup.pg_bin to its directory"
        )
    text = res.stdout.strip().splitlines()[0]
    match = re.search(r"(\d+)(?:\.(\d+))?", text)
    if not match:
        raise PreflightFailed(f"cannot read pg_dump version on {remote.label}: {text!r}")
    return text, int(match.group(1))


def free_bytes(remote: Remote, path: str) -> int:
    """Free bytes on the filesystem holding `path` (its nearest existing parent)."""
    res = remote.check(
        f'p={q(path)}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; df -P -B1 "$p" | tail -1',
        "checking free disk space",
    )
    fields = res.stdout.split()
    return int(fields[3])


@dataclass
class Space:
    """Room for a backup of the database (and for a restored copy of it), measured once."""

    database_size: int
    needed: int  # room for the backup: its expected size with a margin
    free: int  # in backup.dir
    dir: str
    host: str
    restore: str  # the restore-space finding, or "TOO SMALL: ..."
    expected: int = 0  # the dump's likely size (no margin): what progress measures against

    @property
    def fits(self) -> bool:
        return self.free >= self.needed

    def refusal(self) -> str:
        return (
            f"backup dir {self.dir} on {self.host} has {human(self.free)} free, the backup "
            f"needs about {human(self.needed)}"
        )


def backup_space(
    env: Environment,
    remote: Remote,
    conn: psycopg.Connection[Any],
    size: int,
    manifests: list[dict[str, Any]] | None = None,
    refuse: bool = True,
    with_restore: bool = True,
) -> Space:
    """The one backup-fits check (upgradedb's pre-flight, `backup`, `plan`): the expected
    dump size from the last backup's compression ratio vs the free space of backup.dir,
    and (`with_restore`) the data directory's room for a restored copy. With `refuse`
    (the default) a shortfall of either is PreflightFailed (exit 4); `plan` reports it."""
    if manifests is None:
        manifests = list_manifests(env, remote)
    needed = estimate_size(manifests, size)
    free = free_bytes(remote, env.backup.dir)
    space = Space(
        size, needed, free, env.backup.dir, remote.label, "", expected_dump_size(manifests, size)
    )
    if refuse and not space.fits:
        raise PreflightFailed(space.refusal())
    if not with_restore:
        return space
    try:
        space.restore = restore_space(env, remote, conn, size)
    except PreflightFailed as exc:
        if refuse:
            raise
        space.restore = f"TOO SMALL: {exc}"
    return space


def restore_space(
    env: Environment, remote: Remote, conn: psycopg.Connection[Any], size: int
) -> str:
    """Refuse when the data directory could not hold a restored copy (a restore creates a
    second database of about the same size before the swap, plus WAL)."""
    if env.db.host not in ("127.0.0.1", "localhost", "::1"):
        return "restore space not checked (the database is not on the state host)"
    try:
        # the database's tablespace: where a restored copy is written
        row = conn.execute(
            "select coalesce(nullif(pg_tablespace_location(d.dattablespace), ''), "
            "current_setting('data_directory')) from pg_database d where d.datname = %s",
            (env.db.name,),
        ).fetchone()
    except psycopg.Error:
        conn.rollback()
        return "restore space not checked (data_directory not readable by db.admin_user)"
    data_dir = str(row[0]) if row else ""
    free = free_bytes(remote, data_dir)
    needed = int(size * 1.2)
    if free < needed:
        raise PreflightFailed(
            f"the database's directory {data_dir} on {remote.label} has {human(free)} free; "
            f"a restore (rollback) needs about {human(needed)}: free space first"
        )
    return f"{free / 1e9:.1f} GB free for a restore"


def partial_path(final: str) -> str:
    """Where a dump is written until it is verified and renamed to `final`."""
    return posixpath.join(posixpath.dirname(final), "." + posixpath.basename(final) + ".partial")


def bytes_written(remote: Remote, path: str) -> int | None:
    """The size of the file (or the files of the folder) at `path` so far; None when it is
    not there (yet, or any more) or the look failed."""
    try:
        attrs = remote.sftp.stat(path)
        if stat.S_ISDIR(attrs.st_mode or 0):
            return sum(a.st_size or 0 for a in remote.sftp.listdir_attr(path))
        return attrs.st_size
    except (OSError, EOFError, paramiko.SSHException):
        return None


def dump_script(
    env: Environment,
    final: str,
    passfile: str,
    app_name: str,
    snapshot: str | None,
) -> str:
    """The bash run on the state host; prints `seed-backup sha256=<hex> size=<n>` last.

    One pass: pg_dump's stream goes to the temp file, to sha256sum (through a FIFO) and
    to `pg_restore -f /dev/null`, which reads every byte of the archive (a truncated or
    corrupt stream fails it). pipefail makes any stage's failure the script's failure.
    Then fsync, rename into place, fsync the directory.
    """
    directory = posixpath.dirname(final)
    tmp = partial_path(final)
    db = env.db
    snap = f"--snapshot={q(snapshot)} " if snapshot else ""
    if env.backup.format == "directory":
        return _directory_dump_script(env, final, tmp, passfile, app_name, snap)
    return f"""set -euo pipefail
umask 077
export PGPASSFILE={q(passfile)} PGAPPNAME={q(app_name)}
tmp={q(tmp)}
final={q(final)}
work=$(dirname "$PGPASSFILE")
fifo="$work/sha.fifo"
trap 'rm -f "$tmp" "$fifo" "$PGPASSFILE"' EXIT
mkdir -p {q(directory)} && chmod 700 {q(directory)}
rm -f "$fifo" && mkfifo -m 600 "$fifo"
{{ openssl dgst -sha256 -r 2>/dev/null || sha256sum; }} < "$fifo" > "$work/sha256" &
shapid=$!
echo {q("dumping " + db.name)} to "$final"
{q(env.backup.tool("pg_dump"))} --format=custom --compress={env.backup.compression} \\
  --lock-wait-timeout={q(env.backup.lock_wait_timeout)} {snap}\\
  --host={q(db.host)} --port={db.port} --username={q(db.admin_user)} --no-password \\
  {q(db.name)} \\
  | tee "$tmp" "$fifo" \\
  | {q(env.backup.tool("pg_restore"))} --file=/dev/null
wait "$shapid"
echo "verified: full read of the archive while writing it"
sync "$tmp"
sha=$(cut -d' ' -f1 < "$work/sha256")
size=$(stat -c %s "$tmp")
mv "$tmp" "$final"
sync {q(directory)}
echo "seed-backup sha256=$sha size=$size"
"""


# the digest of a directory-format backup: sha256 of its sorted per-file sha256 listing
DIR_LISTING = "find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -r -d '\\n' sha256sum --"


def _directory_dump_script(
    env: Environment, final: str, tmp: str, passfile: str, app_name: str, snap: str
) -> str:
    """`pg_dump -Fd -j N` (parallel; cannot stream): dump, full read, per-file sha256."""
    db = env.db
    directory = posixpath.dirname(final)
    return f"""set -euo pipefail
umask 077
export PGPASSFILE={q(passfile)} PGAPPNAME={q(app_name)}
tmp={q(tmp)}
final={q(final)}
trap 'rm -rf "$tmp"; rm -f "$PGPASSFILE"' EXIT
mkdir -p {q(directory)} && chmod 700 {q(directory)}
rm -rf "$tmp"
echo {q("dumping " + db.name)} to "$final" with {env.backup.jobs} "job(s)"
{q(env.backup.tool("pg_dump"))} --format=directory --jobs={env.backup.jobs} \\
  --compress={env.backup.compression} --lock-wait-timeout={q(env.backup.lock_wait_timeout)} \\
  {snap}--host={q(db.host)} --port={db.port} --username={q(db.admin_user)} --no-password \\
  --file="$tmp" {q(db.name)}
echo "verifying: full read of the archive"
{q(env.backup.tool("pg_restore"))} --file=/dev/null "$tmp"
listing=$(cd "$tmp" && {DIR_LISTING})
sha=$(printf '%s\\n' "$listing" | sha256sum | cut -d' ' -f1)
size=$(du -sb "$tmp" | cut -f1)
sync "$tmp" "$tmp"/*
mv "$tmp" "$final"
sync {q(directory)}
echo "seed-backup sha256=$sha size=$size"
"""


def backup_suffix(env: Environment) -> str:
    return ".dir" if env.backup.format == "directory" else ".dump"


def manifest_path(path: str) -> str:
    """`<id>.json` beside `<id>.dump` (custom format) or `<id>.dir` (directory format)."""
    for suffix in (".dump", ".dir"):
        if path.endswith(suffix):
            return path[: -len(suffix)] + ".json"
    return path + ".json"


def backup_files(remote: Remote, path: str) -> list[dict[str, Any]]:
    """sha256 and size of every file of a directory-format backup."""
    res = remote.check(
        f"cd {q(path)} && {DIR_LISTING} && find . -type f -printf 'size %s %P\\n'",
        f"listing {path}",
        long=True,  # a sha256 of every file: as long as the backup is big
    )
    sizes: dict[str, int] = {}
    digests: list[tuple[str, str]] = []
    for line in res.stdout.splitlines():
        if line.startswith("size "):
            _, n, name = line.split(" ", 2)
            sizes[name] = int(n)
        elif line.strip():
            digest, name = line.split(None, 1)
            digests.append((name.strip(), digest))
    return [{"name": n, "sha256": d, "size": sizes.get(n, 0)} for n, d in digests]


def take_backup(
    env: Environment,
    remote: Remote,
    backup_id: str,
    job_dir: str,
    app_name: str,
    snapshot: str | None = None,
    on_lost: Callable[[], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, str, int]:
    """Dump, verify and checksum; returns (path, sha256, size). Failure → PreflightFailed.
    `progress` gets the bytes written so far, about twice a second."""
    final = posixpath.join(env.backup.dir, backup_id + backup_suffix(env))
    remote.mkdirs(job_dir, mode=0o700)
    passfile = posixpath.join(job_dir, "pgpass")
    remote.put_bytes(
        pgpass_line(env.db.host, env.db.port, env.db.admin_user, env.db.admin_password),
        passfile,
    )
    script = dump_script(env, final, passfile, app_name, snapshot)
    job = RemoteJob.start(remote, job_dir, script)
    on_poll = None
    if progress is not None:
        on_poll = throttled(0.5, lambda: bytes_written(remote, partial_path(final)), progress)
    code, output = job.wait(on_lost=on_lost, on_poll=on_poll)
    match = re.search(r"seed-backup sha256=([0-9a-f]{64}) size=(\d+)", output)
    if code != 0 or not match:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        reason = " | ".join(lines[-2:]) or f"exit {code}"
        raise PreflightFailed(f"backup on {remote.label} failed: {reason}")
    if progress is not None:
        progress(int(match.group(2)))
    return final, match.group(1), int(match.group(2))


def write_manifest(remote: Remote, record: BackupRecord) -> str:
    path = manifest_path(record.path)
    data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode()
    remote.put_bytes(data, path, mode=0o600)
    return path


def verify_file(
    env: Environment, remote: Remote, path: str, sha256: str, full_read: bool = True
) -> None:
    """Re-check a backup before trusting it for a restore: sha256, then (unless told not
    to) a full read. The sha256 alone proves the bytes are those that were fully read
    when the backup was taken; the full read is for checks made while nothing is
    stopped yet (an automatic rollback skips it: pg_restore -e reads everything
    before the swap anyway)."""
    if path.endswith(".dir"):
        res = remote.run(f"cd {q(path)} && {DIR_LISTING} | sha256sum | cut -d' ' -f1", long=True)
    else:
        res = remote.run(
            f"{{ openssl dgst -sha256 -r {q(path)} 2>/dev/null || sha256sum {q(path)}; }}"
            " | cut -d' ' -f1",
            long=True,  # reads the whole backup
        )
    if not res.ok or res.stdout.strip() != sha256:
        raise PreflightFailed(f"backup {path} on {remote.label}: sha256 mismatch or unreadable")
    if not full_read:
        return
    res = remote.run(f"{q(env.backup.tool('pg_restore'))} --file=/dev/null {q(path)}", long=True)
    if not res.ok:
        raise PreflightFailed(f"backup {path} on {remote.label}: full read failed: {res.tail(2)}")


def download_backup(remote: Remote, manifest: dict[str, Any], local_dir: Path) -> Path:
    """Copy a backup and its manifest to the control machine; sha256 checked after transfer."""
    target = local_dir / "backups"
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = str(manifest["path"])
    if path.endswith(".dir"):
        raise PreflightFailed(
            f"download of {path}: directory-format backups cannot be downloaded yet; "
            "use format: custom where an off-host copy is required"
        )
    local = target / posixpath.basename(path)
    partial = local.with_name(local.name + ".partial")
    remote.sftp.get(path, str(partial))
    partial.chmod(0o600)
    digest = hashlib.sha256()
    with partial.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != manifest["sha256"]:
        partial.unlink(missing_ok=True)
        raise PreflightFailed(f"download of {path}: sha256 mismatch after transfer")
    partial.replace(local)
    manifest_local = local.with_suffix(".json")
    manifest_local.write_bytes(remote.get_bytes(manifest_path(path)))
    manifest_local.chmod(0o600)
    return local


def find_manifest(manifests: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """`latest` or an id (or a unique id prefix); PreflightFailed when none matches."""
    if not manifests:
        raise PreflightFailed("no backups found: take one with `fab <env> backup`")
    if wanted in ("", "latest"):
        return manifests[-1]
    exact = [m for m in manifests if m["id"] == wanted]
    matches = exact or [m for m in manifests if str(m["id"]).startswith(wanted)]
    if len(matches) != 1:
        what = "no backup" if not matches else f"{len(matches)} backups"
        raise PreflightFailed(f"--backup {wanted}: {what} with that id (see `fab <env> backups`)")
    return matches[0]


def manifest_ref(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a run records of a backup it used: which, where, its sha256, the run that took it."""
    return {k: manifest[k] for k in ("id", "path", "sha256", "deploy_id") if manifest.get(k)}


def good_deploys(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.kind == "upgradedb" and r.outcome == "succeeded"]


def protected_backups(records: list[RunRecord]) -> set[str]:
    """Never deleted by retention: the backup of the last good deploy that took one (a
    code-only deploy may have none: the one a rollback past it needs stays)."""
    backups_of = [r.backup.id for r in good_deploys(records) if r.backup is not None]
    return set(backups_of[-1:])


def needed_by(records: list[RunRecord]) -> dict[str, str]:
    """backup id → why it must be kept (the backup of a deploy a rollback can still undo)."""
    reasons: dict[str, str] = {}
    good = good_deploys(records)
    for record in good:
        if record.backup is not None and not record.rolled_back_by:
            reasons[record.backup.id] = f"rollback of {record.deploy_id}"
    last = next((r for r in reversed(good) if r.backup is not None), None)
    if last is not None and last.backup is not None:
        reasons[last.backup.id] = f"last good deploy {last.deploy_id}"
    return reasons
