"""`seed init`: the starting files of an app repository."""

from __future__ import annotations

from invoke.context import Context

from seed.cli.edge import project_root, task, user_errors
from seed.commands.init import find_manage, write_starting_files


@task()
@user_errors
def init(c: Context) -> None:
    """Write the starting files into this app repository (never over an existing file)."""
    root = project_root()
    manage = find_manage(root)
    if manage is None:
        print(
            f"note: no manage.py in {root} (nor one in a subfolder): run `seed init` at the "
            "app repository's root, or set app.root to manage.py's folder"
        )
    elif manage.parent != root:
        print(f"note: manage.py is in {manage.parent.relative_to(root)}/: app.root says so")
    for rel, what in write_starting_files(root):
        print(f"  {what:<5} {rel}" + ("  (exists: left as it is)" if what == "kept" else ""))
    print(
        "next: fill in the hosts in environments/*.yml, ssh-keyscan them into "
        "environments/known_hosts, then `seed staging plan`"
    )
