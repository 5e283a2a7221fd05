"""The mapping of a legacy import (`import/customers.yml`): source columns → target
columns, cleaning rules, defaults, dedup keys. Read and checked before any data is.

```yaml
target: {model: shop.Customer, table: shop_customer, key: [email]}
defaults: {region: NL, country: NL}       # phone region, country for rows without one
columns:                                   # target column: where from, how cleaned
  email: {from: E-mail, clean: [email], required: true}
  first_name: {from: Voornaam, clean: [name]}
  phone: {from: Telefoon, clean: [phone]}
  created_at: {from: Aangemaakt, clean: [{date: ["%d-%m-%Y", "%Y-%m-%d"]}]}
dedup: {keys: [[email], [phone, last_name]], keep: most_complete}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers

from seed.config.environment import read_mapping
from seed.errors import ConfigError

SIMPLE_RULES = ("strip", "lower", "upper", "title", "name", "email", "phone", "postcode", "country")
TOP_KEYS = {"source", "target", "defaults", "columns", "dedup"}


@dataclass(frozen=True)
class Rule:
    kind: str  # one of SIMPLE_RULES, or "date"
    formats: tuple[str, ...] = ()  # for "date"


@dataclass(frozen=True)
class ColumnMap:
    target: str
    source: str
    rules: tuple[Rule, ...] = ()
    required: bool = False
    default: str | None = None


@dataclass(frozen=True)
class Mapping:
    path: Path
    model: str  # app_label.Model
    table: str
    key: tuple[str, ...]
    columns: tuple[ColumnMap, ...]
    region: str = "US"
    region_given: bool = False  # defaults.region written (the export's locale is known)
    country: str | None = None
    dedup_keys: tuple[tuple[str, ...], ...] = ()
    keep: str = "most_complete"  # or most_recent
    recent_by: str | None = None  # column for most_recent
    source: dict[str, Any] = field(default_factory=dict)  # encoding, delimiter, sheet, query

    @property
    def source_columns(self) -> list[str]:
        return [c.source for c in self.columns]

    def check_headers(self, found: list[str], where: str) -> None:
        """One clear error (exit 2) when the source lacks mapped columns."""
        missing = [c for c in self.source_columns if c not in found]
        if missing:
            shown = ", ".join(repr(c) for c in found[:20])
            raise ConfigError(
                f"{where}: the mapping {self.path.name} expects column(s) "
                f"{', '.join(repr(c) for c in missing)} that the source does not have "
                f"(its columns: {shown}); fix `from:` in {self.path}"
            )


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping file; every problem in one ConfigError naming file and key."""
    raw = read_mapping(path, "import mapping")
    errors: list[str] = []
    for name in raw:
        if name not in TOP_KEYS:
            errors.append(f"{name}: unknown key (expected one of: {', '.join(sorted(TOP_KEYS))})")
    target = raw.get("target")
    model = table = ""
    key: tuple[str, ...] = ()
    if not isinstance(target, dict):
        errors.append("target: required: {model: app.Model, table: ..., key: [columns]}")
    else:
        model, table = str(target.get("model") or ""), str(target.get("table") or "")
        if "." not in model:
            errors.append("target.model: expected app_label.Model, e.g. shop.Customer")
        if not table:
            errors.append("target.table: required (the model's database table)")
        raw_key = target.get("key")
        key = tuple(raw_key) if isinstance(raw_key, list) else (str(raw_key),) if raw_key else ()
        if not key:
            errors.append("target.key: required: the unique column(s) rows are matched on")
    defaults = raw.get("defaults") or {}
    region = str(defaults.get("region", "US")).upper() if isinstance(defaults, dict) else "US"
    if region not in phonenumbers.SUPPORTED_REGIONS:
        errors.append(f"defaults.region: {region!r} is not a phone region (e.g. NL, DE, US)")
    country = defaults.get("country") if isinstance(defaults, dict) else None
    if country and str(country).upper() not in phonenumbers.SUPPORTED_REGIONS:
        errors.append(f"defaults.country: {country!r} is not an ISO 3166 code (e.g. NL, DE)")
    columns = _columns(raw.get("columns"), errors)
    names = {c.target for c in columns}
    for k in key:
        if k not in names:
            errors.append(f"target.key: {k!r} is not one of the mapped columns")
    dedup = raw.get("dedup") or {}
    dedup_keys: list[tuple[str, ...]] = []
    keep, recent_by = "most_complete", None
    if isinstance(dedup, dict):
        for i, ks in enumerate(dedup.get("keys") or []):
            ks = tuple(ks) if isinstance(ks, list) else (str(ks),)
            unknown = [k for k in ks if k not in names]
            if unknown:
                errors.append(f"dedup.keys[{i}]: {', '.join(unknown)} not mapped")
            dedup_keys.append(tuple(str(k) for k in ks))
        keep_raw = dedup.get("keep", "most_complete")
        if isinstance(keep_raw, dict) and "most_recent" in keep_raw:
            keep, recent_by = "most_recent", str(keep_raw["most_recent"])
            if recent_by not in names:
                errors.append(f"dedup.keep.most_recent: {recent_by!r} not mapped")
        elif keep_raw != "most_complete":
            errors.append("dedup.keep: most_complete or {most_recent: <column>}")
    source = raw.get("source") or {}
    if errors:
        raise ConfigError(f"{path}: " + "; ".join(errors))
    return Mapping(
        path=path,
        model=model,
        table=table,
        key=key,
        columns=tuple(columns),
        region=region,
        region_given=isinstance(defaults, dict) and "region" in defaults,
        country=str(country).upper() if country else None,
        dedup_keys=tuple(dedup_keys),
        keep=keep,
        recent_by=recent_by,
        source=dict(source) if isinstance(source, dict) else {},
    )


def _columns(raw: Any, errors: list[str]) -> list[ColumnMap]:
    if not isinstance(raw, dict) or not raw:
        errors.append("columns: required: target column → {from: source column, clean: [...]}")
        return []
    out = []
    for target, spec in raw.items():
        where = f"columns.{target}"
        if isinstance(spec, str):
            spec = {"from": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("from"), str):
            errors.append(f"{where}: expected {{from: <source column>, clean: [...]}}")
            continue
        unknown = set(spec) - {"from", "clean", "required", "default"}
        if unknown:
            errors.append(f"{where}: unknown key {', '.join(sorted(unknown))}")
        rules = []
        for item in spec.get("clean") or []:
            if isinstance(item, str) and item in SIMPLE_RULES:
                rules.append(Rule(item))
            elif isinstance(item, dict) and set(item) == {"date"}:
                formats = item["date"] if isinstance(item["date"], list) else [item["date"]]
                rules.append(Rule("date", tuple(str(f) for f in formats)))
            else:
                errors.append(
                    f"{where}.clean: {item!r} is not a rule (one of "
                    f"{', '.join(SIMPLE_RULES)}, or {{date: [formats]}})"
                )
        default = spec.get("default")
        out.append(
            ColumnMap(
                target=str(target),
                source=spec["from"],
                rules=tuple(rules),
                required=bool(spec.get("required", False)),
                default=None if default is None else str(default),
            )
        )
    return out
