"""Verified backups on the state host (DESIGN: Backup facts).

`pg_dump -Fc` runs as a remote job: temp name, pg_dump's own exit code (no
unchecked pipe), fsync, a full read with `pg_restore -f /dev/null` (a `--list`
passes truncated files), sha256, then rename into place. The manifest beside
the dump records what a restore needs to trust it. Files 0600, directory 0700.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from seed.config import Environment, Secret
from seed.errors import PreflightFailed
from seed.remote import Remote, RemoteJob, q


@dataclass
class BackupRecord:
    id: str
    path: str
    size: int
    sha256: str
    seconds: float
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
    verified: str = "full read (pg_restore -f /dev/null)"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["applied_migrations"] = [list(m) for m in self.applied_migrations]
        return data


def pgpass_line(host: str, port: int, user: str, secret: Secret | None) -> bytes:
    """One libpq password-file line for any database on host:port for `user`."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    password = secret.reveal() if secret else ""
    return f"{esc(host)}:{port}:*:{esc(user)}:{esc(password)}\n".encode()


def pg_dump_version(env: Environment, remote: Remote) -> tuple[str, int]:
    """(`pg_dump --version` text, major) on the state host; missing → PreflightFailed."""
    pg_dump = env.backup.tool("pg_dump")
    res = remote.run(f"{q(pg_dump)} --version")
    if not res.ok:
        raise PreflightFailed(
            f"{pg_dump} not found on state host {remote.label}; install the PostgreSQL client "
            "matching the server version (e.g. apt-get install postgresql-client), or set "
            "backup.pg_bin to its directory"
        )
    text = res.stdout.strip()
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


def restore_space(
    env: Environment, remote: Remote, conn: psycopg.Connection[Any], size: int
) -> str:
    """Refuse when the data directory could not hold a restored copy (a restore creates a
    second database of about the same size before the swap, plus WAL)."""
    if env.db.host not in ("127.0.0.1", "localhost", "::1"):
        return "restore space not checked (the database is not on the state host)"
    try:
        row = conn.execute("select current_setting('data_directory')").fetchone()
    except psycopg.Error:
        conn.rollback()
        return "restore space not checked (data_directory not readable by db.admin_user)"
    data_dir = str(row[0]) if row else ""
    free = free_bytes(remote, data_dir)
    needed = int(size * 1.2)
    if free < needed:
        raise PreflightFailed(
            f"the data directory {data_dir} on {remote.label} has {free / 1e6:.0f} MB free; "
            f"a restore (rollback) needs about {needed / 1e6:.0f} MB: free space first"
        )
    return f"{free / 1e9:.1f} GB free for a restore"


def dump_script(
    env: Environment,
    final: str,
    passfile: str,
    app_name: str,
    snapshot: str | None,
) -> str:
    """The bash run on the state host; prints `seed-backup sha256=<hex> size=<n>` last."""
    directory = posixpath.dirname(final)
    tmp = posixpath.join(directory, "." + posixpath.basename(final) + ".partial")
    db = env.db
    snap = f"--snapshot={q(snapshot)} " if snapshot else ""
    return f"""set -euo pipefail
umask 077
export PGPASSFILE={q(passfile)} PGAPPNAME={q(app_name)}
tmp={q(tmp)}
final={q(final)}
trap 'rm -f "$tmp" "$PGPASSFILE"' EXIT
mkdir -p {q(directory)} && chmod 700 {q(directory)}
echo {q("dumping " + db.name)} to "$final"
{q(env.backup.tool("pg_dump"))} --format=custom --compress={env.backup.compression} \\
  --lock-wait-timeout={q(env.backup.lock_wait_timeout)} {snap}\\
  --host={q(db.host)} --port={db.port} --username={q(db.admin_user)} --no-password \\
  --file="$tmp" {q(db.name)}
sync "$tmp"
echo "verifying: full read of the archive"
{q(env.backup.tool("pg_restore"))} --file=/dev/null "$tmp"
sha=$(sha256sum "$tmp" | cut -d' ' -f1)
size=$(stat -c %s "$tmp")
mv "$tmp" "$final"
sync {q(directory)}
echo "seed-backup sha256=$sha size=$size"
"""


def take_backup(
    env: Environment,
    remote: Remote,
    backup_id: str,
    job_dir: str,
    app_name: str,
    snapshot: str | None = None,
) -> tuple[str, str, int]:
    """Dump, verify and checksum; returns (path, sha256, size). Failure → PreflightFailed."""
    final = posixpath.join(env.backup.dir, f"{backup_id}.dump")
    remote.mkdirs(job_dir, mode=0o700)
    passfile = posixpath.join(job_dir, "pgpass")
    remote.put_bytes(
        pgpass_line(env.db.host, env.db.port, env.db.admin_user, env.db.admin_password),
        passfile,
    )
    script = dump_script(env, final, passfile, app_name, snapshot)
    job = RemoteJob.start(remote, job_dir, script)
    code, output = job.wait()
    match = re.search(r"seed-backup sha256=([0-9a-f]{64}) size=(\d+)", output)
    if code != 0 or not match:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        reason = " | ".join(lines[-2:]) or f"exit {code}"
        raise PreflightFailed(f"backup on {remote.label} failed: {reason}")
    return final, match.group(1), int(match.group(2))


def write_manifest(remote: Remote, record: BackupRecord) -> str:
    path = record.path.removesuffix(".dump") + ".json"
    data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode()
    remote.put_bytes(data, path, mode=0o600)
    return path


def verify_file(env: Environment, remote: Remote, path: str, sha256: str) -> None:
    """Re-check a backup before trusting it for a restore: sha256, then a full read."""
    res = remote.run(f"sha256sum {q(path)} | cut -d' ' -f1")
    if not res.ok or res.stdout.strip() != sha256:
        raise PreflightFailed(f"backup {path} on {remote.label}: sha256 mismatch or unreadable")
    res = remote.run(f"{q(env.backup.tool('pg_restore'))} --file=/dev/null {q(path)}")
    if not res.ok:
        raise PreflightFailed(f"backup {path} on {remote.label}: full read failed: {res.tail(2)}")
