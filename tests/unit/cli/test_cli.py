"""seed.cli: the `seed` program's command line as a user meets it (no servers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from seed import __version__
from seed.cli.edge import SHORT_FLAGS
from seed.cli.main import manage_words, namespace, refused_fabric_option

REPO = Path(__file__).resolve().parents[3]


def test_short_flags_are_the_same_in_every_task_and_none_is_h() -> None:
    seen: dict[str, set[str]] = {}
    for name, task in namespace().tasks.items():
        for arg in task.get_arguments():
            long, *short = arg.names
            assert "h" not in short, f"{name} --{long} shadows -h"
            assert short == ([SHORT_FLAGS[long]] if long in SHORT_FLAGS else []), (name, long)
            for letter in short:
                seen.setdefault(letter, set()).add(long)
    assert seen["r"] == {"ref"}  # -r is --ref wherever it exists, never --report
    assert all(len(longs) == 1 for longs in seen.values()), seen


def test_every_task_has_a_one_line_summary_for_list() -> None:
    for name, task in namespace().tasks.items():
        first = (task.__doc__ or "").strip().splitlines()[0]
        assert first.endswith((".", ")")) and len(first) <= 100, f"{name}: {first!r}"


def test_version_names_seed() -> None:
    code = "import sys; from seed.cli.main import main; sys.argv = ['seed', '--version']; main()"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.splitlines()[0] == f"Seed {__version__}"


def test_the_words_after_manage_are_its_command() -> None:
    assert manage_words(["seed", "prod", "manage", "migrate", "shop", "--plan"]) == [
        "seed", "prod", "manage", "--args", "migrate shop --plan",
    ]  # fmt: skip
    assert manage_words(["seed", "prod", "manage", "shell", "-c", "print('a b')"])[-1] == (
        "shell -c 'print('\"'\"'a b'\"'\"')'"
    )
    for untouched in (["seed", "prod", "manage"], ["seed", "prod", "manage", "--help"]):
        assert manage_words(untouched) == untouched
    assert manage_words(["seed", "prod", "status"]) == ["seed", "prod", "status"]
    branch = ["seed", "prod", "plan", "--ref", "manage", "--json"]
    assert manage_words(branch) == branch


def test_every_option_of_every_task_has_help() -> None:
    """Shared options take their help from COMMON_HELP, the others from their task. In a
    fresh interpreter: invoke pops a task's help while it makes its arguments."""
    code = """
import inspect
from seed.cli.main import namespace
for name, task in namespace().tasks.items():
    for option in [p for p in inspect.signature(task.body).parameters if p != "c"]:
        forms = (option, option.rstrip("_"), option.replace("_", "-"))
        if not any(task.help.get(f) for f in forms):
            print(name, option)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout == ""


def seed_command(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"import sys; from seed.cli.main import main; sys.argv = ['seed', *{list(args)!r}]; main()"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_fabric_options_seed_does_not_use_are_not_offered_and_refused() -> None:
    """`--dry` would look like a dry run and deploy for real: refused (exit 2), and no
    Fabric-only option in `seed --help`."""
    shown = seed_command("--help")
    assert shown.returncode == 0 and "--list" in shown.stdout and "upgradedb" in shown.stdout
    for flag in ("--dry", "--hosts", "--identity", "--ssh-config", "--warn-only", "--echo"):
        assert flag not in shown.stdout, flag
    for argv in (["-R", "prod", "upgradedb"], ["--hosts", "web1", "prod", "status"]):
        res = seed_command(*argv)
        assert res.returncode == 2 and "is a Fabric option Seed does not use" in res.stderr, argv
    # the checkout's `fab` too: Fabric parses them before the fabfile loads
    fab = str(Path(sys.executable).parent / "fab")
    for argv in (["--dry", "local", "upgradedb"], ["-eR", "local", "status"]):
        res = subprocess.run([fab, *argv], cwd=REPO, capture_output=True, text=True, check=False)
        assert res.returncode == 2, (argv, res.stdout, res.stderr)
        assert "is a Fabric option Seed does not use" in res.stderr, res.stderr
    assert refused_fabric_option(["-d", "local", "--dry"]) is None  # a task's own option
