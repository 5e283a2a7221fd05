"""Secrets a real team puts in its files, looked for everywhere (issue 22): the database
passwords, an app.env value, a token in a hook, a token in the app.repo URL — each from
`${VAR}`. A deploy, a rollback, a deploy whose hook fails and prints its token.

Every command run is logged: on the hosts by an sshd whose `ForceCommand` records
`$SSH_ORIGINAL_COMMAND` before running it, on the control machine by shims in front of
`git` and `bash` on PATH (sampling /proc would miss short-lived processes). Every file
written here and on the hosts is searched for the secrets and their derived forms
(URL-encoded, shell-quoted): only the files meant to hold secrets (the app's env file,
pgpass; 0600) may.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.watch import watching
from tests.gitserver import serve_git

# each with characters that quoting and URL-encoding change
SECRETS = {
    "SEED_SCAN_SECRET_KEY": "sk-'scan' $(x) 7Qh2-vN3pL8wR5tY1uI6oE4aS9dF0gJ2kZ7xC",
    "SEED_SCAN_HOOK_TOKEN": "hook tok'en$HOME 9Zx4",
    "SEED_SCAN_GIT_TOKEN": "ghp_Scan7Token9Value",
}
# the files whose purpose is to hold secrets (0600): the app's settings, libpq's passwords
ALLOWED = ("shared/env", ".seed-env", "pgpass")


@dataclass
class Watched:
    dep: Deployment
    envdir: Path
    env: dict[str, str]
    host_log: Path
    local_log: Path
    proofs: Path
    outputs: list[str]

    def fab(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        res = self.dep.fab("local", *args, envdir=self.envdir, extra_env={**self.env, **extra})
        self.outputs.append(res.stdout + res.stderr)
        return res


@pytest.fixture(scope="module")
def watched(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    deployment.reset()  # the first deploy, whatever another module left
    where = tmp_path_factory.mktemp("watched")
    proofs = where / "proofs"
    sb = deployment.sandbox
    prove = f'printf %s "${{SEED_SCAN_HOOK_TOKEN}}" | sha256sum > {proofs}'
    fail = (
        'if [ -n "${SEED_SCAN_FAIL:-}" ]; then '
        'echo "refused: ${SEED_SCAN_HOOK_TOKEN}" >&2; exit 3; fi'
    )
    with (
        watching(deployment, where / "log", os.environ["PATH"]) as watch,
        serve_git(sb.root, "ci", SECRETS["SEED_SCAN_GIT_TOKEN"]) as git,
    ):
        proofs.mkdir()
        env = {
            **SECRETS,
            "SEED_SCAN_DB_PASSWORD": sb.password("shop"),
            "SEED_SCAN_ADMIN_PASSWORD": sb.password("postgres"),
            "PATH": watch.path,
        }
        envdir = deployment.variant(
            "watched",
            {
                "ssh.port": watch.port,
                "ssh.known_hosts": str(watch.known_hosts),
                "app.repo": f"http://ci:${{SEED_SCAN_GIT_TOKEN}}@127.0.0.1:{git.server_port}"
                "/origin.git",
                "app.env.SECRET_KEY": "${SEED_SCAN_SECRET_KEY}",
                "db.password": "${SEED_SCAN_DB_PASSWORD}",
                "db.admin_password": "${SEED_SCAN_ADMIN_PASSWORD}",
                "hooks.switch.after": [{"run": f"{prove}/remote; {fail}", "timeout": 30}],
                "hooks.notify": [f"{prove}/local"],
            },
        )
        yield Watched(deployment, envdir, env, watch.host_log, watch.local_log, proofs, [])


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), shlex.quote(secret)}


def scanned_files(dep: Deployment) -> Iterator[Path]:
    """Every file Seed wrote: the control machine's state and the hosts' (deploy_to, state
    folder, backups), the virtualenvs' packages aside."""
    for top in (dep.home, dep.root / "server"):
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in ("site-packages", "__pycache__")]
            for name in files:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def test_secrets_from_variables_reach_no_command_line_file_or_output(watched: Watched) -> None:
    secrets = {**SECRETS, "db": watched.env["SEED_SCAN_DB_PASSWORD"]}
    secrets["admin"] = watched.env["SEED_SCAN_ADMIN_PASSWORD"]
    res = watched.fab("upgradedb", "--ref", "v2")
    assert res.returncode == 0, res.stdout + res.stderr
    res = watched.fab("rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    res = watched.fab("upgradedb", "--ref", "v2", SEED_SCAN_FAIL="1")
    assert res.returncode != 0, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert "refused: ***" in said, said  # the hook's own words, its token scrubbed

    # the hooks had the token, on the host and on the control machine
    digest = hashlib.sha256(SECRETS["SEED_SCAN_HOOK_TOKEN"].encode()).hexdigest()
    for side in ("remote", "local"):
        assert (watched.proofs / side).read_text().split()[0] == digest

    host_commands = watched.host_log.read_bytes().decode(errors="replace")
    local_commands = watched.local_log.read_bytes().decode(errors="replace")
    assert "git clone" in local_commands or "git fetch" in local_commands, local_commands
    assert host_commands.count("\0") > 20, host_commands[:500]
    hits = []
    for name, secret in secrets.items():
        for form in forms(secret):
            for what, text in (
                ("a host's command line", host_commands),
                ("a control-machine command line", local_commands),
                *((f"fab's output {i}", out) for i, out in enumerate(watched.outputs)),
            ):
                if form in text:
                    at = text.index(form)
                    line = text[text.rfind("\n", 0, at) + 1 : text.find("\n", at)]
                    hits.append(f"{name} in {what}: {line}")
    allowed: list[str] = []
    for path in scanned_files(watched.dep):
        data = path.read_bytes()
        found = [n for n, s in secrets.items() for f in forms(s) if f.encode() in data]
        if not found:
            continue
        rel = str(path)
        if rel.endswith(ALLOWED) and stat.S_IMODE(path.stat().st_mode) == 0o600:
            allowed.append(rel)
            continue
        hits.append(f"{sorted(set(found))} in {path} ({stat.S_IMODE(path.stat().st_mode):o})")
    assert not hits, "\n".join(hits)
    # the scan saw the records of the runs (reports, journal, lock, backups' manifests)
    assert len(list(scanned_files(watched.dep))) > 50
