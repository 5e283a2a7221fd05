"""Code releases: resolve a ref on the control machine, ship `git archive`, switch `current`.

Layout on each app host (DESIGN: Where state lives):
  <deploy_to>/releases/<time>-<sha12>/   one folder per release (+ .venv symlink, REVISION)
  <deploy_to>/current                    symlink, switched atomically (ln -s + mv -T)
  <deploy_to>/shared/env                 0600, the app's settings and the libpq variables
  <deploy_to>/shared/venvs/<hash>/       one venv per requirements hash, reused
Servers need no git access.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from seed.config.environment import Environment, Host
from seed.errors import ConfigError, PreflightFailed
from seed.remote.ssh import Remote, RemoteError, RemoteJob, Result, q

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}


NO_GIT = (
    "git is not installed on this machine (Seed builds releases from the app's repository "
    "with it): install git"
)


def _git(
    *args: str, cwd: Path | None = None, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_GIT_ENV, **(extra or {})}
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise PreflightFailed(NO_GIT) from None


@dataclass(frozen=True)
class RepoUrl:
    """app.repo split for git: `url` without its credentials (what goes on git's command
    line, into the mirror's config, the cache's name and messages), and the credentials
    (`https://ci:TOKEN@host/app.git`), which reach git only through its environment."""

    url: str
    username: str | None = None
    password: str | None = None

    def git_env(self) -> dict[str, str]:
        """Environment giving git the credentials: a credential helper that answers from
        two variables (git 2.31+ reads config from GIT_CONFIG_COUNT/KEY/VALUE), after an
        empty one that drops the user's own helpers (`store` would write the token to
        ~/.git-credentials)."""
        if self.username is None and self.password is None:
            return {}
        helper = (
            '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" '
            '"$SEED_GIT_USERNAME" "$SEED_GIT_PASSWORD"; }; f'
        )
        return {
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": "",
            "GIT_CONFIG_KEY_1": "credential.helper",
            "GIT_CONFIG_VALUE_1": helper,
            "SEED_GIT_USERNAME": self.username or "",
            "SEED_GIT_PASSWORD": self.password or "",
        }


def split_repo(repo: str) -> RepoUrl:
    """`https://user:token@host/x.git` → RepoUrl(`https://host/x.git`, user, token); any
    other URL or path as it is (ssh authenticates with keys, not the URL)."""
    parts = urlsplit(repo)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return RepoUrl(repo)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return RepoUrl(clean, unquote(user), unquote(password) if colon else None)


def repo_cache(repo: str, cache_root: Path) -> Path:
    """A bare mirror of `repo` on the control machine, fetched fresh. Credentials in the
    URL stay out of git's command line and the mirror's config (see RepoUrl)."""
    split = split_repo(repo)
    key = hashlib.sha256(split.url.encode()).hexdigest()[:16]
    path = cache_root / f"{key}.git"
    creds = split.git_env()
    if not path.exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        res = _git("clone", "--quiet", "--mirror", split.url, str(path), extra=creds)
    else:
        res = _git("fetch", "--quiet", "--prune", "--tags", "origin", cwd=path, extra=creds)
    if res.returncode != 0:
        reason = (res.stderr.strip().splitlines() or ["git failed"])[-1]
        raise PreflightFailed(f"git repository {split.url}: cannot fetch ({reason})")
    return path


def resolve_ref(mirror: Path, ref: str) -> str:
    """The full commit sha of a branch, tag or (abbreviated) sha; unknown → ConfigError."""
    res = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=mirror)
    if res.returncode != 0:
        raise ConfigError(f"--ref {ref}: no such branch, tag or commit in the app repository")
    return res.stdout.strip()


def build_archive(mirror: Path, sha: str, out_dir: Path, root: str = "") -> Path:
    """`git archive` of `sha` as a .tar.gz, cached by sha; with `root` (app.root) only that
    folder of the repository, as the release's top (Capistrano's repo_tree)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{hashlib.sha256(root.encode()).hexdigest()[:8]}" if root else ""
    target = out_dir / f"{sha}{suffix}.tar.gz"
    if target.exists():
        return target
    if root and _git("cat-file", "-e", f"{sha}:{root}/", cwd=mirror).returncode != 0:
        raise PreflightFailed(
            f"app.root: {root} is not a folder of the app repository at {sha[:12]}"
        )
    with tempfile.NamedTemporaryFile(dir=out_dir, delete=False, suffix=".partial") as fh:
        tmp = Path(fh.name)
    tree = f"{sha}:{root}" if root else sha
    res = _git("archive", "--format=tar.gz", "-o", str(tmp), tree, cwd=mirror)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PreflightFailed(f"git archive {sha[:12]} failed: {res.stderr.strip()}")
    tmp.replace(target)
    return target


