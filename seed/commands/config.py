"""`seed <env> config`: the environment's settings as Seed reads them, merged (the file
over what it `extends` and `_defaults.yml`), each with the file and line it came from,
the settings left to their default, and every secret redacted. Read-only, no server."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seed.config import schema
from seed.config.environment import interpolate, load_environment, merged_mapping
from seed.config.yaml12 import line_of

SECRETS = {"db.password", "db.admin_password", "copy.secret"}
USERINFO = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")  # https://user:PASSWORD@host


@dataclass(frozen=True)
class Setting:
    key: str  # dotted path: db.port, roles.app[1].env.APP_BIND
    value: str  # what Seed uses (interpolated), redacted where secret
    written: str | None  # as written in the file, when that differs (a ${VAR})
    where: str  # file:line, or "default"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "written": self.written, "where": self.where}


def is_secret(key: str) -> bool:
    return key in SECRETS or bool(re.match(r"(app|roles\.app\[\d+\])\.env\.", key))


def shown(key: str, raw: Any) -> tuple[str, str | None]:
    """(value, as written if different): interpolated, secrets as ***, a URL's password
    hidden."""
    if isinstance(raw, list | dict):
        return json.dumps(raw, default=str), None
    text = "" if raw is None else str(raw).lower() if isinstance(raw, bool) else str(raw)
    written = text if "${" in text else None
    try:
        value = interpolate(text) if written else text
    except KeyError as exc:
        value = f"(not set: {exc.args[0]})"
    if is_secret(key) and not value.startswith("(not set"):
        value = "***" if value else ""
    if written and is_secret(key):  # a default written in the file is a secret too
        written = re.sub(r"(\$\{\w+:-)[^}]*\}", r"\1***}", USERINFO.sub(r"\1***@", written))
    return USERINFO.sub(r"\1***@", value), written


def settings(name: str, directory: Path) -> list[Setting]:
    """Every setting of the environment, in file order, then the defaults in schema order."""
    # a broken file is a ConfigError (exit 2) first; unset ${VAR}s are listed, not problems
    load_environment(name, directory, unset_ok=True)
    raw, path = merged_mapping(name, directory)
    out: list[Setting] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, item in node.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
            return
        if isinstance(node, list) and any(isinstance(i, dict) for i in node):
            for i, item in enumerate(node):
                walk(item, f"{prefix}[{i}]")
            return
        found = line_of(raw, prefix)
        where = f"{found[1] or path.name}:{found[0]}" if found else path.name
        value, written = shown(prefix, node)
        out.append(Setting(prefix, value, written, where))

    walk(raw, "")
    present = {s.key for s in out}
    for key, spec in _scalar_settings(schema.ENVIRONMENT, ""):
        if key not in present and "default" in spec:
            value, _ = shown(key, spec["default"])
            out.append(Setting(key, value, None, "default"))
    return out


def _scalar_settings(node: dict[str, Any], prefix: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, spec in node.get("properties", {}).items():
        if spec.get("type") == "object" and "properties" in spec:
            found += _scalar_settings(spec, f"{prefix}{key}.")
        else:
            found.append((f"{prefix}{key}", spec))
    return found
