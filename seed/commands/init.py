"""`seed init`: the starting files of an app repository, written once, never over a file.

Like `kamal init` and `cap install`: annotated environment files for staging and
production (with the JSON Schema beside them, so editors complete and check every key),
`deploy/checks.yml` and `deploy/lint.yml` (checks and waivers that travel with the
migrations), and a CI example. What can be read from the repository is filled in: the
project's name (the folder), `app.repo` (git's `origin`), `app.settings` (the
DJANGO_SETTINGS_MODULE that manage.py sets), `app.root` (manage.py's folder when it is
not the top one)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from seed.config import schema
from seed.errors import ConfigError

FILES = (
    "environments/staging.yml",
    "environments/production.yml",
    "deploy/checks.yml",
    "deploy/lint.yml",
    "deploy/ci/github-actions.yml",
)
SCHEMA_FILE = "environments/environment.schema.json"


@dataclass(frozen=True)
class Project:
    name: str  # folder name, as a database and service name (lowercase, underscores)
    repo: str
    settings: str
    root: str = ""  # manage.py's folder, "" for the top

    @property
    def prefix(self) -> str:
        """Environment variable prefix of the secrets (SHOP_STAGING_DB_PASSWORD)."""
        return self.name.upper()


def read_project(root: Path) -> Project:
    """What the repository says about itself; placeholders where it says nothing."""
    name = re.sub(r"[^a-z0-9_]", "_", root.resolve().name.lower()).strip("_") or "app"
    if name[0].isdigit():
        name = f"app_{name}"
    try:
        origin = subprocess.run(
            ["git", "-C", str(root), "remote", "get-url", "origin"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        origin = ""
    settings = f"{name}.settings"
    manage = find_manage(root)
    if manage is not None:
        found = re.search(
            r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""", manage.read_text()
        )
        settings = found.group(1) if found else settings
    project_root = manage.parent.relative_to(root).as_posix() if manage else "."
    return Project(
        name,
        origin or f"git@github.com:your-org/{name}.git",
        settings,
        "" if project_root == "." else project_root,
    )


_NOT_PROJECT = {"node_modules", "site-packages", "venv", "env", "build", "dist"}


def find_manage(root: Path) -> Path | None:
    """The project's manage.py: at the top, else the one in a folder at most two deep
    (none when there are several: the user says which with app.root)."""
    if (root / "manage.py").is_file():
        return root / "manage.py"
    found = [
        path
        for pattern in ("*/manage.py", "*/*/manage.py")
        for path in sorted(root.glob(pattern))
        if not any(p.startswith(".") or p in _NOT_PROJECT for p in path.relative_to(root).parts)
    ]
    return found[0] if len(found) == 1 else None


def render(template: Traversable, project: Project) -> str:
    text = template.read_text()
    for key, value in (
        ("@NAME@", project.name),
        ("@REPO@", project.repo),
        ("@SETTINGS@", project.settings),
        ("@PREFIX@", project.prefix),
        ("@ROOT@ ", (f"root: {project.root}" if project.root else "# root: backend").ljust(38)),
    ):
        text = text.replace(key, value)
    return text


def write_starting_files(root: Path) -> list[tuple[str, str]]:
    """Each starting file under `root` written if absent; (path, "wrote" | "kept")."""
    project = read_project(root)
    templates = resources.files("seed.config") / "templates"
    contents = {rel: render(templates.joinpath(rel), project) for rel in FILES}
    contents[SCHEMA_FILE] = json.dumps(schema.document(), indent=2) + "\n"
    done = []
    for rel, text in contents.items():
        path = root / rel
        if path.exists():
            done.append((rel, "kept"))
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x") as f:  # never over a file that appeared meanwhile
                f.write(text)
        except OSError as exc:  # a read-only checkout, a full disk: one line, exit 2
            raise ConfigError(f"{path}: cannot write it: {exc.strerror}") from None
        done.append((rel, "wrote"))
    return done
