"""The undo is written once (issue 18): only seed/undo.py restores a database as the live
one, swaps databases, verifies against a before-state or counts the app's writes. Every
path that goes back (the automatic rollback, `rollback` and its recovery, `restore`,
`copy-to`) goes through it, so a fix there is a fix everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

SEED = Path(__file__).resolve().parents[2] / "seed"

# (module, name): only seed/undo.py (and the module defining the name) may use it
ONLY_IN_UNDO = {
    ("seed.restore", "restore_as_live"),
    ("seed.restore", "swap"),
    ("seed.restore", "prepare_snapshot"),
    ("seed.restore", "verify_like_before"),
    ("seed.undo", "writes_since_backup"),
    ("seed.undo", "read_counters"),
}


def uses(path: Path) -> set[tuple[str, str]]:
    """(module, name) pairs of seed modules this file uses by name or attribute."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}  # local name -> seed module
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                local = alias.asname or alias.name
                if node.module == "seed":
                    aliases[local] = f"seed.{alias.name}"
                else:
                    found.add((node.module, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("seed."):
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            found.add((aliases[node.value.id], node.attr))
    return found


def test_only_the_undo_module_restores_swaps_verifies_and_counts_writes() -> None:
    offenders = []
    for path in sorted(SEED.rglob("*.py")):
        module = "seed." + ".".join(path.relative_to(SEED).with_suffix("").parts)
        if module == "seed.undo":
            continue
        for used in sorted(uses(path) & ONLY_IN_UNDO):
            if used[0] != module:
                offenders.append(f"{module} uses {used[0]}.{used[1]}")
    assert offenders == []


def test_the_check_finds_a_use() -> None:
    """The check above can fail: it sees both spellings of a use."""
    sample = SEED.parent / "tests" / "unit" / "_structure_sample.py"
    sample.write_text(
        "from seed import restore as r\nfrom seed.undo import read_counters\nr.swap(1, 2)\n"
    )
    try:
        assert uses(sample) >= {("seed.restore", "swap"), ("seed.undo", "read_counters")}
    finally:
        sample.unlink()


def imported_modules(path: Path) -> set[str]:
    """Every module this file imports (absolute names; `from x import y` gives x and x.y)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_product_never_imports_the_sandbox() -> None:
    """The sandbox (servers, balancer, origin, wheels, demo data) is tooling around the
    product: nothing in seed/ may need it."""
    offenders = [
        f"{path.relative_to(SEED.parent)} imports {name}"
        for path in sorted(SEED.rglob("*.py"))
        for name in sorted(imported_modules(path))
        if name == "sandbox" or name.startswith("sandbox.")
    ]
    assert offenders == []
    assert not any((SEED / name).exists() for name in ("sandbox.py", "origin.py", "wheels.py"))


# The modules behind the command line (tasks/): each runs one command. They use the
# building blocks and are used by nothing but tasks/ (issue: commands stop being libraries).
COMMANDS = {
    "seed.pipeline",  # upgradedb
    "seed.rollback",  # rollback
    "seed.unlock",  # unlock
    "seed.dbtasks",  # backup, backups, restore, cleanup
    "seed.copyto",  # copy-to
    "seed.copyrules",  # copy-rules
    "seed.importer",  # import-legacy
    "seed.rehearse",  # rehearse
    "seed.validate",  # validate
    "seed.overview",  # status, history
    "seed.plan",  # plan, lint
}


def seed_imports(path: Path) -> set[str]:
    """The seed modules a file imports (`from seed import x` counts as seed.x)."""
    return {
        name
        for name in imported_modules(path)
        if name.startswith("seed.") and (SEED / f"{name[5:].replace('.', '/')}.py").exists()
    }


def test_commands_are_not_libraries() -> None:
    """No module under seed/ imports a command module: what two commands share is a
    building block (e.g. the verified backup in seed.backup_run, the target code in
    seed.target), never one command calling into another."""
    assert all((SEED / f"{m[5:]}.py").exists() for m in COMMANDS)
    offenders = [
        f"{module} imports {name}"
        for path in sorted(SEED.rglob("*.py"))
        for module in ["seed." + ".".join(path.relative_to(SEED).with_suffix("").parts)]
        for name in sorted(seed_imports(path) & COMMANDS)
        if name != module
    ]
    assert offenders == []
