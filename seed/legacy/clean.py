"""Clean and deduplicate legacy records (pandas, column at a time).

Every value is stripped and its inner whitespace collapsed; then the column's rules
run in order. A value a rule cannot make sense of rejects its row with the rule and
the value as the reason; so does an empty required column. Phones become E.164 with
`phonenumbers`, in the row's country when a column has the `country` rule, else the
mapping's default region. Each distinct value is parsed once.

Deduplication runs on the cleaned rows: rows equal on every column of a dedup key
(case-insensitive) are one customer. The most complete row survives (ties: the most
recent by `keep: {most_recent: col}`, then the first), its empty columns filled from
the others; every merged row is recorded.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import phonenumbers
import pycountry

from seed.legacy.mapping import ColumnMap, Mapping, Rule

# ASCII, as Django's EmailValidator (the model's own rule) accepts them
EMAIL_RE = (
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}$"
)
NL_POSTCODE = r"^(\d{4}) ?([A-Z]{2})$"
# names in the languages of the exports we meet that pycountry (English names, ISO codes)
# does not have
LOCAL_COUNTRY_NAMES = {
    "NETHERLANDS": "NL", "THE NETHERLANDS": "NL", "NEDERLAND": "NL", "HOLLAND": "NL", "NLD": "NL",
    "GERMANY": "DE", "DEUTSCHLAND": "DE", "DUITSLAND": "DE", "DEU": "DE",
    "BELGIUM": "BE", "BELGIE": "BE", "BELGIË": "BE", "BELGIQUE": "BE", "BEL": "BE",
    "FRANCE": "FR", "FRANKRIJK": "FR", "FRA": "FR",
    "UNITED KINGDOM": "GB", "UK": "GB", "GREAT BRITAIN": "GB", "ENGLAND": "GB", "GBR": "GB",
    "UNITED STATES": "US", "USA": "US", "UNITED STATES OF AMERICA": "US",
    "SPAIN": "ES", "ESPAÑA": "ES", "ESP": "ES", "ITALY": "IT", "ITALIA": "IT", "ITA": "IT",
    "AUSTRIA": "AT", "ÖSTERREICH": "AT", "AUT": "AT", "SWITZERLAND": "CH", "SCHWEIZ": "CH",
    "LUXEMBOURG": "LU", "LUX": "LU", "DENMARK": "DK", "DNK": "DK", "POLAND": "PL", "POL": "PL",
}  # fmt: skip


@functools.cache
def country_names() -> dict[str, str]:
    """Upper-case name or code → ISO 3166 alpha-2, from pycountry's maintained list (alpha-2
    and alpha-3 codes, names, common and official names) plus LOCAL_COUNTRY_NAMES."""
    names: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        for attr in ("alpha_2", "alpha_3", "name", "common_name", "official_name"):
            value = getattr(country, attr, None)
            if value:
                names[str(value).upper().replace(".", "")] = code
    names.update(LOCAL_COUNTRY_NAMES)
    return names


@dataclass
class Cleaned:
    frame: pd.DataFrame  # `row` + the mapping's target columns, rejected rows removed
    rejects: list[dict[str, Any]] = field(default_factory=list)  # {row, reason}


@dataclass
class Deduplicated:
    frame: pd.DataFrame
    merges: list[dict[str, Any]] = field(default_factory=list)  # {kept_row, merged_row, key}


def _map_text(values: pd.Series, fn: Callable[[str], str]) -> pd.Series:
    """`fn` over every text of `values` in one Python pass (a missing value stays as it
    is), the Series' dtype kept: what a chain of `.str` methods does, without a pass
    and a new Series per method."""
    return pd.Series(
        [fn(v) if isinstance(v, str) else v for v in values.tolist()],
        index=values.index,
        dtype=values.dtype,
    )


def _squash(values: pd.Series) -> pd.Series:
    # str.split() and str.strip() split on exactly what the regex \s matches (Unicode
    # whitespace): the same as .str.strip().str.replace(r"\s+", " ", regex=True)
    return _map_text(values, lambda v: " ".join(v.split()))


def clean(frame: pd.DataFrame, mapping: Mapping) -> Cleaned:
    """The mapping's cleaning rules over `frame` (extract.read_source's)."""
    out = pd.DataFrame({"row": frame["row"].to_numpy()}, index=frame.index)
    reasons = pd.Series("", index=frame.index, dtype=object)
    # countries first: phones are parsed in their row's country
    ordered = sorted(mapping.columns, key=lambda c: not any(r.kind == "country" for r in c.rules))
    region = pd.Series(mapping.region, index=frame.index, dtype=object)
    for col in ordered:
        values = _squash(frame[col.source].astype(str))
        for rule in col.rules:
            values, bad = _apply(rule, values, mapping, region)
            reasons = _first_reason(reasons, bad, values, frame[col.source], col, rule)
        if col.default is not None:
            values = values.mask(values == "", col.default)
        if col.required:
            missing = (values == "") & (reasons == "")
            reasons = reasons.mask(missing, f"{col.target}: required, but empty")
        if any(r.kind == "country" for r in col.rules):
            region = values.where(values.isin(phonenumbers.SUPPORTED_REGIONS), mapping.region)
        out[col.target] = values
    out = out[["row", *(c.target for c in mapping.columns)]]
    bad_rows = reasons != ""
    rejects = [
        {"row": int(r), "reason": str(why)}
        for r, why in zip(frame.loc[bad_rows, "row"], reasons[bad_rows], strict=True)
    ]
    return Cleaned(out.loc[~bad_rows].reset_index(drop=True), rejects)


def _first_reason(
    reasons: pd.Series,
    bad: pd.Series,
    values: pd.Series,
    original: pd.Series,
    col: ColumnMap,
    rule: Rule,
) -> pd.Series:
    fresh = bad & (reasons == "")
    if not fresh.any():
        return reasons
    what = {
        "email": "not an email address",
        "phone": "not a phone number",
        "country": "not a country",
        "date": f"not a date in {' or '.join(rule.formats)}",
    }.get(rule.kind, f"{rule.kind} failed")
    text = f"{col.target}: {what}: " + original[fresh].astype(str).map(repr)
    return reasons.mask(fresh, text)


def _apply(
    rule: Rule, values: pd.Series, mapping: Mapping, region: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """(new values, mask of values the rule rejects)."""
    none = pd.Series(False, index=values.index)
    kind = rule.kind
    if kind == "strip":
        return values, none
    if kind == "lower":
        return values.str.lower(), none
    if kind == "upper":
        return values.str.upper(), none
    if kind in ("title", "name"):
        # only what was typed all in one case: "mcDonald" stays as typed
        return _map_text(values, _title_if_one_case), none
    if kind == "email":
        lowered = values.str.lower()
        return lowered, (lowered != "") & ~lowered.str.match(EMAIL_RE)
    if kind == "postcode":
        return _map_text(values, _postcode), none
    if kind == "country":
        upper = values.str.upper().str.replace(".", "", regex=False)
        mapped = upper.map(lambda v: country_names().get(v, v))
        if mapping.country:
            mapped = mapped.mask(mapped == "", mapping.country)
        ok = (mapped == "") | mapped.isin(phonenumbers.SUPPORTED_REGIONS)
        return mapped, ~ok
    if kind == "phone":
        return _phones(values, region)
    if kind == "date":
        return _dates(values, rule.formats)
    raise ValueError(f"unknown rule {kind}")


def _title_if_one_case(value: str) -> str:
    return value.title() if value in (value.lower(), value.upper()) else value


_NL_POSTCODE = re.compile(NL_POSTCODE)


def _postcode(value: str) -> str:
    upper = value.upper()
    # NL_POSTCODE matches 6 or 7 characters (and `$` allows a newline after them)
    return _NL_POSTCODE.sub(r"\1 \2", upper) if 6 <= len(upper) <= 8 else upper


_PHONE_PREFIX = re.compile(r"^(tel|phone|mob|mobile)[:.]?\s*", re.IGNORECASE)


def _phone(value: str, where: str) -> str | None:
    """E.164, or None for what is no valid number."""
    text = _PHONE_PREFIX.sub("", value)
    try:
        number = phonenumbers.parse(text, where)
        ok = phonenumbers.is_valid_number(number)
    except phonenumbers.NumberParseException:
        ok = False
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) if ok else None


def _phones(values: pd.Series, region: pd.Series) -> tuple[pd.Series, pd.Series]:
    # phonenumbers recompiles its metadata's patterns on each use unless told to keep
    # them (it uses more than the re module's own cache holds): same results, faster
    phonenumbers.enable_pattern_cache()
    pairs = list(zip(values.tolist(), region.tolist(), strict=True))
    present = (values != "").tolist()
    wanted = dict.fromkeys(pair for pair, p in zip(pairs, present, strict=True) if p)
    parsed_once = {pair: _phone(*pair) for pair in wanted}  # each distinct pair once
    parsed = pd.Series(
        [parsed_once[pair] if p else "" for pair, p in zip(pairs, present, strict=True)],
        index=values.index,
        dtype=object,
    )
    bad = parsed.isna()
    return parsed.fillna(""), bad


def _dates(values: pd.Series, formats: tuple[str, ...]) -> tuple[pd.Series, pd.Series]:
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    has_time = any(d in f for f in formats for d in ("%H", "%M", "%S"))
    for fmt in formats:
        todo = result.isna() & (values != "")
        if not todo.any():
            break
        parsed = pd.to_datetime(values[todo], format=fmt, errors="coerce")
        result = result.fillna(parsed)
    text = result.dt.strftime("%Y-%m-%dT%H:%M:%S" if has_time else "%Y-%m-%d").fillna("")
    return text.astype(object), (values != "") & result.isna()


def deduplicate(frame: pd.DataFrame, mapping: Mapping) -> Deduplicated:
    """One row per customer (mapping.dedup_keys); merged rows recorded."""
    if not mapping.dedup_keys or frame.empty:
        return Deduplicated(frame)
    n = len(frame)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    reason: dict[int, str] = {}
    for keys in mapping.dedup_keys:
        parts = frame[list(keys)].astype(str)
        complete = (parts != "").all(axis=1)
        normal = parts[complete].apply(lambda s: s.str.lower())
        codes = normal.groupby(list(keys), sort=False).ngroup()
        # only the groups of two or more rows do anything: taken in order of first
        # appearance (ngroup's numbering with sort=False), their rows in frame order
        codes = codes[codes.notna()]
        codes = codes[codes.duplicated(keep=False)].sort_values(kind="stable")
        positions = frame.index.get_indexer(codes.index).tolist()
        for _, group in itertools.groupby(
            zip(codes.tolist(), positions, strict=True), key=lambda pair: pair[0]
        ):
            members = [position for _, position in group]
            for other in members[1:]:
                a, b = find(members[0]), find(other)
                if a != b:
                    parent[b] = a
                    reason.setdefault(other, "+".join(keys))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    filled = (frame.drop(columns=["row"]).astype(str) != "").sum(axis=1).to_numpy()
    keep_rows: list[int] = []
    merges: list[dict[str, Any]] = []
    values = frame.copy()
    recents = [str(v) for v in frame[mapping.recent_by].tolist()] if mapping.recent_by else [""] * n
    cells = [frame.iloc[:, j].tolist() for j in range(frame.shape[1])]  # by position
    for members in groups.values():
        if len(members) == 1:
            keep_rows.append(members[0])
            continue

        def rank(i: int) -> tuple[Any, ...]:
            recent = recents[i]
            if mapping.keep == "most_recent":
                return (recent, filled[i], -i)
            return (filled[i], recent, -i)

        ordered = sorted(members, key=rank, reverse=True)
        survivor = ordered[0]
        for j, col in enumerate(frame.columns):
            # the survivor's own cell: each column is filled at most once per group
            if col == "row" or cells[j][survivor] != "":
                continue
            for other in ordered[1:]:
                value = cells[j][other]
                if value != "":
                    values.iat[survivor, j] = value
                    break
        keep_rows.append(survivor)
        for other in ordered[1:]:
            merges.append(
                {
                    "kept_row": int(cells[0][survivor]),
                    "merged_row": int(cells[0][other]),
                    "key": reason.get(other) or reason.get(survivor) or "",
                }
            )
    kept = values.iloc[sorted(keep_rows)].reset_index(drop=True)
    merges.sort(key=lambda m: (m["kept_row"], m["merged_row"]))
    return Deduplicated(kept, merges)
