"""The shipped JSON Schema is the one seed.config.schema generates, the parser accepts exactly
its keys, and the shipped environment files and checks validate against it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from seed.config import schema
from seed.config.yaml12 import load_yaml12

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "environments" / "environment.schema.json"


def errors(value: Any, node: dict[str, Any], where: str = "") -> list[str]:
    """A small JSON Schema validator: the keywords seed.config.schema uses, nothing more."""
    out: list[str] = []
    if "anyOf" in node:
        if all(errors(value, option, where) for option in node["anyOf"]):
            out.append(f"{where or '/'}: matches none of the allowed forms")
        return out
    if "not" in node and not errors(value, node["not"], where):
        out.append(f"{where}: not allowed here")
    if "const" in node and value != node["const"]:
        out.append(f"{where}: must be {node['const']!r}")
    if "enum" in node and value not in node["enum"]:
        out.append(f"{where}: one of {node['enum']}")
    kinds = node.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        python = {
            "string": str,
            "integer": int,
            "number": (int, float),
            "boolean": bool,
            "object": dict,
            "array": list,
            "null": type(None),
        }
        ok = any(
            isinstance(value, python[k]) and not (k in ("integer", "number") and value is True)
            and not (k in ("integer", "number") and value is False)
            for k in names
        )  # fmt: skip
        if not ok:
            return [f"{where}: expected {'/'.join(names)}"]
    if isinstance(value, str) and "pattern" in node and not re.search(node["pattern"], value):
        out.append(f"{where}: does not match {node['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            out.append(f"{where}: below {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            out.append(f"{where}: above {node['maximum']}")
    if isinstance(value, dict):
        props = node.get("properties", {})
        for key in node.get("required", []):
            if key not in value:
                out.append(f"{where}/{key}: required")
        for key, item in value.items():
            if key in props:
                out += errors(item, props[key], f"{where}/{key}")
            elif node.get("additionalProperties") is False:
                out.append(f"{where}/{key}: unknown key")
            elif isinstance(node.get("additionalProperties"), dict):
                out += errors(item, node["additionalProperties"], f"{where}/{key}")
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0) or len(value) > node.get("maxItems", 1 << 30):
            out.append(f"{where}: wrong number of items")
        if "items" in node:
            for i, item in enumerate(value):
                out += errors(item, node["items"], f"{where}[{i}]")
    return out


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert json.loads(SHIPPED.read_text()) == schema.document(), (
        "regenerate: .venv/bin/python -m seed.config.schema > environments/environment.schema.json"
    )


@pytest.mark.parametrize("name", ["local", "staging", "production"])
def test_shipped_environment_files_validate(name: str) -> None:
    data = load_yaml12((REPO / "environments" / f"{name}.yml").read_text())
    assert errors(data, schema.document()) == []


def test_the_schema_catches_what_the_parser_refuses() -> None:
    data = load_yaml12((REPO / "environments" / "local.yml").read_text())
    data["db"]["nmae"] = "shop"
    data["backup"]["format"] = "zip"
    data["checks"].append({"name": "typo", "sql": "select 1", "expect": {"equal": 1}})
    found = errors(data, schema.document())
    assert "/db/nmae: unknown key" in found
    assert "/backup/format: one of ['custom', 'directory', None]" in found
    assert any(e.startswith("/checks[4]/expect") for e in found), found


@pytest.mark.parametrize("release", ["v2", "v3"])
def test_example_checks_validate(release: str) -> None:
    data = load_yaml12((REPO / "example" / release / "deploy" / "checks.yml").read_text())
    for i, check in enumerate(data["checks"]):
        assert errors(check, schema.CHECK, f"checks[{i}]") == []


def test_every_schema_key_is_one_the_parser_reads() -> None:
    """The parser takes its allowed keys from seed.config.schema: none of them may be dead."""
    sources = "".join(
        (REPO / "seed" / f).read_text() for f in ("config/environment.py", "checks/spec.py")
    )
    for section in ("ssh", "roles", "app", "db", "backup"):
        for key in schema.keys(section):
            assert f'"{key}"' in sources, f"{section}.{key} is in the schema but never read"
