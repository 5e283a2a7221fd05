"""README and docs/: every link and every repository path they name resolves (issue 21:
README links resolve), so a reader following them never lands nowhere."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(
    r"`((?:docs|environments|example|masking|import|scripts|bench|seed|sandbox|tests)/"
    r"[A-Za-z0-9_./-]*)`"
)
OPTIONAL = {"environments/_defaults.yml"}  # a file the user may add; the docs say what it does


def test_links_and_named_paths_resolve() -> None:
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for target in LINK.findall(text):
            web = target.startswith(("http://", "https://", "mailto:"))
            if not web and not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(REPO)}: link {target}")
        for path in PATH.findall(text):
            if path not in OPTIONAL and not (REPO / path.rstrip("/")).exists():
                missing.append(f"{doc.relative_to(REPO)}: {path}")
    assert missing == []
