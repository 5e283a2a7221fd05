"""Locate the PostgreSQL server binaries on this machine (DESIGN: Fresh-machine facts).

Debian's `postgresql` package puts `initdb`, `pg_ctl` and `postgres` in
`/usr/lib/postgresql/<version>/bin`, which is *not* on PATH. Search order:

1. `SEED_PG_BINDIR` (an explicit override; must contain `initdb`);
2. `/usr/lib/postgresql/<highest version>/bin`;
3. `pg_config --bindir`;
4. the directory of `initdb` found on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from seed.errors import ConfigError

DEBIAN_ROOT = Path("/usr/lib/postgresql")
ENV_OVERRIDE = "SEED_PG_BINDIR"


def _has_initdb(d: Path) -> bool:
    return (d / "initdb").is_file() and os.access(d / "initdb", os.X_OK)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (-1,)


def _debian_bindir(base: Path) -> Path | None:
    try:
        versions = sorted(
            (d for d in base.iterdir() if d.is_dir()), key=lambda d: _version_key(d.name)
        )
    except OSError:
        return None
    for d in reversed(versions):
        if _has_initdb(d / "bin"):
            return d / "bin"
    return None


def _pg_config_bindir() -> Path | None:
    exe = shutil.which("pg_config")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    d = Path(out.stdout.strip())
    return d if _has_initdb(d) else None


def find_bindir(debian_root: Path = DEBIAN_ROOT) -> Path:
    """The directory holding `initdb`, `pg_ctl`, `postgres` (see module doc for the order)."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        d = Path(override)
        if not _has_initdb(d):
            raise ConfigError(
                f"{ENV_OVERRIDE}={override} has no executable initdb: "
                "point it at PostgreSQL's bin directory or unset it"
            )
        return d
    d_or_none = _debian_bindir(debian_root) or _pg_config_bindir()
    if d_or_none is not None:
        return d_or_none
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent
    raise ConfigError(
        f"PostgreSQL server binaries not found (no initdb in {debian_root}/*/bin, "
        f"pg_config --bindir or PATH): install PostgreSQL (make install-system) "
        f"or set {ENV_OVERRIDE}"
    )


@cache
def _cached_bindir() -> Path:
    return find_bindir()


def pg_bin(name: str) -> Path:
    """Absolute path of one PostgreSQL program (`initdb`, `pg_ctl`, `pg_dump`, ...)."""
    bindir = _cached_bindir()
    exe = bindir / name
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise ConfigError(
            f"PostgreSQL program {name} not found in {bindir}: install the matching "
            "PostgreSQL client/server package (make install-system)"
        )
    return exe


def server_version(bindir: Path | None = None) -> tuple[int, ...]:
    """Version of the located `postgres` binary, e.g. (15, 10)."""
    exe = (bindir or _cached_bindir()) / "postgres"
    out = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    m = re.search(r"(\d+)(?:\.(\d+))?", out.stdout)
    if out.returncode != 0 or m is None:
        raise ConfigError(f"could not read the version of {exe}: reinstall PostgreSQL")
    return tuple(int(g) for g in m.groups() if g is not None)
