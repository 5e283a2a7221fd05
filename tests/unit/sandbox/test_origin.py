"""sandbox.origin: the example app's versions as a bare git repository (real git, no PostgreSQL)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandbox.origin import Release, build_origin, read_releases
from seed.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "example"
TAGS = [
    "v1",
    "v2",
    "v3",
    "v4",
    "bad-data",
    "bad-crash",
    "bad-swap",
    "bad-corrupt",
    "bad-null",
    "slow",
    "bad-reverse",
    "unsafe",
    "rewrite",
    "broken",
    "thirdparty",
    "expand",
    "contract",
]
PARENTS = (
    {"v1": None, "v2": "v1", "v3": "v2", "v4": "v3"}
    | {t: "v2" for t in TAGS[4:]}
    | {"contract": "expand"}
)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def archive_file(repo: Path, ref: str, path: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    tar = subprocess.run(
        ["git", "--git-dir", str(repo), "archive", "--format=tar", ref],
        env=env,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        member = archive.extractfile(path)
        assert member is not None, f"{path} missing from {ref}"
        return member.read().decode()


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("origin") / "shop.git"
    return repo, build_origin(EXAMPLE, repo)


def test_read_releases_lists_the_example_in_build_order() -> None:
    releases = read_releases(EXAMPLE)
    assert [r.tag for r in releases] == TAGS
    assert {r.tag: r.parent for r in releases} == PARENTS
    assert releases[2] == Release("v3", "v2", "Contract: remove Customer.name")


def test_every_tag_is_a_commit_on_its_parent(origin: tuple[Path, dict[str, str]]) -> None:
    repo, shas = origin
    assert list(shas) == TAGS
    for tag, parent in PARENTS.items():
        assert git(repo, "rev-parse", f"{tag}^{{commit}}") == shas[tag]
        parents = git(repo, "rev-list", "--parents", "-n1", tag).split()[1:]
        assert parents == ([shas[parent]] if parent else [])


def test_main_is_the_release_line_and_head(origin: tuple[Path, dict[str, str]]) -> None:
    repo, shas = origin
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(repo, "rev-parse", "main") == shas["v4"]
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/heads") == "refs/heads/main"
    assert git(repo, "log", "--format=%s", "-n1", "bad-crash") == (
        "Loyalty points: add column, then a backfill that crashes"
    )


def test_shas_are_stable_across_builds(origin: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _, shas = origin
    assert build_origin(EXAMPLE, tmp_path / "again.git") == shas
    # Rebuilding over an existing build replaces it and gives the same history.
    assert build_origin(EXAMPLE, tmp_path / "again.git") == shas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.git"]


def test_commits_do_not_depend_on_the_callers_git_environment(
    origin: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, shas = origin
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Somebody Else")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2001-01-01T00:00:00Z")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    assert build_origin(EXAMPLE, tmp_path / "shop.git") == shas


def test_overlays_stack_on_the_parent_tree(origin: tuple[Path, dict[str, str]]) -> None:
    repo, _ = origin
    for tag in TAGS:
        assert archive_file(repo, tag, "VERSION").strip() == tag
        # Files only v1 has are inherited by every descendant.
        assert "Django==5.2.19" in archive_file(repo, tag, "requirements.txt")
    v2_files = git(repo, "ls-tree", "-r", "--name-only", "v2").splitlines()
    assert "shop/migrations/0002_demo_data.py" in v2_files
    assert "shop/migrations/0004_fill_first_last_name.py" in v2_files
    bad_data_files = git(repo, "ls-tree", "-r", "--name-only", "bad-data").splitlines()
    assert "shop/migrations/0005_normalize_emails.py" in bad_data_files
    assert "shop/migrations/0005_remove_customer_name.py" not in bad_data_files


def test_v3_model_has_no_name_field(origin: tuple[Path, dict[str, str]]) -> None:
    repo, _ = origin
    assert "name = models.CharField" in archive_file(repo, "v2", "shop/customer.py")
    v3_models = archive_file(repo, "v3", "shop/customer.py")
    assert "name = models" not in v3_models.replace("first_name", "").replace("last_name", "")
    assert "def full_name" in v3_models


def test_appctl_stays_executable(origin: tuple[Path, dict[str, str]]) -> None:
    repo, _ = origin
    for tag in TAGS:
        mode = git(repo, "ls-tree", tag, "deploy/appctl").split()[0]
        assert mode == "100755", tag


def test_no_bytecode_gets_committed(tmp_path: Path) -> None:
    example = tmp_path / "example"
    shutil.copytree(EXAMPLE, example)
    cache = example / "v1" / "shop" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "models.cpython-311.pyc").write_bytes(b"\0")
    repo = tmp_path / "shop.git"
    build_origin(example, repo)
    assert "__pycache__" not in git(repo, "ls-tree", "-r", "--name-only", "v1")


def make_example(root: Path, releases: str, overlays: list[str]) -> Path:
    root.mkdir()
    (root / "releases.txt").write_text(releases)
    for name in overlays:
        (root / name).mkdir()
        (root / name / "VERSION").write_text(name)
    return root


@pytest.mark.parametrize(
    ("releases", "overlays", "complaint"),
    [
        ("v1 - one\nv2 nope two\n", ["v1", "v2"], "parent 'nope' of 'v2'"),
        ("v2 v1 two\nv1 - one\n", ["v1", "v2"], "first release must have no parent"),
        ("v1 - one\nv1 - again\n", ["v1"], "listed twice"),
        ("v1 - one\nv2 - two\n", ["v1", "v2"], "only the first release"),
        ("v1 - one\nv2 v1\n", ["v1", "v2"], "expected '<tag> <parent tag or -> <message>'"),
        ("v1 - one\nv2 v1 two\n", ["v1"], "overlay directory"),
        ("# nothing yet\n\n", [], "no releases listed"),
        ("v1 - one\n-x v1 two\n", ["v1"], "not a usable tag name"),
    ],
)
def test_broken_releases_file_is_a_config_error(
    tmp_path: Path, releases: str, overlays: list[str], complaint: str
) -> None:
    example = make_example(tmp_path / "example", releases, overlays)
    with pytest.raises(ConfigError) as raised:
        build_origin(example, tmp_path / "shop.git")
    message = str(raised.value)
    assert complaint in message
    assert str(example / "releases.txt") in message
    assert "\n" not in message
    assert not (tmp_path / "shop.git").exists()


def test_missing_releases_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"releases\.txt: cannot read"):
        read_releases(tmp_path)


def test_refuses_to_replace_something_that_is_not_a_repository(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a git repository"):
        build_origin(EXAMPLE, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
