"""How to reach a host: its OpenSSH client config (HostName, User, Port, IdentityFile) and
the gateways in front of it (ProxyJump chains, ssh.gateway, ProxyCommand). No connection
is made here: this only decides the hops, first to last, so that whoever connects can
name the one that failed.

The rules are OpenSSH's, as `ssh` applies them:
- `ProxyJump a,b` to T: T is reached through b, and b through a. The first hop, a, is
  reached as its own Host block says (its own ProxyJump or ProxyCommand count); b's are
  ignored (ssh reaches b with `-J a`, which overrides b's own settings). A chain that
  comes back to a host already on it is refused, as `ssh` refuses a "jumphost loop".
- A hop written `[user@]host[:port]` (or `ssh://...`) states its user and port; what it
  leaves out comes from its Host block, else the local user and 22. Every hop's HostName
  and IdentityFile come from its Host block: a ProxyJump may name an alias.
- `ssh.gateway` in the environment file is a ProxyJump the environment file states: the
  same syntax (a comma-separated chain), the same resolution, and it wins over the ssh
  config's ProxyJump/ProxyCommand for the hosts.
- ProxyJump and ProxyCommand compete: OpenSSH takes whichever comes first in the file,
  which paramiko's parser does not tell; a host that has both is refused (one line).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paramiko

from seed.config.environment import Host, local_user
from seed.errors import PreflightFailed

MAX_HOPS = 8  # OpenSSH has no limit; a longer chain is a loop paramiko's lookup hides


@dataclass(frozen=True)
class Hop:
    """One SSH server on the way, with what connecting to it takes."""

    alias: str  # as written: a Host block's name or an address
    hostname: str
    user: str
    port: int
    key_files: tuple[str, ...] = ()
    via_command: str | None = None  # reached through this ProxyCommand (first hop only)

    @property
    def label(self) -> str:
        where = f"{self.user}@{self.hostname}:{self.port}"
        return where if self.alias == self.hostname else f"{self.alias} ({where})"


@dataclass(frozen=True)
class Route:
    """The target and the gateways in front of it, first to last. The first of all (the
    first gateway, else the target) may be reached through a ProxyCommand."""

    target: Hop
    gateways: tuple[Hop, ...] = ()

    @property
    def first(self) -> Hop:
        return self.gateways[0] if self.gateways else self.target

    @property
    def proxy_command(self) -> str | None:
        return self.first.via_command


class _Config:
    """The ssh config file, parsed once per route; without one every name is itself."""

    def __init__(self, path: Path | None, label: str) -> None:
        self.path = path
        self.label = label
        self.parsed: paramiko.SSHConfig | None = None
        if path is not None:
            try:
                self.parsed = paramiko.SSHConfig.from_path(str(path))
            except (OSError, ValueError, paramiko.SSHException) as exc:
                raise PreflightFailed(f"ssh {label}: reading {path}: {exc}") from None

    def lookup(self, name: str) -> dict[str, Any]:
        if self.parsed is None:
            return {"hostname": name}
        try:
            return dict(self.parsed.lookup(name))
        except (OSError, ValueError, paramiko.SSHException) as exc:
            raise PreflightFailed(
                f"ssh {self.label}: reading {self.path} for {name}: {exc}"
            ) from None

    def refuse(self, what: str) -> PreflightFailed:
        where = f"{self.path}" if self.path is not None else "ssh.gateway"
        return PreflightFailed(f"ssh {self.label}: {where}: {what}")


def resolve(host: Host, config_file: Path | None, gateway: str | None) -> Route:
    """The route to `host`. Its HostName and IdentityFile come from the ssh config; its
    User and Port only where the environment file left them to the defaults (the
    environment file wins for anything it states, `ssh.gateway` included)."""
    config = _Config(config_file, host.label)
    found = config.lookup(host.name)
    target = Hop(
        alias=host.name,
        hostname=str(found.get("hostname", host.name)),
        user=str(found.get("user", host.user)) if host.user_default else host.user,
        port=_port(found.get("port", host.port), config, host.name)
        if host.port_default
        else host.port,
        key_files=_key_files(found),
    )
    if gateway:
        return Route(target, tuple(_chain(gateway, config, frozenset())))
    jump, command = _proxies(found, config, host.name)
    if jump is not None:
        return Route(target, tuple(_chain(jump, config, frozenset({host.name}))))
    return Route(replace(target, via_command=command))


def parse_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]`, `[user@][v6 address]:port` or `ssh://[user@]host[:port]` →
    (user, host, port); None where the spec leaves it out."""
    text = spec.strip().removeprefix("ssh://").rstrip("/")
    user, _, rest = text.rpartition("@")
    port: str | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":") or None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host = rest
    if not host or (port is not None and not port.isdigit()):
        raise ValueError(spec)
    return user or None, host, int(port) if port else None


def _chain(spec: str, config: _Config, seen: frozenset[str]) -> list[Hop]:
    """The hops of a ProxyJump value: the first as its own config reaches it, then the
    rest as written (their own ProxyJump/ProxyCommand ignored, as ssh's `-J` does)."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise config.refuse(f"empty ProxyJump/gateway {spec!r}")
    hops = _reach(parts[0], config, seen)
    hops += [_hop(part, config)[0] for part in parts[1:]]
    if len(hops) > MAX_HOPS:
        raise config.refuse(f"more than {MAX_HOPS} gateways in front of it; is that a loop?")
    return hops


def _reach(spec: str, config: _Config, seen: frozenset[str]) -> list[Hop]:
    """The hops to reach `spec` as its own Host block says, ending with it. `seen`: the
    hosts whose ProxyJump is being followed (coming back to one is a loop)."""
    hop, found = _hop(spec, config)
    jump, command = _proxies(found, config, hop.alias)
    if jump is not None:
        if hop.alias in seen:
            raise config.refuse(
                f"the ProxyJump chain loops back to {hop.alias!r} (ssh would say 'jumphost "
                "loop'); end the chain at a host that needs no gateway (`ProxyJump none`)"
            )
        return [*_chain(jump, config, seen | {hop.alias}), hop]
    return [replace(hop, via_command=command)]


def _hop(spec: str, config: _Config) -> tuple[Hop, dict[str, Any]]:
    try:
        user, name, port = parse_spec(spec)
    except ValueError:
        raise config.refuse(f"gateway {spec!r} is not [user@]host[:port]") from None
    found = config.lookup(name)
    hop = Hop(
        alias=name,
        hostname=str(found.get("hostname", name)),
        user=user or str(found.get("user") or local_user() or "root"),
        port=port if port is not None else _port(found.get("port", 22), config, name),
        key_files=_key_files(found),
    )
    return hop, found


def _proxies(found: dict[str, Any], config: _Config, name: str) -> tuple[str | None, str | None]:
    """(ProxyJump, ProxyCommand) of a Host block; `none` is none; both at once refused."""
    jump = found.get("proxyjump")
    jump = None if jump is None or str(jump).strip().lower() == "none" else str(jump)
    command = found.get("proxycommand")  # paramiko stores `ProxyCommand none` as None
    command = str(command) if command else None
    if jump and command:
        raise config.refuse(
            f"host {name!r} has both ProxyJump and ProxyCommand (ssh would use whichever "
            "comes first in the file): keep one"
        )
    return jump, command


def _port(value: object, config: _Config, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise config.refuse(f"Port {value!r} of {name!r} is not a number") from None


def _key_files(found: dict[str, Any]) -> tuple[str, ...]:
    keys = [str(Path(k).expanduser()) for k in found.get("identityfile", [])]
    return tuple(k for k in keys if Path(k).is_file())
