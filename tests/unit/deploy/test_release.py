"""seed.deploy.release: env file quoting through real bash, libpq variables through real PostgreSQL,
refs and archives through real git, the release layout through the sandbox's sshd."""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest
from psycopg import sql

from seed.config.environment import Environment, Health, Secret
from seed.deploy import release as rel
from seed.deploy.release import (
    HEALTH_SCRIPT,
    Layout,
    RepoUrl,
    build_archive,
    current_release,
    db_env,
    ensure_venv,
    env_file_content,
    file_at,
    health_check,
    prune_releases,
    python_version,
    release_env,
    release_id,
    remove_release,
    repo_cache,
    resolve_ref,
    run_hook,
    split_repo,
    switch_current,
    upload_release,
    upload_release_and_python,
    venv_hash,
    write_env_file,
)
from seed.errors import ConfigError, PreflightFailed
from seed.remote.ssh import Remote, RemoteError
from tests.gitserver import serve_git

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Seed Test",
    "GIT_AUTHOR_EMAIL": "seed@example.com",
    "GIT_COMMITTER_NAME": "Seed Test",
    "GIT_COMMITTER_EMAIL": "seed@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@dataclasses.dataclass
class Origin:
    path: Path
    v1: str  # tagged v1 (annotated)
    v2: str  # main
    feature: str  # branch feature


def make_origin(path: Path) -> Origin:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    v1 = commit(
        path,
        {"README": "version 1\n", "requirements.txt": "Django==4.2\n", "app/x.py": "X = 1\n"},
        "v1",
    )
    git(path, "tag", "-a", "v1", "-m", "release 1")
    v2 = commit(path, {"README": "version 2\n"}, "v2")
    git(path, "checkout", "-q", "-b", "feature")
    feature = commit(path, {"README": "feature\n"}, "feature")
    git(path, "checkout", "-q", "main")
    return Origin(path, v1, v2, feature)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("origin") / "shop")


