"""YAML 1.2 core-schema loading (safe), with one-line errors naming line and column."""

from __future__ import annotations

import re
from typing import Any

import yaml


class YamlError(Exception):
    """`line L, column C: invalid YAML (problem)`."""


def load_yaml12(text: str | bytes) -> Any:
    """Parse `text` with YAML 1.2 scalars; raises YamlError with the position."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlError(f"{where}invalid YAML ({problem})") from None


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 reads `on:`/`off:`/`no` as booleans,
    which would turn `maintenance: {on: ..., off: ...}` into True/False keys.)"""


_YAML11_ONLY = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.2 core schema: no `on`/`no` booleans, no octal `01234`, no base-60 `12:30`
_YAML12_CORE = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
]
for _tag, _pattern, _firsts in reversed(_YAML12_CORE):  # bool, then int, then float first
    for _first in _firsts:
        _Yaml12Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
            0, (_tag, re.compile(_pattern))
        )


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    """Decimal unless 0o/0x: YAML 1.1 would read `01234` as octal."""
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
