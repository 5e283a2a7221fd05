"""A local wheel cache so sandbox and test deploys build venvs without re-downloading."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

from seed.errors import PreflightFailed


def ensure_wheelhouse(requirements: list[Path], cache_dir: Path) -> Path:
    """Download wheels for `requirements` into `cache_dir` once (keyed by their content).

    Two sandboxes set up at once (parallel test workers, two users of one clone) share
    the cache: the download runs under an exclusive lock on `cache_dir/.lock`, and the
    second one finds the marker the first one wrote.
    """
    digest = hashlib.sha256()
    for path in requirements:
        digest.update(path.read_bytes())
    marker = cache_dir / f".complete-{digest.hexdigest()[:16]}"
    if marker.exists():
        return cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            _download(requirements, cache_dir)
            marker.touch()
    return cache_dir


def _download(requirements: list[Path], cache_dir: Path) -> None:
    args = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
    args += ["--only-binary=:all:", "-d", str(cache_dir)]
    for path in requirements:
        args += ["-r", str(path)]
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        reason = lines[-1] if lines else f"pip exited {res.returncode}"
        raise PreflightFailed(f"downloading wheels into {cache_dir} failed: {reason}")