def file_at(mirror: Path, sha: str, path: str) -> bytes | None:
    try:
        res = subprocess.run(
            ["git", "show", f"{sha}:{path}"], cwd=mirror, capture_output=True, check=False
        )
    except FileNotFoundError:
        raise PreflightFailed(NO_GIT) from None
    return res.stdout if res.returncode == 0 else None


REQUIREMENTS_FILE = ".seed-requirements.txt"  # in each release: what its venv installs


def requirements_of(mirror: Path, sha: str, ref: str, root: str = "") -> bytes:
    """What the release's virtualenv installs: its requirements.txt, else the
    `[project] dependencies` of its pyproject.toml; PreflightFailed when it has neither.
    With `root` (app.root) that folder's files, else the repository's top ones."""
    where = f"{ref} ({sha[:12]})"
    for folder in dict.fromkeys((root, "")):
        text = file_at(mirror, sha, posixpath.join(folder, "requirements.txt"))
        if text is not None:
            return text
        project = file_at(mirror, sha, posixpath.join(folder, "pyproject.toml"))
        if project is not None:
            return _dependencies(project, f"{where}: {posixpath.join(folder, 'pyproject.toml')}")
    places = f"in {root}/ or at the top" if root else "at the top"
    raise PreflightFailed(f"{where} has no requirements.txt (nor a pyproject.toml) {places}")


