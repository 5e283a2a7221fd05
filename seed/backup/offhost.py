"""An off-host copy of every dump (backup.copy: {host, dir}, or the pgBackRest repository
host by default on a protected environment under backup.strategy pitr).

The dump is streamed from the state host to the other host through Seed's own SSH
connections (the hosts need no access to each other), hashed on the way, written to a
temporary name, then hashed again *there* with `sha256sum` before it is renamed into
place beside a copy of its manifest (0600 files in a 0700 directory). It runs after
maintenance off: the window never waits for it. Retention removes a copy with its
backup.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

from seed.backup.dump import manifest_path
from seed.errors import StepFailed
from seed.remote.ssh import Remote, q

CHUNK = 1 << 20


def _stream(source: Remote, src: str, target: Remote, dst: str) -> str:
    """Copy one file; returns the sha256 of what was sent."""
    digest = hashlib.sha256()
    with source.sftp.open(src, "rb") as reader, target.sftp.open(dst, "wb") as writer:
        reader.prefetch()
        writer.set_pipelined(True)
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def _check_there(target: Remote, path: str, expected: str) -> None:
    res = target.check(f"sha256sum {q(path)}", f"sha256 of the copy {path}", long=True)
    found = res.stdout.split()[0] if res.stdout.split() else ""
    if found != expected:
        target.run(f"rm -f {q(path)}")
        raise StepFailed(
            f"the copy {path} on {target.label} has sha256 {found[:12] or '?'}, not "
            f"{expected[:12]}: removed; the backup on the state host is unchanged"
        )


def copy_dump(
    source: Remote, target: Remote, manifest: dict[str, Any], directory: str
) -> dict[str, Any]:
    """The dump (a file, or every file of a directory-format dump) and its manifest copied to
    `directory` on `target`, each file's sha256 checked on `target`. Returns where."""
    path = str(manifest["path"])
    name = posixpath.basename(path)
    final = posixpath.join(directory, name)
    target.mkdirs(directory, mode=0o700)
    if path.endswith(".dir"):
        files = [(f["name"], f["sha256"]) for f in manifest.get("files") or []]
        if not files:
            raise StepFailed(f"{path}: its manifest lists no files to copy")
        staging = final + ".partial"
        target.run(f"rm -rf {q(staging)}")
        for rel, sha in files:
            dst = posixpath.join(staging, rel)
            target.mkdirs(posixpath.dirname(dst), mode=0o700)
            sent = _stream(source, posixpath.join(path, rel), target, dst)
            if sent != sha:
                raise StepFailed(f"{path}/{rel} changed while it was copied (sha256 {sent[:12]})")
            _check_there(target, dst, sha)
        target.check(
            f"chmod -R go-rwx {q(staging)} && rm -rf {q(final)} && mv {q(staging)} {q(final)}",
            f"moving the copy into place on {target.label}",
        )
    else:
        partial = final + ".partial"
        sent = _stream(source, path, target, partial)
        if sent != manifest["sha256"]:
            target.run(f"rm -f {q(partial)}")
            raise StepFailed(f"{path} changed while it was copied (sha256 {sent[:12]})")
        _check_there(target, partial, str(manifest["sha256"]))
        target.check(
            f"chmod 600 {q(partial)} && mv -f {q(partial)} {q(final)}",
            f"moving the copy into place on {target.label}",
        )
    target.put_bytes(
        json.dumps(manifest, indent=2, sort_keys=True).encode(),
        manifest_path(final),
    )
    return {"host": target.label, "path": final, "sha256_checked_there": True}


def delete_copy(target: Remote, manifest: dict[str, Any], directory: str) -> None:
    """The copy of a backup retention deleted (nothing if there is none)."""
    final = posixpath.join(directory, posixpath.basename(str(manifest["path"])))
    target.run(f"rm -rf {q(final)} {q(final + '.partial')} {q(manifest_path(final))}")
