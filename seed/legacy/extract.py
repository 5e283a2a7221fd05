"""Extract: a legacy export into a DataFrame of text, whatever it came as.

CSV (encoding and delimiter detected, a BOM handled), Excel `.xlsx`, a SQLite file or a
PostgreSQL DSN with a query. Every cell is read as text (`dtype=str`), so leading
zeros and `+` survive; empty cells are "". A `row` column numbers the records as a
spreadsheet would (the header is row 1), for rejects and merges.
"""

from __future__ import annotations

import codecs
import csv
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from seed.errors import ConfigError, PreflightFailed
from seed.legacy.mapping import Mapping

ENCODINGS = ("utf-8", "cp1252", "latin-1")
BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def detect_encoding(head: bytes) -> str:
    """BOM first; else the first of utf-8, cp1252 that decodes the sample (latin-1 always does)."""
    for bom, name in BOMS:
        if head.startswith(bom):
            return name
    for name in ENCODINGS:
        try:
            head.decode(name)
            return name
        except UnicodeDecodeError:
            continue
    return "latin-1"


def detect_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_source(source: str, mapping: Mapping) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The source as text columns, checked against the mapping's headers; and how it was read."""
    opts = mapping.source
    if source.startswith(("postgresql://", "postgres://")) or "dbname=" in source:
        frame, how = _from_postgres(source, opts)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--source {source}: no such file")
        suffix = path.suffix.lower()
        if suffix in (".xlsx", ".xlsm"):
            frame, how = _from_excel(path, opts)
        elif suffix in (".sqlite", ".sqlite3", ".db"):
            frame, how = _from_sqlite(path, opts)
        else:
            frame, how = _from_csv(path, opts)
    frame.columns = [str(c).strip() for c in frame.columns]
    mapping.check_headers(list(frame.columns), source)
    frame = frame.fillna("").astype(str)
    frame.insert(0, "row", range(2, len(frame) + 2))
    how["rows"] = len(frame)
    return frame, how


def _from_csv(path: Path, opts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    raw = path.read_bytes()
    encoding = opts.get("encoding") or "auto"
    if encoding == "auto":
        encoding = detect_encoding(raw[: 1 << 20] if len(raw) > 1 << 20 else raw)
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
    return frame, {"format": "csv", "encoding": encoding, "delimiter": delimiter}


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
