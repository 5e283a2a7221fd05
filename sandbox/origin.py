"""Build the sandbox's git origin from the example app's versions.

`example/releases.txt` lists one release per line, in build order::

    <tag> <parent tag, or - for the root> <commit message>

`example/<tag>/` holds the complete tree for the root release and, for every
other release, only the files it adds or changes relative to its parent. A
release's tree is its parent's tree with its overlay copied on top (overlays
cannot delete files).

`build_origin` writes one commit per release into a bare repository, tagged
with the release's name (lightweight tags). The root release starts branch
`main`, and a release whose parent is the tip of `main` when its line is read
advances `main`; the others (bad-data, bad-crash: built on v2 after v3 was)
are reachable only through their tags, so `main` ends at v4 and `HEAD` points
to `main`. No branch shares a tag's name, which keeps every tag an unambiguous
ref. Author, committer and dates are fixed, so the shas are the same on every
machine and every run, whatever the user's git configuration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from seed.errors import ConfigError

RELEASES_FILE = "releases.txt"
MAIN_BRANCH = "main"

_AUTHOR_NAME = "Seed Example"
_AUTHOR_EMAIL = "example@seed.invalid"
# 2024-01-01 12:00:00 UTC; release number n is dated n days later.
_EPOCH = 1_704_110_400
_DAY = 86_400

_TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Byproducts of running the example in place; never part of a release.
_SKIPPED_NAMES = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Release:
    """One line of releases.txt: a tag, the tag it builds on, the commit message."""

    tag: str
    parent: str | None
    message: str


def read_releases(example_dir: Path) -> list[Release]:
    """Parse and check `<example_dir>/releases.txt` (blank lines and # comments allowed).

    Raises ConfigError naming the file and line when a line is malformed, a tag
    repeats, a parent is unknown or listed later, there is not exactly one root
    (the first release), or a release's overlay directory is missing.
    """
    path = example_dir / RELEASES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    releases: list[Release] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        fields = line.split(maxsplit=2)
        if len(fields) != 3:
            raise ConfigError(f"{where}: expected '<tag> <parent tag or -> <message>'")
        tag, parent_field, message = fields
        if not _TAG_PATTERN.fullmatch(tag) or tag.endswith((".", ".lock")):
            raise ConfigError(f"{where}: {tag!r} is not a usable tag name")
        if tag in seen:
            raise ConfigError(f"{where}: tag {tag!r} is listed twice")
        parent = None if parent_field == "-" else parent_field
        if parent is None and releases:
            raise ConfigError(f"{where}: only the first release may have no parent ('-')")
        if parent is not None and not releases:
            raise ConfigError(f"{where}: the first release must have no parent ('-')")
        if parent is not None and parent not in seen:
            raise ConfigError(
                f"{where}: parent {parent!r} of {tag!r} is not a release listed before it"
            )
        if not (example_dir / tag).is_dir():
            raise ConfigError(f"{where}: overlay directory {example_dir / tag} does not exist")
        releases.append(Release(tag=tag, parent=parent, message=message))
        seen.add(tag)

    if not releases:
        raise ConfigError(f"{path}: no releases listed")
    return releases


def build_origin(example_dir: Path, bare_repo: Path) -> dict[str, str]:
    """(Re)create the bare repository `bare_repo` holding every release; return tag -> sha.

    The repository is built next to `bare_repo` and moved into place, replacing
    a previous build. A `bare_repo` that exists and is neither empty nor a git
    repository is refused rather than deleted.
    """
    releases = read_releases(example_dir)
    git = _Git()
    bare_repo = bare_repo.absolute()
    if bare_repo.exists() and not _is_replaceable(bare_repo):
        raise ConfigError(
            f"{bare_repo}: exists and is not a git repository; refusing to replace it"
        )
    bare_repo.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(
        prefix=f".{bare_repo.name}.build-", dir=bare_repo.parent
    ) as scratch_name:
        scratch = Path(scratch_name)
        new_repo = scratch / "repo.git"
        git.run(
            "init",
            "--bare",
            "--quiet",
            "--object-format=sha1",
            f"--initial-branch={MAIN_BRANCH}",
            str(new_repo),
        )
        shas = _commit_releases(git, example_dir, releases, new_repo, scratch)
        git.run("--git-dir", str(new_repo), "symbolic-ref", "HEAD", f"refs/heads/{MAIN_BRANCH}")

        old_repo = scratch / "previous.git"
        if bare_repo.exists():
            bare_repo.rename(old_repo)
        new_repo.rename(bare_repo)
    return shas


def _commit_releases(
    git: _Git, example_dir: Path, releases: list[Release], repo: Path, scratch: Path
) -> dict[str, str]:
    """Write one commit per release into `repo`, tag it and advance `main` along the line."""
    overlays: dict[str, list[Path]] = {}
    shas: dict[str, str] = {}
    main_tip: str | None = None
    for number, release in enumerate(releases):
        inherited = overlays[release.parent] if release.parent else []
        chain = [*inherited, example_dir / release.tag]
        overlays[release.tag] = chain

        work_tree = scratch / f"tree-{number}"
        for overlay in chain:
            _copy_overlay(overlay, work_tree)
        index = scratch / f"index-{number}"
        with_tree = ("--git-dir", str(repo), "--work-tree", str(work_tree))
        index_env = {"GIT_INDEX_FILE": str(index)}
        # --force: files matched by any ignore rule are part of the release too.
        git.run(*with_tree, "add", "--all", "--force", ".", extra_env=index_env)
        tree = git.run(*with_tree, "write-tree", extra_env=index_env)

        date = f"@{_EPOCH + number * _DAY} +0000"
        parent_args = ["-p", shas[release.parent]] if release.parent else []
        sha = git.run(
            "--git-dir",
            str(repo),
            "commit-tree",
            "--no-gpg-sign",
            *parent_args,
            "-m",
            release.message,
            tree,
            extra_env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
        )
        git.run("--git-dir", str(repo), "tag", release.tag, sha)
        if release.parent is None or shas[release.parent] == main_tip:
            git.run("--git-dir", str(repo), "update-ref", f"refs/heads/{MAIN_BRANCH}", sha)
            main_tip = sha
        shas[release.tag] = sha
        shutil.rmtree(work_tree)
    return shas


def _copy_overlay(overlay: Path, work_tree: Path) -> None:
    """Copy `overlay` onto `work_tree`, replacing files, keeping modes, skipping byproducts."""

    def skipped(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n in _SKIPPED_NAMES or n.endswith(_SKIPPED_SUFFIXES)}

    try:
        shutil.copytree(overlay, work_tree, symlinks=True, ignore=skipped, dirs_exist_ok=True)
    except (OSError, shutil.Error) as exc:
        raise ConfigError(f"{overlay}: cannot copy the release files: {exc}") from exc


def _is_replaceable(path: Path) -> bool:
    """An empty directory or a bare git repository (what a previous build left)."""
    if not path.is_dir() or path.is_symlink():
        return False
    if not any(path.iterdir()):
        return True
    return all((path / name).exists() for name in ("HEAD", "objects", "refs"))


class _Git:
    """The git CLI with the caller's git configuration and environment shut out."""

    def __init__(self) -> None:
        executable = shutil.which("git")
        if executable is None:
            raise ConfigError("git: not found on PATH; it is needed to build the example origin")
        self.executable = executable
        # GIT_DIR, GIT_INDEX_FILE, GIT_DEFAULT_HASH... from a calling hook would redirect us.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            {
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_AUTHOR_NAME": _AUTHOR_NAME,
                "GIT_AUTHOR_EMAIL": _AUTHOR_EMAIL,
                "GIT_COMMITTER_NAME": _AUTHOR_NAME,
                "GIT_COMMITTER_EMAIL": _AUTHOR_EMAIL,
                "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C",
            }
        )
        self.env = env

    def run(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """Run git with fixed settings; return stripped stdout, raise ConfigError on failure."""
        command = [
            self.executable,
            "-c",
            f"init.defaultBranch={MAIN_BRANCH}",
            "-c",
            "core.autocrlf=false",
            "-c",
            "core.fileMode=true",
            "-c",
            "core.symlinks=true",
            "-c",
            "core.excludesFile=" + os.devnull,
            *args,
        ]
        env = {**self.env, **(extra_env or {})}
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            reason = detail[-1] if detail else f"exit status {result.returncode}"
            raise ConfigError(f"git {' '.join(args)}: {reason}")
        return result.stdout.strip()
