"""A local wheel cache so sandbox and test deploys build venvs without re-downloading."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from seed.errors import PreflightFailed


def ensure_wheelhouse(requirements: list[Path], cache_dir: Path) -> Path:
    """Download wheels for `requirements` into `cache_dir` once (keyed by their content)."""
    digest = hashlib.sha256()
    for path in requirements:
        digest.update(path.read_bytes())
    marker = cache_dir / f".complete-{digest.hexdigest()[:16]}"
    if marker.exists():
        return cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
    args += ["--only-binary=:all:", "-d", str(cache_dir)]
    for path in requirements:
        args += ["-r", str(path)]
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        reason = lines[-1] if lines else f"pip exited {res.returncode}"
        raise PreflightFailed(f"downloading wheels into {cache_dir} failed: {reason}")
    marker.touch()
    return cache_dir
