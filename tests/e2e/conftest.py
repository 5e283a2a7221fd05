"""End-to-end fixtures: `fab` as a subprocess against the session's real sandbox.

`fab sandbox.up` runs once against the servers the session fixture started (it is
idempotent): it adds the git origin and the wheel cache, exactly as a user gets them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from seed.db import snapshot_figures
from seed.sandbox import SandboxInfo
from seed.yaml12 import load_yaml12

REPO = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")


@dataclass
class Deployment:
    """The sandbox as the `local` environment sees it, plus helpers to drive and inspect it."""

    sandbox: SandboxInfo
    env: dict[str, str]
    home: Path
    app_port: int
    envdirs: list[Path] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.sandbox.root

    @property
    def deploy_to(self) -> Path:
        return self.root / "server" / "srv" / "shop"

    @property
    def state_dir(self) -> Path:
        return self.root / "server" / "var" / "lib" / "seed" / "local"

    @property
    def backup_dir(self) -> Path:
        return self.root / "server" / "var" / "backups" / "shop"

    def fab(
        self,
        *args: str,
        extra_env: dict[str, str] | None = None,
        envdir: Path | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env, **(extra_env or {})}
        env.pop("SEED_ASSUME_YES", None)
        if envdir is not None:
            env["SEED_ENVIRONMENTS"] = str(envdir)
        return subprocess.run(
            [FAB, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def variant(self, name: str, edit: dict[str, Any] | None = None, **top: Any) -> Path:
        """A copy of environments/local.yml (as `local.yml`) in its own dir, with edits."""
        text = (REPO / "environments" / "local.yml").read_text()
        data = load_yaml12(text)
        for dotted, value in (edit or {}).items():
            node = data
            *parents, last = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            if value == DELETE:
                node.pop(last, None)
            else:
                node[last] = value
        data.update(top)
        directory = self.home / "envs" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "local.yml").write_text(yaml.safe_dump(data, sort_keys=False))
        self.envdirs.append(directory)
        return directory

    def deploy(self, *refs: str) -> None:
        """`upgradedb --ref` each of `refs` in turn, each one succeeding."""
        for ref in refs:
            res = self.fab("local", "upgradedb", "--ref", ref)
            assert res.returncode == 0, res.stdout + res.stderr

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.sandbox.admin_conninfo(dbname), autocommit=True)

    def figures(self) -> dict[str, Any]:
        with self.admin("shop") as conn:
            return {k: v.to_json() for k, v in snapshot_figures(conn).items()}

    def scalar(self, sql: str, dbname: str = "shop") -> Any:
        with self.admin(dbname) as conn:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None

    def current(self) -> str | None:
        link = self.deploy_to / "current"
        return os.readlink(link) if link.is_symlink() else None

    def releases(self) -> list[str]:
        path = self.deploy_to / "releases"
        return sorted(os.listdir(path)) if path.is_dir() else []

    def backups(self) -> list[str]:
        d = self.backup_dir
        return sorted(p.name for p in d.glob("*.dump")) if d.is_dir() else []

    def http(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.app_port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError as exc:
            return 0, str(exc)

    def last_report(self, env: str = "local") -> dict[str, Any]:
        reports = sorted((self.home / env / "reports").glob("*.json"))
        return json.loads(reports[-1].read_text())

    def reset(self) -> None:
        """Back to an empty app database and no deployment (the app stopped)."""
        if (self.deploy_to / "current").exists():
            subprocess.run(
                ["bash", "current/deploy/appctl", "stop"],
                cwd=self.deploy_to,
                capture_output=True,
                check=False,
                timeout=60,
            )
        with self.admin() as conn:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname like 'shop%' and pid <> pg_backend_pid()"
            )
            for (name,) in conn.execute(
                "select datname from pg_database where datname like 'shop%'"
            ).fetchall():
                conn.execute(f'drop database "{name}"')
            conn.execute("create database shop owner shop")
        for path in (self.deploy_to, self.state_dir, self.backup_dir, self.home / "local"):
            shutil.rmtree(path, ignore_errors=True)


# a value for `variant` edits that removes the key (a string: conftest may be imported twice)
DELETE = "<delete this key>"
