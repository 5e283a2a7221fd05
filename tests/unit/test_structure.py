"""The core's shape, checked on its import graph (issue 20).

- seed/ is packages by area; only `errors` and `faults` (used by every area) sit at the top.
- Commands (seed/commands/) are not libraries: no module imports a command module but
  the command line (seed/cli/), so what two commands share is a building block in its area.
- The sandbox is tooling around the product: no module under seed/ imports it.
- The undo is written once: only seed/undo/database.py restores a database as the live
  one, swaps databases, verifies against a before-state or counts the app's writes.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "seed"

AREAS = {
    "backup", "checks", "cli", "commands", "config", "copy", "db", "deploy", "journal",
    "legacy", "rehearse", "remote", "run", "undo",
}  # fmt: skip
TOP_MODULES = {"__init__.py", "errors.py", "faults.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether a dotted name is a module of this repository (not a name inside one)."""
    path = REPO / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def product_files() -> list[Path]:
    return sorted(p for p in SEED.rglob("*.py") if "scripts" not in p.relative_to(SEED).parts)


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


def seed_imports(path: Path) -> set[str]:
    """The seed modules a file imports (`from seed.x import y` counts y if it is a module)."""
    return {n for n in imported_modules(path) if n.startswith("seed.") and is_module(n)}


def uses(path: Path) -> set[tuple[str, str]]:
    """(module, name) pairs of seed modules this file uses by name or attribute."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}  # local name -> seed module
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seed"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if is_module(full):
                    aliases[alias.asname or alias.name] = full
                else:
                    found.add((node.module, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("seed.") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            found.add((aliases[node.value.id], node.attr))
    return found


def is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def test_the_core_is_packages_by_area() -> None:
    top = {p.name for p in SEED.iterdir() if p.suffix == ".py"}
    packages = {p.name for p in SEED.iterdir() if (p / "__init__.py").exists()}
    assert top == TOP_MODULES
    assert packages == AREAS
    # a package's __init__ holds no code: importing seed.checks.spec must not pull the
    # rest of the area in (the config imports the check spec)
    inits = [p for p in product_files() if p.name == "__init__.py" and p.parent != SEED]
    assert [
        p for p in inits if any(not is_docstring(n) for n in ast.parse(p.read_text()).body)
    ] == []


def test_the_product_never_imports_the_sandbox() -> None:
    """The sandbox (servers, balancer, origin, wheels, demo data) is tooling around the
    product: nothing in seed/ may need it."""
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in product_files()
        for name in sorted(imported_modules(path))
        if name == "sandbox" or name.startswith("sandbox.")
    ]
    assert offenders == []


def command_offenders(files: list[Path]) -> list[str]:
    return [
        f"{module} imports {name}"
        for path in files
        for module in [module_name(path)]
        for name in sorted(seed_imports(path))
        if name.startswith("seed.commands.") and name != module
    ]


def test_commands_are_not_libraries() -> None:
    """No module under seed/ imports a command module (not even another command): what two
    commands share is a building block (e.g. the verified backup in seed.backup.verified,
    the target code in seed.deploy.target). seed/cli/ is the commands' only user."""
    cli = SEED / "cli"
    assert command_offenders([p for p in product_files() if cli not in p.parents]) == []
    used_by_tasks = {
        name
        for path in sorted(cli.glob("*.py"))
        for name in seed_imports(path)
        if name.startswith("seed.commands.")
    }
    commands = {module_name(p) for p in (SEED / "commands").glob("*.py")} - {"seed.commands"}
    assert used_by_tasks == commands  # every command module is a command


def test_only_the_undo_package_restores_swaps_verifies_and_counts_writes() -> None:
    only_in_undo = {
        ("seed.backup.restore", "restore_as_live"),
        ("seed.backup.restore", "swap"),
        ("seed.backup.restore", "prepare_snapshot"),
        ("seed.backup.restore", "verify_like_before"),
        ("seed.undo.database", "writes_since_backup"),
        ("seed.undo.database", "read_counters"),
    }
    offenders = []
    for path in product_files():
        module = module_name(path)
        if module in ("seed.undo.database", "seed.undo.online"):  # the undo package
            continue
        for used in sorted(uses(path) & only_in_undo):
            if used[0] != module:
                offenders.append(f"{module} uses {used[0]}.{used[1]}")
    assert offenders == []


def test_the_checks_find_an_offence(tmp_path: Path) -> None:
    """The checks above can fail: they see both spellings of a use, and a command
    imported by another module."""
    sample = SEED / "deploy" / "_structure_sample.py"
    sample.write_text(
        "from seed.backup import restore as r\n"
        "from seed.undo.database import read_counters\n"
        "from seed.commands import rollback\n"
        "r.swap(1, 2)\n"
    )
    try:
        assert uses(sample) >= {
            ("seed.backup.restore", "swap"),
            ("seed.undo.database", "read_counters"),
        }
        assert command_offenders([sample]) == [
            "seed.deploy._structure_sample imports seed.commands.rollback"
        ]
    finally:
        sample.unlink()


def bare_seed_errors(path: Path) -> list[str]:
    """`raise SeedError(...)` in a file: the base class's code 1 is the code of a bug."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Name | ast.Attribute)
        and (getattr(node.exc.func, "id", None) or getattr(node.exc.func, "attr", None))
        == "SeedError"
    ]


def test_no_failure_raises_the_base_error_whose_code_is_a_bugs() -> None:
    """A failure a user can act on has a type with its exit code (StepFailed, 6, when the
    run it belongs to cannot say more); SeedError itself exits 1, a bug's code."""
    files = product_files()
    assert [hit for path in files for hit in bare_seed_errors(path)] == []
    sample = SEED / "deploy" / "_structure_sample.py"
    sample.write_text("from seed import errors\nraise errors.SeedError('x')\n")
    try:
        assert bare_seed_errors(sample) == ["seed/deploy/_structure_sample.py:2"]
    finally:
        sample.unlink()


def test_importing_the_command_line_sets_no_environment_variable() -> None:
    """The command line (seed/cli/, and the checkout's fabfile) changes nothing when
    imported (as for `--list`), not even os.environ (the sandbox's default directory is
    given when local.yml is loaded)."""
    code = (
        "import os, sys; before = dict(os.environ); import fabfile; "
        "changed = set(os.environ.items()) ^ set(before.items()); "
        "assert not changed, changed; "
        # the `[import]` extra's libraries load when an import runs, not for every command
        "heavy = {'pandas', 'numpy', 'phonenumbers', 'openpyxl', 'faker'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_")}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
