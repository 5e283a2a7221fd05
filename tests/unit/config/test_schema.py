"""The configuration is declared once (seed.config.schema): the JSON Schema shipped for
editors is that declaration, a real JSON Schema validator (jsonschema, draft 2020-12)
accepts the shipped files and refuses the broken ones the parser refuses, and the parser
reads every setting the schema declares."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from seed.config import schema
from seed.config.environment import load_environment
from seed.config.yaml12 import load_yaml12
from seed.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "environments" / "environment.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(schema.document())


def local() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml12((REPO / "environments" / "local.yml").read_text())
    return data


def violations(data: Any) -> list[str]:
    """`/path: message` of every violation the validator finds."""
    return sorted(
        "/" + "/".join(str(p) for p in error.absolute_path) + ": " + error.message
        for error in VALIDATOR.iter_errors(data)
    )


def parser_errors(tmp_path: Path, data: dict[str, Any]) -> str:
    """What the parser says about `data` written as environments/local.yml ('' if fine)."""
    envdir = tmp_path / "environments"
    envdir.mkdir(exist_ok=True)
    (envdir / "local.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        load_environment("local", envdir)
    except ConfigError as exc:
        return str(exc)
    return ""


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert json.loads(SHIPPED.read_text()) == schema.document(), (
        "regenerate: .venv/bin/python -m seed.config.schema > environments/environment.schema.json"
    )


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema.document())
    # the defaults it declares are values it accepts
    for path, spec in scalar_settings():
        if "default" in spec:
            assert not list(jsonschema.Draft202012Validator(spec).iter_errors(spec["default"])), (
                path
            )


@pytest.mark.parametrize("name", ["local", "staging", "production"])
def test_shipped_environment_files_validate(name: str) -> None:
    data = load_yaml12((REPO / "environments" / f"{name}.yml").read_text())
    assert violations(data) == []


@pytest.mark.parametrize("release", ["v2", "v3"])
def test_example_checks_validate(release: str) -> None:
    data = load_yaml12((REPO / "example" / release / "deploy" / "checks.yml").read_text())
    validator = jsonschema.Draft202012Validator(schema.CHECK)
    for check in data["checks"]:
        assert list(validator.iter_errors(check)) == []


# (dotted path, bad value, what the parser says, what the validator's message contains)
BROKEN = [
    ("db.nmae", "shop", "db.nmae: unknown key", "'nmae' was unexpected"),
    ("backup.format", "zip", "backup.format: expected one of custom, directory", "is not one of"),
    ("backup.compression", 12, "backup.compression: must be <= 9", "is not valid under any"),
    ("app.keep_releases", 1, "app.keep_releases: must be >= 2", "is not valid under any"),
    ("ssh.connect_timeout", 0, "ssh.connect_timeout: expected a positive number", "any"),
    ("protected", "yes", "protected: expected true or false", "is not valid under any"),
    ("db.port", "abc", "db.port: expected an integer", "is not valid under any"),
    ("app.settings", None, "app.settings: required", "'settings' is a required property"),
    ("deploy.mode", "blue-green", "deploy.mode: expected one of auto, code-only", "is not one of"),
    ("hooks.timeout", -1, "hooks.timeout: expected a positive number", "is not valid under"),
]


@pytest.mark.parametrize(("path", "value", "parser_says", "validator_says"), BROKEN)
def test_the_parser_and_the_schema_refuse_the_same_files(
    tmp_path: Path, path: str, value: Any, parser_says: str, validator_says: str
) -> None:
    data = local()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    if value is None:  # a required key left out
        del node[last]
    assert parser_says in parser_errors(tmp_path, data)
    found = violations(data)
    assert found and any(validator_says in v for v in found), found


def scalar_settings(
    node: dict[str, Any] = schema.ENVIRONMENT, prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, schema) of every single-valued setting of the environment file."""
    for key, spec in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if spec.get("type") == "object" and "properties" in spec:
            yield from scalar_settings(spec, f"{path}.")
        elif spec.get("type") in (["string", "null"], "boolean") or (
            "anyOf" in spec and spec["anyOf"][0].get("type") in ("integer", "number", "boolean")
        ):
            yield path, spec


def test_the_parser_reads_every_setting_the_schema_declares(tmp_path: Path) -> None:
    """Each single-valued setting set to a list (wrong for every one of them) is refused,
    naming it: no setting of the schema goes unread or unchecked by the parser."""
    paths = [path for path, _ in scalar_settings()]
    assert len(paths) > 70 and "backup.snapshot_copy" in paths and "app.health.url" in paths
    unread = []
    for path in paths:
        data = copy.deepcopy(local())
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = [1, 2]
        if path not in parser_errors(tmp_path, data):
            unread.append(path)
    assert unread == []
