"""`seed init`: the starting files of an app repository."""

from __future__ import annotations

from invoke.context import Context

from seed.cli.edge import project_root, task, user_errors
from seed.commands.init import write_starting_files


@task()
@user_errors
def init(c: Context) -> None:
    """Write the starting files into this app repository (never over an existing file)."""
    root = project_root()
    if not (root / "manage.py").is_file():
        print(f"note: no manage.py in {root}: run `seed init` at the app repository's root")
    for rel, what in write_starting_files(root):
        print(f"  {what:<5} {rel}" + ("  (exists: left as it is)" if what == "kept" else ""))
    print(
        "next: fill in the hosts in environments/*.yml, ssh-keyscan them into "
        "environments/known_hosts, then `seed staging plan`"
    )