def _dependencies(project: bytes, where: str) -> bytes:
    """pyproject.toml's `[project] dependencies` as a requirements file."""
    try:
        table = tomllib.loads(project.decode()).get("project") or {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PreflightFailed(f"{where} does not parse: {exc}") from None
    if "dependencies" in (table.get("dynamic") or []):
        raise PreflightFailed(f"{where} declares its dependencies dynamic: add a requirements.txt")
    deps = table.get("dependencies")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise PreflightFailed(
            f"{where} has no [project] dependencies list (and there is no requirements.txt)"
        )
    return ("# from pyproject.toml [project] dependencies\n" + "\n".join(deps) + "\n").encode()


@dataclass(frozen=True)
class Layout:
    """Paths of one environment's deployment on an app host."""

    deploy_to: str

    @property
    def releases(self) -> str:
        return posixpath.join(self.deploy_to, "releases")

    @property
    def shared(self) -> str:
        return posixpath.join(self.deploy_to, "shared")

    @property
    def current(self) -> str:
        return posixpath.join(self.deploy_to, "current")

    @property
    def env_file(self) -> str:
        return posixpath.join(self.shared, "env")

    def release(self, release_id: str) -> str:
        return posixpath.join(self.releases, release_id)

    def venv(self, venv_hash: str) -> str:
        return posixpath.join(self.shared, "venvs", venv_hash)


def release_id(sha: str, started_utc: str) -> str:
    """`<YYYYmmddHHMMSS>-<sha12>`: sorts by time, names the code."""
    return f"{started_utc}-{sha[:12]}"


def current_release(remote: Remote, layout: Layout) -> str | None:
    """The release id `current` points at, or None on a first deploy."""
    target = remote.readlink(layout.current)
    if not target:
        return None
    return posixpath.basename(target.rstrip("/"))


def release_revision(remote: Remote, layout: Layout, rid: str) -> str | None:
    """The full commit sha a release was built from (its REVISION file)."""
    res = remote.run(f"cat {q(layout.release(rid))}/REVISION")
    if not res.ok:
        return None
    return res.stdout.strip() or None


def upload_release(remote: Remote, layout: Layout, rid: str, archive: Path, sha: str) -> str:
    """Unpack the archive into releases/<rid> (fresh folder) and write REVISION."""
    _unpack(remote, layout, rid, archive, sha, "")
    return layout.release(rid)


def upload_release_and_python(
    remote: Remote, layout: Layout, rid: str, archive: Path, sha: str, python: str
) -> str:
    """`upload_release`, then `python_version` in the same remote command (one shell
    start less per host); returns the version."""
    probe = f"{q(python)} -c 'import sys; print(sys.version.split()[0])'"
    res = _unpack(remote, layout, rid, archive, sha, f" && {{ {probe} || echo seed-no-python; }}")
    version = str((res.stdout.strip().splitlines() or [""])[-1])
    if version == "seed-no-python" or not version:
        raise PreflightFailed(
            f"{remote.label}: app.python {python!r} does not run ({res.tail(1)}); "
            "install it or set app.python"
        )
    return version


def _unpack(remote: Remote, layout: Layout, rid: str, archive: Path, sha: str, then: str) -> Result:
    path = layout.release(rid)
    remote.mkdirs(layout.releases, layout.shared, posixpath.join(layout.shared, "venvs"))
    if remote.exists(path):
        raise PreflightFailed(f"release folder {path} already exists on {remote.label}")
    tarball = f"{path}.tar.gz"
    remote.put_file(str(archive), tarball, mode=0o600)
    return remote.check(
        f"mkdir {q(path)} && tar -xzf {q(tarball)} -C {q(path)} && rm -f {q(tarball)} && "
        f"printf '%s\\n' {q(sha)} > {q(path)}/REVISION" + then,
        "unpacking the release",
    )


def venv_hash(requirements: bytes, python_version: str) -> str:
    return hashlib.sha256(python_version.encode() + b"\0" + requirements).hexdigest()[:16]


def python_version(remote: Remote, python: str) -> str:
    res = remote.run(f"{q(python)} -c 'import sys; print(sys.version.split()[0])'")
    if not res.ok:
        raise PreflightFailed(
            f"{remote.label}: app.python {python!r} does not run ({res.tail(1)}); "
            "install it or set app.python"
        )
    return res.stdout.strip()


def link_shared_dirs(remote: Remote, layout: Layout, rid: str, dirs: tuple[str, ...]) -> None:
    """app.shared_dirs into a release (Capistrano's linked_dirs): <deploy_to>/shared/<dir>
    is created once and kept across releases; the release's own copy of the folder (from
    the repository) is replaced by a link to it, as every release that runs sees it."""
    if not dirs:
        return
    release = layout.release(rid)
    lines = []
    for d in dirs:
        shared, inside = posixpath.join(layout.shared, d), posixpath.join(release, d)
        lines.append(
            f"mkdir -p {q(shared)} {q(posixpath.dirname(inside))} && rm -rf {q(inside)} && "
            f"ln -s {q(shared)} {q(inside)}"
        )
    remote.check(" && ".join(lines), "linking app.shared_dirs")


def ensure_venv(
    env: Environment,
    remote: Remote,
    layout: Layout,
    rid: str,
    vhash: str,
    job_dir: str,
    requirements: bytes,
) -> bool:
    """Link releases/<rid>/.venv to the venv for its requirements, building it if needed
    (`requirements`: what requirements_of found, written into the release).

    A venv is never modified once complete (marker file); an incomplete one was never
    used by a release and is rebuilt. Returns True when it was reused.
    """
    venv = layout.venv(vhash)
    release = layout.release(rid)
    remote.put_bytes(requirements, posixpath.join(release, REQUIREMENTS_FILE), mode=0o644)
    reused = remote.exists(posixpath.join(venv, ".seed-complete"))
    if not reused:
        pip_args = " ".join(q(a) for a in env.app.pip_args)
        script = (
            "set -euo pipefail\n"
            f"rm -rf {q(venv)}\n"
            f"{q(env.app.python)} -m venv {q(venv)}\n"
            # `python -m pip`: bin/pip's shebang holds the venv path, which breaks
            # when deploy_to contains quotes
            f"{q(venv)}/bin/python -m pip install --disable-pip-version-check --no-input -q "
            f"{pip_args} -r {q(posixpath.join(release, REQUIREMENTS_FILE))}\n"
            f"touch {q(venv)}/.seed-complete\n"
        )
        job = RemoteJob.start(remote, job_dir, script)
        code, output = job.wait(timeout=1800)
        if code != 0:
            tail = " | ".join(output.strip().splitlines()[-3:])
            raise RemoteError(f"building the virtualenv on {remote.label} failed: {tail}")
    remote.symlink(venv, posixpath.join(release, ".venv"), replace=True)
    return reused


def env_file_content(env: Environment, extra: dict[str, str], host: Host | None = None) -> bytes:
    """shared/env: KEY='value' lines (shell and systemd EnvironmentFile readable); app.env
    with `host`'s own values over it."""
    values: dict[str, str] = {"DJANGO_SETTINGS_MODULE": env.app.settings}
    app_env = env.app_env_of(host) if host is not None else env.app.env
    values.update({k: v.reveal() for k, v in app_env.items()})
    values.update(extra)
    lines = [f"{k}={q(v)}" for k, v in values.items()]
    return ("\n".join(lines) + "\n").encode()


def db_env(env: Environment) -> dict[str, str]:
    """The libpq variables (and DATABASE_URL) the app and manage.py read."""
    db = env.db
    password = db.password.reveal() if db.password else ""
    values = {
        "PGHOST": db.host,
        "PGPORT": str(db.port),
        "PGDATABASE": db.name,
        "PGUSER": db.user,
    }
    if password:
        values["PGPASSWORD"] = password
    from urllib.parse import quote

    auth = quote(db.user, safe="") + (":" + quote(password, safe="") if password else "")
    values["DATABASE_URL"] = f"postgres://{auth}@{db.host}:{db.port}/{quote(db.name, safe='')}"
    return values


ENV_NAME = ".seed-env"  # a release's own env file, in its folder


def release_env(release_path: str) -> str:
    """The env file of the release in `release_path` (written by Seed, 0600)."""
    return posixpath.join(release_path, ENV_NAME)


def source_env(layout: Layout, release_path: str) -> str:
    """Shell: load the release's own env file (`set -a`: every variable exported); a release
    deployed before releases kept their own has shared/env."""
    own = q(release_env(release_path))
    return f"set -a && if [ -f {own} ]; then . {own}; else . {q(layout.env_file)}; fi && set +a"


def write_env_file(env: Environment, remote: Remote, layout: Layout, rid: str) -> None:
    """The env file belongs to its release: written into releases/<rid>/ (0600), and
    shared/env is a link through `current` (`../current/.seed-env`), so the app always reads
    the env of the release it runs, switched with `current` and put back with it. A
    shared/env that is still a file (deployed before) first becomes the current release's
    own, unchanged: the app reads the same settings until the switch."""
    content = env_file_content(env, db_env(env), remote.host)
    remote.put_bytes(content, release_env(layout.release(rid)))
    link = posixpath.join("..", "current", ENV_NAME)
    if remote.run(f"test -L {q(layout.env_file)}").ok:
        return
    current = current_release(remote, layout)
    if current and remote.exists(layout.env_file):
        own = release_env(layout.release(current))
        remote.check(
            f"[ -e {q(own)} ] || cp -p {q(layout.env_file)} {q(own)}",
            f"keeping {layout.env_file} as the env of release {current}",
        )
    remote.symlink(link, layout.env_file, replace=True)


def switch_current(remote: Remote, layout: Layout, rid: str) -> None:
    """Point `current` at releases/<rid> atomically (rename over the old symlink)."""
    remote.symlink(f"releases/{rid}", layout.current, replace=True)


def remove_release(remote: Remote, layout: Layout, rid: str) -> None:
    remote.run(f"rm -rf {q(layout.release(rid))} {q(layout.release(rid))}.tar.gz")


def prune_releases(remote: Remote, layout: Layout, keep: int, protect: set[str]) -> list[str]:
    """Remove the oldest releases beyond `keep`, never `current` nor any in `protect`."""
    names = [n for n in remote.listdir(layout.releases) if not n.endswith(".tar.gz")]
    live = current_release(remote, layout)
    keepers = set(names[-keep:]) | protect | ({live} if live else set())
    doomed = [n for n in names if n not in keepers]
    if doomed:
        remote.run("rm -rf " + " ".join(q(layout.release(n)) for n in doomed))
    return doomed


def run_hook(
    remote: Remote, layout: Layout, command: str, what: str, names: dict[str, str] | None = None
) -> None:
    """Run a user hook (restart, maintenance, drain) with cwd = deploy_to and `names`
    exported (SEED_HOST...)."""
    remote.check(
        f"cd {q(layout.deploy_to)} && {exports(names or {})}{command}",
        what,
        timeout=300,
        private_env=remote.env.command_values(),
    )


def exports(names: dict[str, str]) -> str:
    """Shell: `export K='v'; ` for each name (a hook's SEED_* variables)."""
    return "".join(f"export {k}={q(v)}; " for k, v in sorted(names.items()))


def host_names(remote: Remote, release: str | None = None) -> dict[str, str]:
    """What a per-host hook (drain, undrain, reload) is told about its host."""
    names = {
        "SEED_HOST": remote.host.name,
        "SEED_HOST_PORT": str(remote.host.port),
        "SEED_HOST_LABEL": remote.label,
    }
    if release:
        names["SEED_RELEASE"] = release
    return names


HEALTH_SCRIPT = """
import sys, time, urllib.request, urllib.error
url, status, text, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
header, release = sys.argv[5], sys.argv[6]
# naming a release: three answers in a row must name it (old workers may still answer for
# a while after a graceful reload, and one new worker's answer says nothing of the others)
needed = 3 if header and release else 1
deadline = time.monotonic() + timeout
last, good = "no answer", 0
good_at = bad_at = first_at = None  # the last run of good answers began; the first bad
def stamps():                         # answer; the first answer (epoch seconds)
    return f"\\nSEED-HEALTH {good_at or '-'} {bad_at or '-'} {first_at or '-'}"
while time.monotonic() < deadline:
    named, asked = "", time.time()
    first_at = first_at or asked
    try:
        with urllib.request.urlopen(url, timeout=min(5.0, timeout)) as r:
            code, body = r.status, r.read(65536).decode("utf-8", "replace")
            named = r.headers.get(header, "") if header else ""
    except urllib.error.HTTPError as e:
        code, body = e.code, ""
    except Exception as e:
        last, good, bad_at = str(e), 0, bad_at or asked
        time.sleep(0.3)
        continue
    if code == status and (not text or text in body) and (needed == 1 or named == release):
        good_at = good_at if good else asked
        good += 1
        if good >= needed:
            print(f"{code} {body[:80]!r}" + (f" {header}: {named}" if header else "") + stamps())
            sys.exit(0)
        time.sleep(0.1)
        continue
    good, bad_at = 0, bad_at or asked
    last = f"status {code}, body {body[:80]!r}" + (f", {header}: {named!r}" if header else "")
    time.sleep(0.3)
print(last + (f" (expected {header}: {release})" if needed > 1 else "") + stamps())
sys.exit(1)
"""


@dataclass
class HealthProbe:
    """What the health check on one host saw: the last answer, and when (epoch seconds) the
    host served as expected again (the first of the good answers in a row) or first did not."""

    ok: bool
    text: str
    good_at: float | None = None
    bad_at: float | None = None
    first_at: float | None = None  # its first answer (good or bad from the start?)


def _stamp(word: str) -> float | None:
    try:
        return float(word)
    except ValueError:
        return None


def probe_health(
    env: Environment, remote: Remote, layout: Layout, release: str | None = None
) -> HealthProbe:
    """GET the health URL from the app host itself until it answers as expected (and, with
    `release` and health.release_header, names that release three times in a row), or
    health.timeout passes."""
    health = env.app.health
    assert health is not None
    python = posixpath.join(layout.current, ".venv", "bin", "python")
    header = health.release_header or ""
    url = env.health_url_of(remote.host)
    res = remote.run(
        f"{q(python)} -c {q(HEALTH_SCRIPT)} {q(url)} {health.status} "
        f"{q(health.text or '')} {health.timeout} {q(header)} {q(release or '')}",
        timeout=health.timeout + 30,
    )
    text, _, stamps = res.stdout.strip().rpartition("\nSEED-HEALTH ")
    words = stamps.split() if text else []
    if len(words) != 3:  # the script did not get that far (no python, a killed command)
        return HealthProbe(False, (res.stdout + res.stderr).strip()[-200:] or "no answer")
    return HealthProbe(res.ok, text.strip(), *(_stamp(w) for w in words))


def health_check(
    env: Environment, remote: Remote, layout: Layout, release: str | None = None
) -> str:
    """probe_health(); returns what the host answered (`200 'ok v2'`), raises RemoteError
    when it did not answer as expected in time."""
    probe = probe_health(env, remote, layout, release)
    if not probe.ok:
        raise RemoteError(
            f"health check {env.health_url_of(remote.host)} on {remote.label} failed: "
            f"{probe.text[-200:]}"
        )
    return probe.text
