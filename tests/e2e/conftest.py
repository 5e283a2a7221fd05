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

from sandbox.servers import SandboxInfo
from seed.config.yaml12 import load_yaml12
from seed.db.postgres import snapshot_figures

REPO = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")


@dataclass
class Deployment:
    """The sandbox as the `local` environment sees it, plus helpers to drive and inspect it."""

    sandbox: SandboxInfo
    env: dict[str, str]
    home: Path
    app_port: int  # each app host's (127.0.0.1, 127.0.0.2)
    lb_port: int  # the load balancer's, in front of both: the site
    envdirs: list[Path] = field(default_factory=list)
    # App hosts `local` deploys to: 2 is environments/local.yml as shipped; 1 (most tests:
    # what they check does not depend on the number of hosts, and each host builds its
    # own virtualenv) is a copy with only the first host and no drain/undrain.
    hosts: int = 1
    one_host_dir: Path | None = None

    @property
    def root(self) -> Path:
        return self.sandbox.root

    @property
    def deploy_to(self) -> Path:
        """The first app host's (127.0.0.1)."""
        return self.root / "server" / "srv" / "shop"

    @property
    def every_deploy_to(self) -> list[Path]:
        """Both app hosts' (environments/local.yml names two)."""
        return [self.deploy_to, self.root / "server" / "host2" / "srv" / "shop"]

    @property
    def deploy_tos(self) -> list[Path]:
        """The app hosts' that `local` deploys to."""
        return self.every_deploy_to[: self.hosts]

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
        return subprocess.run(
            [FAB, *args],
            cwd=REPO,
            env=self.process_env(envdir, extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def process_env(
        self, envdir: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> dict[str, str]:
        """What `fab` runs with: SEED_ENVIRONMENTS is `envdir`, else the environments of
        `hosts` app hosts."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        env.pop("SEED_ASSUME_YES", None)
        if envdir is None and self.hosts == 1:
            envdir = self.one_host_dir or self.variant("one-host")
            self.one_host_dir = envdir  # written once: local.yml does not change mid-run
        if envdir is not None:
            env["SEED_ENVIRONMENTS"] = str(envdir)
        return env

    def variant(self, name: str, edit: dict[str, Any] | None = None, **top: Any) -> Path:
        """A copy of environments/local.yml (as `local.yml`) in its own dir, with edits
        (with `hosts` 1: its first app host only, no drain/undrain)."""
        text = (REPO / "environments" / "local.yml").read_text()
        data = load_yaml12(text)
        if self.hosts == 1:
            data["roles"]["app"] = data["roles"]["app"][:1]
            for key in ("drain", "undrain"):
                data["app"].pop(key)
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
        if directory not in self.envdirs:
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
        """The first app host's `current` (every host's must agree)."""
        links = [d / "current" for d in self.deploy_tos]
        found = {os.readlink(link) if link.is_symlink() else None for link in links}
        assert len(found) == 1, f"the app hosts serve different releases: {found}"
        return found.pop()

    def releases(self) -> list[str]:
        path = self.deploy_to / "releases"
        return sorted(os.listdir(path)) if path.is_dir() else []

    def backups(self) -> list[str]:
        d = self.backup_dir
        return sorted(p.name for p in d.glob("*.dump")) if d.is_dir() else []

    def http(self, path: str) -> tuple[int, str]:
        """GET `path` from the site: through the load balancer with both app hosts, else
        from the one host (HAProxy's health checks of a busy host are not under test)."""
        port = self.lb_port if self.hosts == 2 else self.app_port
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
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
        for deploy_to in self.every_deploy_to:
            if (deploy_to / "current").exists():
                subprocess.run(
                    ["bash", "current/deploy/appctl", "stop"],
                    cwd=deploy_to,
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
        # the hosts keep their virtualenvs (one per requirements hash, as on a server that
        # deployed before): every module need not build the same one again
        kept = self.root / "kept-venvs"
        for i, deploy_to in enumerate(self.every_deploy_to):
            venvs = deploy_to / "shared" / "venvs"
            if venvs.is_dir() and not (kept / str(i)).exists():
                kept.mkdir(exist_ok=True)
                venvs.rename(kept / str(i))
        for path in (*self.every_deploy_to, self.state_dir, self.backup_dir, self.home / "local"):
            shutil.rmtree(path, ignore_errors=True)
        for i, deploy_to in enumerate(self.every_deploy_to):
            if (kept / str(i)).is_dir():
                (deploy_to / "shared").mkdir(parents=True)
                (kept / str(i)).rename(deploy_to / "shared" / "venvs")


# a value for `variant` edits that removes the key (a string: conftest may be imported twice)
DELETE = "<delete this key>"
