"""YAML 1.2 core-schema loading (safe), with one-line errors naming line and column."""

from __future__ import annotations

import re
from typing import Any

import yaml


class YamlError(Exception):
    """`line L, column C: invalid YAML (problem)`."""


class LineDict(dict[Any, Any]):
    """A mapping that remembers the line (1-based) of each of its keys, and the file
    each key came from (`source`, or per key in `sources` after `merge`)."""

    lines: dict[Any, int]
    line: int
    source: str = ""
    sources: dict[Any, str]


class LineList(list[Any]):
    """A sequence that remembers the line of each item."""

    lines: list[int]
    line: int
    source: str = ""


def set_source(data: Any, source: str) -> Any:
    """Mark every mapping and sequence of `data` as read from `source`."""
    if isinstance(data, LineDict | LineList):
        data.source = source
        for item in data.values() if isinstance(data, LineDict) else data:
            set_source(item, source)
    return data


def merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings merge key by key (recursively), anything else
    (lists included) is replaced. Line numbers and source files stay with each key."""
    if not isinstance(base, LineDict) or not isinstance(over, LineDict):
        return over
    out = LineDict()
    out.line, out.source = over.line, over.source
    out.lines, out.sources = {}, {}
    for side in (base, over):
        for key, value in side.items():
            out[key] = merge(out[key], value) if key in out else value
            out.lines[key] = side.lines.get(key, side.line)
            out.sources[key] = getattr(side, "sources", {}).get(key, side.source)
    return out


_PATH_TOKEN = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")


def line_of(data: Any, path: str) -> tuple[int, str] | None:
    """(line, source file) of the deepest part of `path` (`db.port`, `checks[name].expect`,
    `roles.app[1]`) found in `data` as loaded by load_yaml12; None if not even the first."""
    node, found = data, None
    for match in _PATH_TOKEN.finditer(path):
        index, key = match.group(1), match.group(2)
        if isinstance(node, LineDict) and key is not None and key in node:
            source = getattr(node, "sources", {}).get(key, node.source)
            found, node = (node.lines.get(key, node.line), source), node[key]
        elif isinstance(node, LineList) and index is not None:
            if index.isdigit() and int(index) < len(node):
                found, node = (node.lines[int(index)], node.source), node[int(index)]
                continue
            named = [
                i
                for i, item in enumerate(node)
                if isinstance(item, dict) and item.get("name") == index
            ]
            if not named:
                break
            found, node = (node.lines[named[0]], node.source), node[named[0]]
        else:
            break
    return found


def utf8(data: bytes) -> str:
    """`data` as UTF-8 text (a BOM dropped); YamlError naming the line of the first byte
    that is not UTF-8 (a file saved as Latin-1 or cp1252 by an editor)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError(
            f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02X}); save the file as UTF-8"
        ) from None


def load_yaml12(text: str | bytes) -> Any:
    """Parse `text` with YAML 1.2 scalars (bytes must be UTF-8); raises YamlError with the
    position."""
    if isinstance(text, bytes):
        text = utf8(text)
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlError(f"{where}invalid YAML ({problem})") from None


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 reads `on:`/`off:`/`no` as booleans,
    which would turn `maintenance: {on: ..., off: ...}` into True/False keys.)
    Mappings and sequences come back as LineDict/LineList (line numbers for errors)."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    data = LineDict()
    data.lines = {}
    data.line = node.start_mark.line + 1
    yield data
    # keys written in this mapping (not brought in by a merge `<<:`, which they override)
    own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    written: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        line = key_node.start_mark.line + 1
        if id(key_node) in own:
            if key in written:
                # PyYAML keeps the last value silently: a setting typed twice is a mistake
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r}: at line {written[key]} and line {line}",
                    key_node.start_mark,
                )
            written[key] = line
        data[key] = loader.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
        data.lines[key] = line


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> Any:
    data = LineList()
    data.line = node.start_mark.line + 1
    data.lines = [item.start_mark.line + 1 for item in node.value]
    yield data
    data.extend(loader.construct_object(item, deep=True) for item in node.value)  # type: ignore[no-untyped-call]


_Yaml12Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


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

# dumping what was loaded (e.g. an edited copy of an environment file) stays plain YAML
yaml.SafeDumper.add_representer(LineDict, yaml.representer.SafeRepresenter.represent_dict)
yaml.SafeDumper.add_representer(LineList, yaml.representer.SafeRepresenter.represent_list)
