"""Extract: a legacy export into a DataFrame of text, whatever it came as.

CSV (encoding detected by seed.legacy.encoding, delimiter detected, a BOM handled), Excel
`.xlsx`, a SQLite file or a PostgreSQL DSN with a query. Every cell is read as text
(`dtype=str`), so leading zeros and `+` survive; empty cells are "". A `row` column numbers
the records as a spreadsheet would (the header is row 1), for rejects and merges.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg.conninfo import conninfo_to_dict

from seed.config.environment import interpolate
from seed.errors import ConfigError, PreflightFailed
from seed.legacy.encoding import AmbiguousEncoding, detect_encoding
from seed.legacy.mapping import Mapping
from seed.run.report import redact_credentials


def detect_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


@dataclass(frozen=True)
class Source:
    """`--source` as given: what is read, what is shown and recorded, what is secret."""

    value: str  # the path, or the DSN with its ${VAR}s resolved
    shown: str  # as typed, a password written into it as ***
    password: str | None  # the DSN's password (a secret for the scrubber)
    typed_password: bool  # written literally on the command line (visible in ps)


def is_dsn(source: str) -> bool:
    return source.startswith(("postgresql://", "postgres://")) or "dbname=" in source


def parse_source(source: str) -> Source:
    """A path, or a PostgreSQL DSN whose password comes from libpq's usual places
    (PGPASSWORD, ~/.pgpass: leave it out of the DSN) or a `${VAR}` resolved here (quote it
    so the shell does not); one written literally works but shows in `ps`."""
    if not is_dsn(source):
        return Source(source, source, None, False)
    uri = source.startswith(("postgresql://", "postgres://"))

    def lookup(name: str) -> str | None:
        found = os.environ.get(name)
        # into a URI percent-encoded: a password with `@`, `:` or `/` stays one password
        return urllib.parse.quote(found, safe="") if found is not None and uri else found

    try:
        value = interpolate(source, lookup)
    except KeyError as exc:
        raise ConfigError(
            f"--source: ${{{exc.args[0]}}} is not set (export it, or leave the password out "
            "of the DSN: PGPASSWORD and ~/.pgpass work as for psql)"
        ) from None
    try:
        password = str(conninfo_to_dict(value).get("password") or "")
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"--source: not a valid PostgreSQL DSN ({exc})") from None
    # the password typed out (rather than from a ${VAR}): what is left with every
    # variable blank
    literal = bool(conninfo_to_dict(interpolate(source, lambda _: "")).get("password"))
    return Source(value, redact_credentials(source), password or None, literal)


def read_source(given: str | Source, mapping: Mapping) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The source as text columns, checked against the mapping's headers; and how it was read."""
    opts = mapping.source
    src = given if isinstance(given, Source) else parse_source(given)
    source = src.shown  # in messages
    if is_dsn(src.value):
        frame, how = _from_postgres(src.value, opts)
    else:
        path = Path(src.value)
        if not path.is_file():
            raise ConfigError(f"--source {source}: no such file")
        suffix = path.suffix.lower()
        if suffix in (".xlsx", ".xlsm"):
            frame, how = _from_excel(path, opts)
        elif suffix in (".sqlite", ".sqlite3", ".db"):
            frame, how = _from_sqlite(path, opts)
        else:
            frame, how = _from_csv(path, opts, mapping.region if mapping.region_given else None)
    frame.columns = [str(c).strip() for c in frame.columns]
    mapping.check_headers(list(frame.columns), source)
    frame = frame.fillna("").astype(str)
    frame.insert(0, "row", range(2, len(frame) + 2))
    how["rows"] = len(frame)
    return frame, how


def _from_csv(
    path: Path, opts: dict[str, Any], region: str | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    raw = path.read_bytes()
    encoding = opts.get("encoding") or "auto"
    basis = "source.encoding"
    if encoding == "auto":
        try:
            found = detect_encoding(raw, region)
        except AmbiguousEncoding as exc:
            raise AmbiguousEncoding(f"{path}: {exc}") from None
        encoding, basis = found.encoding, found.basis
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise PreflightFailed(f"{path}: cannot be read as {encoding}: {exc}") from None
    text = text.lstrip("\ufeff")
    delimiter = opts.get("delimiter") or "auto"
    if delimiter == "auto":
        delimiter = detect_delimiter(text[: 64 * 1024])
    import io

    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=False,
            on_bad_lines="error",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise PreflightFailed(f"{path}: not readable as CSV ({exc})") from None
    how = {"format": "csv", "encoding": encoding, "encoding_basis": basis}
    return frame, {**how, "delimiter": delimiter}


def _from_excel(path: Path, opts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    sheet = opts.get("sheet", 0)
    try:
        frame = pd.read_excel(path, sheet_name=sheet, dtype=str, keep_default_na=False)
    except (ValueError, KeyError, OSError) as exc:
        raise PreflightFailed(f"{path}: not readable as Excel ({exc})") from None
    return frame, {"format": "xlsx", "sheet": sheet}


def _query(opts: dict[str, Any], source: str) -> str:
    query = opts.get("query") or (f"select * from {opts['table']}" if opts.get("table") else "")
    if not query:
        raise ConfigError(f"--source {source}: a database source needs source.query in the mapping")
    return str(query)


def _from_sqlite(path: Path, opts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    query = _query(opts, str(path))
    try:
        # a URI, so read-only; the path percent-encoded (`?`, `#`, `%` are URI syntax)
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
            cur = conn.execute(query)
            names = [d[0] for d in cur.description]
            rows = [["" if v is None else str(v) for v in r] for r in cur.fetchall()]
    except sqlite3.Error as exc:
        raise PreflightFailed(f"{path}: the query failed: {exc}") from None
    return pd.DataFrame(rows, columns=names, dtype=str), {"format": "sqlite", "query": query}


def _from_postgres(dsn: str, opts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    query = _query(opts, "DSN")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("set default_transaction_read_only = on")
            cur = conn.execute(query)
            names = [d.name for d in cur.description or []]
            rows = [["" if v is None else str(v) for v in r] for r in cur.fetchall()]
    except psycopg.Error as exc:
        raise PreflightFailed(f"legacy database: {str(exc).splitlines()[0]}") from None
    return pd.DataFrame(rows, columns=names, dtype=str), {"format": "postgres", "query": query}