@pytest.fixture(scope="module")
def mirror(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repo_cache(str(origin.path), tmp_path_factory.mktemp("cache"))


# --------------------------------------------------------------------------- env file


def with_env(env: Environment, values: dict[str, str]) -> Environment:
    app = dataclasses.replace(env.app, env={k: Secret(v) for k, v in values.items()})
    return dataclasses.replace(env, app=app)


def test_env_file_round_trips_through_bash(sandbox_env: Environment, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    values = {
        "SECRET_KEY": 'it\'s a "quoted" $HOME `id` $(touch ' + str(marker) + ") \\ back\\slash",
        "MULTI": "first line\nsecond line\n\n  indented; echo no\n",
        "SPACES": "  leading and trailing  ",
        "EMPTY": "",
        "GLOB": "*",
    }
    env = with_env(sandbox_env, values)
    extra = {"PGPASSWORD": "pa'ss$word\nx"}
    path = tmp_path / "env"
    path.write_bytes(env_file_content(env, extra))
    expected = {"DJANGO_SETTINGS_MODULE": "shopsite.settings", **values, **extra}
    for name, value in expected.items():
        res = subprocess.run(
            ["bash", "-c", 'set -a; . "$1"; printf %s "${!2}"', "_", str(path), name],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        assert res.stdout == value, name
        assert res.stderr == ""
    assert not marker.exists()


def test_db_env_quotes_the_url(sandbox_env: Environment) -> None:
    odd = "p@ss:w/rd?#%25 'x\""
    db = dataclasses.replace(
        sandbox_env.db, user="app user@x", name="shop/db", password=Secret(odd)
    )
    values = db_env(dataclasses.replace(sandbox_env, db=db))
    assert values["PGPASSWORD"] == odd
    assert (values["PGHOST"], values["PGUSER"], values["PGDATABASE"]) == (
        "127.0.0.1",
        "app user@x",
        "shop/db",
    )
    url = urlsplit(values["DATABASE_URL"])
    assert url.scheme == "postgres"
    assert (url.hostname, url.port) == ("127.0.0.1", sandbox_env.db.port)
    assert unquote(url.username or "") == "app user@x"
    assert unquote(url.password or "") == odd
    assert unquote(url.path) == "/shop/db"
    no_password = dataclasses.replace(sandbox_env.db, password=None)
    values = db_env(dataclasses.replace(sandbox_env, db=no_password))
    assert "PGPASSWORD" not in values
    assert values["DATABASE_URL"] == (
        f"postgres://shop@127.0.0.1:{sandbox_env.db.port}/{sandbox_env.db.name}"
    )


@pytest.fixture
def odd_role(pg_admin_dsn: str) -> Iterator[tuple[str, str]]:
    """A login role whose name and password need quoting everywhere."""
    name, password = "seed unit@role", "p@ss:w/rd?#%25 'x\"\\"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    yield name, password
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def test_db_env_reaches_postgres(
    sandbox_env: Environment, odd_role: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = odd_role
    db = dataclasses.replace(sandbox_env.db, user=user, name="postgres", password=Secret(password))
    values = db_env(dataclasses.replace(sandbox_env, db=db))
    with psycopg.connect(values["DATABASE_URL"], passfile=os.devnull) as conn:
        assert conn.execute("select current_user").fetchone() == (user,)
    for key in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        if key.startswith("PG"):
            monkeypatch.setenv(key, value)
    with psycopg.connect("", passfile=os.devnull) as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == (
            user,
            "postgres",
        )


def test_venv_hash() -> None:
    base = venv_hash(b"Django==4.2\n", "3.11.2")
    assert len(base) == 16 and int(base, 16) >= 0
    assert venv_hash(b"Django==4.2\n", "3.11.2") == base
    assert venv_hash(b"Django==4.2\n", "3.12.0") != base
    assert venv_hash(b"Django==5.0\n", "3.11.2") != base
    assert venv_hash(b"3.11.2Django==4.2\n", "") != base  # the version is delimited


def test_layout_and_release_id() -> None:
    layout = Layout("/srv/shop")
    rid = release_id("0123456789abcdef" * 2 + "01234567", "20240102030405")
    assert rid == "20240102030405-0123456789ab"
    assert layout.release(rid) == f"/srv/shop/releases/{rid}"
    assert layout.current == "/srv/shop/current"
    assert layout.env_file == "/srv/shop/shared/env"
    assert layout.venv("abc") == "/srv/shop/shared/venvs/abc"


# --------------------------------------------------------------------------- git


def test_resolve_ref(origin: Origin, mirror: Path) -> None:
    assert resolve_ref(mirror, "main") == origin.v2
    assert resolve_ref(mirror, "feature") == origin.feature
    assert resolve_ref(mirror, "v1") == origin.v1  # the annotated tag's commit, not the tag
    assert resolve_ref(mirror, origin.v1[:8]) == origin.v1
    assert resolve_ref(mirror, origin.feature) == origin.feature
    assert resolve_ref(mirror, "main~1") == origin.v1
    for unknown in ("no-such-branch", "v9", "0" * 40, "deadbeef"):
        with pytest.raises(ConfigError, match="no such branch, tag or commit") as info:
            resolve_ref(mirror, unknown)
        assert unknown in str(info.value)
        assert info.value.code == 2


def test_repo_cache_is_a_bare_mirror_fetched_fresh(tmp_path: Path) -> None:
    origin = make_origin(tmp_path / "origin")
    cache = tmp_path / "cache"
    mirror = repo_cache(str(origin.path), cache)
    assert mirror.parent == cache and mirror.name.endswith(".git")
    assert git(mirror, "rev-parse", "--is-bare-repository") == "true"
    assert repo_cache(str(origin.path), cache) == mirror  # same repo, same cache
    # new commits, a new tag and a deleted branch are seen on the next call
    git(origin.path, "checkout", "-q", "main")
    v3 = commit(origin.path, {"README": "version 3\n"}, "v3")
    git(origin.path, "tag", "v3")
    git(origin.path, "branch", "-q", "-D", "feature")
    assert repo_cache(str(origin.path), cache) == mirror
    assert resolve_ref(mirror, "main") == v3
    assert resolve_ref(mirror, "v3") == v3
    with pytest.raises(ConfigError):
        resolve_ref(mirror, "feature")


def test_repo_credentials_reach_git_only_through_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`https://ci:TOKEN@host/app.git`: git gets the token from a credential helper fed
    by environment variables; the URL on its command line, in the mirror's config and in
    messages has none; a user's own `credential.helper store` never sees it."""
    origin = make_origin(tmp_path / "srv" / "origin")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    token = "t0k@n/with:odd"  # noqa: S105 - a test's token
    with serve_git(origin.path.parent, "ci", token) as server:
        base = f"127.0.0.1:{server.server_port}/origin"
        url = f"http://ci:{quote(token, safe='')}@{base}"
        mirror = repo_cache(url, tmp_path / "cache")
        assert resolve_ref(mirror, "v1") == origin.v1
        assert server.refused >= 1  # asked, then answered by the helper
        config = (mirror / "config").read_text()
        assert f"url = http://{base}\n" in config and token not in config
        assert not (home / ".git-credentials").exists()
        assert repo_cache(url, tmp_path / "cache") == mirror  # a fetch, same credentials
        with pytest.raises(PreflightFailed) as info:
            repo_cache(f"http://ci:wrong@{base}", tmp_path / "cache2")
    assert "wrong" not in str(info.value) and f"http://{base}" in str(info.value)
    assert split_repo("https://TOKEN@github.com/a/b.git") == RepoUrl(
        "https://github.com/a/b.git", "TOKEN", None
    )
    assert split_repo("git@github.com:a/b.git") == RepoUrl("git@github.com:a/b.git")


def test_repo_cache_unreachable_repo(tmp_path: Path) -> None:
    with pytest.raises(PreflightFailed, match=r"git repository .*/absent: cannot fetch") as info:
        repo_cache(str(tmp_path / "absent"), tmp_path / "cache")
    assert info.value.code == 4


def tar_files(archive: Path) -> dict[str, str]:
    with tarfile.open(archive, "r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            if member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                out[member.name] = fh.read().decode()
        return out


def test_build_archive(origin: Origin, mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "archives"
    first = build_archive(mirror, origin.v1, out)
    assert first == out / f"{origin.v1}.tar.gz"
    assert tar_files(first) == {
        "README": "version 1\n",
        "requirements.txt": "Django==4.2\n",
        "app/x.py": "X = 1\n",
    }
    assert tar_files(build_archive(mirror, origin.feature, out))["README"] == "feature\n"
    # cached by sha: not rebuilt
    mtime = first.stat().st_mtime_ns
    assert build_archive(mirror, origin.v1, out) == first
    assert first.stat().st_mtime_ns == mtime
    with pytest.raises(PreflightFailed, match="git archive 000000000000 failed"):
        build_archive(mirror, "0" * 40, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{origin.v1}.tar.gz", f"{origin.feature}.tar.gz"]
    )  # no partial file left behind
    assert file_at(mirror, origin.v1, "requirements.txt") == b"Django==4.2\n"
    assert file_at(mirror, origin.v1, "nope.txt") is None


# --------------------------------------------------------------------------- on a host


@pytest.fixture(scope="module")
def remote(sandbox_env: Environment) -> Iterator[Remote]:
    """One connection for the module's tests (none of them breaks it)."""
    r = Remote(sandbox_env, sandbox_env.roles.app[0]).open()
    try:
        yield r
    finally:
        r.close()


def test_upload_switch_and_prune(
    origin: Origin, mirror: Path, remote: Remote, tmp_path: Path
) -> None:
    layout = Layout(str(tmp_path / "srv" / "shop"))
    assert current_release(remote, layout) is None
    archive = build_archive(mirror, origin.v1, tmp_path / "archives")
    rid1 = release_id(origin.v1, "20240101000000")
    path = upload_release(remote, layout, rid1, archive, origin.v1)
    assert Path(path, "README").read_text() == "version 1\n"
    assert Path(path, "REVISION").read_text() == origin.v1 + "\n"
    assert not Path(path + ".tar.gz").exists()
    with pytest.raises(PreflightFailed, match="already exists"):
        upload_release(remote, layout, rid1, archive, origin.v1)

    switch_current(remote, layout, rid1)
    assert os.readlink(layout.current) == f"releases/{rid1}"
    assert current_release(remote, layout) == rid1
    assert Path(layout.current, "app", "x.py").read_text() == "X = 1\n"

    rids = [rid1] + [release_id(origin.v2, f"2024010{i}000000") for i in range(2, 7)]
    for rid in rids[1:]:
        remote.mkdirs(layout.release(rid))
    Path(layout.releases, rids[-1] + ".tar.gz").write_bytes(b"leftover")
    switch_current(remote, layout, rids[2])
    assert current_release(remote, layout) == rids[2]
    assert sorted(os.listdir(layout.deploy_to)) == ["current", "releases", "shared"]  # no temp

    doomed = prune_releases(remote, layout, keep=2, protect={rids[0]})
    assert doomed == [rids[1], rids[3]]
    left = sorted(n for n in os.listdir(layout.releases) if not n.endswith(".tar.gz"))
    assert left == [rids[0], rids[2], rids[4], rids[5]]
    remove_release(remote, layout, rids[5])
    assert sorted(os.listdir(layout.releases)) == [rids[0], rids[2], rids[4]]


def test_write_env_file(remote: Remote, sandbox_env: Environment, tmp_path: Path) -> None:
    """The env file belongs to its release; shared/env is a link through `current`, and a
    shared/env file from before becomes the current release's own, unchanged."""
    layout = Layout(str(tmp_path / "srv"))
    remote.mkdirs(layout.shared, layout.release("r1"), layout.release("r2"))
    Path(layout.env_file).write_text("OLD=1\n")
    os.symlink("releases/r1", layout.current)
    write_env_file(sandbox_env, remote, layout, "r2")
    own = Path(release_env(layout.release("r2")))
    assert stat.S_IMODE(own.stat().st_mode) == 0o600
    assert own.read_bytes() == env_file_content(sandbox_env, db_env(sandbox_env))
    assert sandbox_env.db.password is not None
    assert f"PGPASSWORD={sandbox_env.db.password.reveal()}" in own.read_text()
    assert os.readlink(layout.env_file) == "../current/.seed-env"
    assert Path(layout.env_file).read_text() == "OLD=1\n"  # the app still reads r1's
    os.replace(layout.current, layout.current + ".old")
    os.symlink("releases/r2", layout.current)
    assert Path(layout.env_file).read_bytes() == own.read_bytes()  # switched with current
    write_env_file(sandbox_env, remote, layout, "r1")  # a link already: r1's own rewritten
    assert Path(release_env(layout.release("r1"))).read_bytes() == own.read_bytes()


def test_python_version_and_hooks(remote: Remote, tmp_path: Path) -> None:
    version = python_version(remote, "python3")
    assert re.fullmatch(r"3\.\d+\.\d+", version), version
    reported = remote.check("python3 --version", "asking python").stdout.split()
    assert reported == ["Python", version]
    with pytest.raises(PreflightFailed, match=r"app\.python 'python3-nope' does not run"):
        python_version(remote, "python3-nope")
    layout = Layout(str(tmp_path))
    run_hook(remote, layout, "pwd > hook-ran", "restart")
    assert (tmp_path / "hook-ran").read_text() == f"{tmp_path}\n"
    with pytest.raises(RemoteError, match=r"maintenance on on .* failed \(exit 3\)"):
        run_hook(remote, layout, "exit 3", "maintenance on")


def test_ensure_venv_reuses_a_complete_venv(
    remote: Remote, sandbox_env: Environment, tmp_path: Path
) -> None:
    layout = Layout(str(tmp_path / "srv"))
    rid = "20240101000000-abcdefabcdef"
    remote.mkdirs(layout.release(rid), layout.venv("h1"))
    Path(layout.venv("h1"), ".seed-complete").touch()
    job = str(tmp_path / "job")
    assert ensure_venv(sandbox_env, remote, layout, rid, "h1", job, b"Django\n") is True
    assert os.readlink(Path(layout.release(rid), ".venv")) == layout.venv("h1")
    # the release keeps what its venv installs (from requirements.txt or pyproject.toml)
    assert Path(layout.release(rid), ".seed-requirements.txt").read_bytes() == b"Django\n"
    assert not (tmp_path / "job").exists()  # nothing was built


def test_ensure_venv_build_failure_is_reported(
    remote: Remote, sandbox_env: Environment, tmp_path: Path
) -> None:
    layout = Layout(str(tmp_path / "srv"))
    rid = "20240101000000-abcdefabcdef"
    remote.mkdirs(layout.release(rid))
    app = dataclasses.replace(sandbox_env.app, python="python3-nope")
    env = dataclasses.replace(sandbox_env, app=app)
    with pytest.raises(RemoteError, match=r"building the virtualenv on .* failed: .*python3-nope"):
        ensure_venv(env, remote, layout, rid, "h2", str(tmp_path / "job"), b"Django\n")
    assert not Path(layout.release(rid), ".venv").exists()
    assert not Path(layout.venv("h2"), ".seed-complete").exists()


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code, body = (200, b"ok: all good") if self.path == "/health/" else (503, b"down")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_health_check(
    remote: Remote, sandbox_env: Environment, health_server: str, tmp_path: Path
) -> None:
    layout = Layout(str(tmp_path / "srv"))
    rid = "20240101000000-abcdefabcdef"
    remote.mkdirs(layout.release(rid))
    os.symlink(sys.prefix, Path(layout.release(rid), ".venv"))  # a real venv's python
    switch_current(remote, layout, rid)

    def env_for(url: str, status: int, text: str | None, timeout: float) -> Environment:
        app = dataclasses.replace(sandbox_env.app, health=Health(url, status, text, timeout))
        return dataclasses.replace(sandbox_env, app=app)

    health_check(env_for(f"{health_server}/health/", 200, "all good", 5), remote, layout)
    health_check(env_for(f"{health_server}/other/", 503, None, 5), remote, layout)
    started = time.monotonic()
    with pytest.raises(RemoteError, match=r"health check .* failed: status 200, body 'ok: all"):
        health_check(env_for(f"{health_server}/health/", 200, "never", 0.6), remote, layout)
    assert 0.6 <= time.monotonic() - started < 10  # retried until the timeout
    with pytest.raises(RemoteError, match="status 503"):
        health_check(env_for(f"{health_server}/down/", 200, None, 0.3), remote, layout)


def test_upload_release_and_python_in_one_command(
    origin: Origin, mirror: Path, remote: Remote, tmp_path: Path
) -> None:
    layout = Layout(str(tmp_path / "srv" / "shop"))
    archive = build_archive(mirror, origin.v1, tmp_path / "archives")
    rid = release_id(origin.v1, "20240101000000")
    version = upload_release_and_python(remote, layout, rid, archive, origin.v1, "python3")
    assert version == python_version(remote, "python3")
    assert Path(layout.release(rid), "REVISION").read_text() == origin.v1 + "\n"
    other = release_id(origin.v1, "20240102000000")
    with pytest.raises(PreflightFailed, match=r"app\.python 'python3-nope' does not run"):
        upload_release_and_python(remote, layout, other, archive, origin.v1, "python3-nope")


def test_switching_current_replaces_the_link_atomically(remote: Remote, tmp_path: Path) -> None:
    layout = Layout(str(tmp_path))
    for rid in ("a", "b"):
        remote.mkdirs(layout.release(rid))
    switch_current(remote, layout, "a")
    inode = os.lstat(layout.current).st_ino
    switch_current(remote, layout, "b")
    assert os.readlink(layout.current) == "releases/b"
    assert os.lstat(layout.current).st_ino != inode  # a new link renamed over the old one
    assert sorted(os.listdir(tmp_path)) == ["current", "releases"]
    remote.symlink("releases/a", str(tmp_path / "other"))
    with pytest.raises(RemoteError, match="linking"):
        remote.symlink("releases/a", str(tmp_path / "other"))  # exists, and no replace


def run_health_script(url: str, header: str = "", release: str = "") -> tuple[int, str]:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-c", HEALTH_SCRIPT, url, "200", "ok", "3", header, release],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return res.returncode, res.stdout


def test_the_health_check_waits_for_three_answers_in_a_row_naming_the_release() -> None:
    """After a graceful reload old workers answer for a while: a host counts as switched
    once three answers in a row name the new release; the output says from when."""
    import http.server
    import threading
    import time

    answers = iter(["old", "new", "old", "new", "new", "new", "new"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("X-Release", next(answers, "new"))
            self.end_headers()
            self.wfile.write(b"ok v2")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        started = time.time()
        code, out = run_health_script(url, "X-Release", "new")
        assert code == 0, out
        text, _, stamps = out.strip().rpartition("\nSEED-HEALTH ")
        good, bad, first = (float(w) for w in stamps.split())
        assert "X-Release: new" in text
        # the first answer ("old") was the first bad one; then the last run of good ones
        assert started <= first == bad < good <= time.time()
        assert list(answers) == ["new"]  # three in a row, not the first "new" alone
        code, out = run_health_script(url, "X-Release", "other")
        assert code == 1 and "expected X-Release: other" in out
    finally:
        server.shutdown()
    code, out = run_health_script("http://127.0.0.1:9/")
    assert code == 1 and "SEED-HEALTH - " in out  # never good; refused from the first try
    _, bad, first = out.strip().rpartition("SEED-HEALTH ")[2].split()
    assert bad == first != "-"


def test_requirements_come_from_requirements_txt_or_pyproject(tmp_path: Path) -> None:
    """A real git repository: requirements.txt wins; else pyproject.toml's [project]
    dependencies; dynamic ones or none at all are refused naming the ref."""
    repo = tmp_path / "app"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)

    def commit(files: dict[str, str]) -> str:
        for name in [p.name for p in repo.iterdir() if p.name != ".git"]:
            (repo / name).unlink()
        for name, text in files.items():
            (repo / name).write_text(text)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
        return subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()

    both = commit({"requirements.txt": "Django==5.2\n", "pyproject.toml": "[project]\n"})
    assert rel.requirements_of(repo, both, "v1") == b"Django==5.2\n"
    project = commit(
        {"pyproject.toml": '[project]\nname = "shop"\ndependencies = ["Django>=5.2", "psycopg"]\n'}
    )
    assert rel.requirements_of(repo, project, "v2").decode().splitlines()[1:] == [
        "Django>=5.2",
        "psycopg",
    ]
    dynamic = commit({"pyproject.toml": '[project]\nname = "s"\ndynamic = ["dependencies"]\n'})
    with pytest.raises(PreflightFailed, match=r"v3 \(\w{12}\): .*dynamic: add a requirements"):
        rel.requirements_of(repo, dynamic, "v3")
    nothing = commit({"README": "x\n"})
    with pytest.raises(PreflightFailed, match=r"has no requirements\.txt"):
        rel.requirements_of(repo, nothing, "v4")


def test_app_root_deploys_one_folder_of_the_repository(tmp_path: Path) -> None:
    """app.root (Capistrano's repo_tree): the release is that folder, manage.py at its top;
    its requirements are the folder's own, else the repository's top ones; a folder the
    commit does not have is refused naming app.root."""
    repo = tmp_path / "mono"
    (repo / "backend" / "shopsite").mkdir(parents=True)
    (repo / "frontend").mkdir()
    (repo / "backend" / "manage.py").write_text("# manage\n")
    (repo / "backend" / "shopsite" / "settings.py").write_text("X = 1\n")
    (repo / "frontend" / "app.js").write_text("//\n")
    (repo / "requirements.txt").write_text("Django==5.2\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    sha = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()

    whole = rel.build_archive(repo, sha, tmp_path / "archives")
    sub = rel.build_archive(repo, sha, tmp_path / "archives", "backend")
    assert whole != sub
    with tarfile.open(sub) as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    assert names == {"manage.py", "shopsite/settings.py"}
    assert rel.requirements_of(repo, sha, "v1", "backend") == b"Django==5.2\n"  # the top's
    (repo / "backend" / "requirements.txt").write_text("Django==5.2\npsycopg==3.2\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "own requirements"], check=True)
    assert rel.requirements_of(repo, "HEAD", "v2", "backend").endswith(b"psycopg==3.2\n")
    with pytest.raises(PreflightFailed, match=r"app.root: api is not a folder of the app rep"):
        rel.build_archive(repo, sha, tmp_path / "archives", "api")
    (repo / "requirements.txt").unlink()
    subprocess.run([*git, "commit", "-q", "-am", "no top requirements"], check=True)
    with pytest.raises(PreflightFailed, match=r"v3 .* pyproject.toml\) in frontend/ or at the t"):
        rel.requirements_of(repo, "HEAD", "v3", "frontend")
