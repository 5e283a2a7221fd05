"""Code switched host by host while the site serves: a code-only deploy, and undoing one.

The app hosts go in batches (`app.rolling.batch`: N hosts, or N%). For each host of a
batch, at once: out of traffic (`app.drain`), `current` switched, the app reloaded
(`app.reload`, graceful; else `app.restart`, which is not: the host counts as out while
it restarts), its health checked on the host itself until it answers as expected and,
with `health.release_header`, names the release three times in a row (old workers may
answer for a while after a reload), then back into traffic (`app.undrain`). The next
batch starts once every host of this one serves the release. The hooks of the `switch`
point run around each batch. seed.deploy.availability counts the time no host served.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from seed.deploy import release as rel
from seed.remote.ssh import Remote, q

if TYPE_CHECKING:
    from seed.run.operation import Operation


def batches(hosts: list[Remote], size: int) -> list[list[Remote]]:
    """`hosts` in order, `size` at a time."""
    return [hosts[i : i + size] for i in range(0, len(hosts), size)]


def switch_host(op: Operation, remote: Remote, release: str | None) -> None:
    """One host to `release` (None: no release, as before a first deploy): drain, switch,
    reload or restart, health (naming the release), undrain."""
    app, layout = op.env.app, op.at(remote)
    names = rel.host_names(remote, release)
    label = remote.label
    if app.drain:
        op.availability.out(label)
        rel.run_hook(remote, layout, app.drain, f"drain on {label}", names)
    if release is None:
        remote.check(f"rm -f {q(layout.current)}", "removing current")
        if app.maintenance_on:  # nothing to serve here: the app is stopped, as before
            op.availability.out(label)
            rel.run_hook(remote, layout, app.maintenance_on, f"stop app on {label}", names)
        return
    rel.switch_current(remote, layout, release)
    command = app.reload or app.restart
    if command:
        if not app.reload:
            op.availability.out(label)  # a restart stops the app for a moment
        what = "reload" if app.reload else "restart"
        rel.run_hook(remote, layout, command, f"{what} on {label}", names)
    reloaded = time.time()
    if app.health:  # a failure counts the host out from its first bad answer
        op.http_health(
            remote, release, in_traffic=not app.drain, changed_at=reloaded if app.reload else None
        )
    if app.undrain:
        rel.run_hook(remote, layout, app.undrain, f"undrain on {label}", names)
    op.availability.back(label)


def roll(
    op: Operation,
    hosts: list[Remote],
    release_of: Callable[[Remote], str | None],
    step: str,
    on_switched: Callable[[Remote], None] = lambda remote: None,
) -> None:
    """Every host of `hosts` to `release_of(host)`, batch after batch, one step per batch
    (`<step> 1/3`). `on_switched` is told of each host once its `current` may have moved
    (so that undoing knows which hosts to put back). The first failing batch stops the
    roll: its SeedError is raised after every host of the batch finished."""
    groups = batches(hosts, op.env.app.batch_size(len(hosts)))
    for i, group in enumerate(groups, 1):
        with op.step(f"{step} {i}/{len(groups)}") as s, op.hooked("switch", group):

            def one(remote: Remote) -> None:
                on_switched(remote)
                switch_host(op, remote, release_of(remote))

            op.on_hosts(group, one, step)
            s.detail = ", ".join(f"{r.label} → {release_of(r) or 'none'}" for r in group)
