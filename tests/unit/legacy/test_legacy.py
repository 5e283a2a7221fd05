"""Legacy import, extract → clean → deduplicate (seed/legacy/extract.py, seed/legacy/clean.py) on a
small messy export: exact cleaned rows, rejects and merges; the same data as .xlsx and
as a cp1252 CSV reads identically; leading zeros survive; mapping mistakes are one
clear error before any data is read. The load (seed/commands/import_legacy.py load_rows) into a real
PostgreSQL: every text arrives exactly (NULL stays NULL, '' stays ''), and a load that
cannot be right writes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from seed.errors import ConfigError
from seed.legacy.clean import clean, deduplicate
from seed.legacy.extract import read_source
from seed.legacy.load import ImportFailed, load_rows
from seed.legacy.mapping import Mapping, load_mapping

MESSY = """\
Klantnr;E-mail;Voornaam;Achternaam;Telefoon;Postcode;Land;Aangemaakt
007;Jan.Jansen@Example.COM ;jan;JANSEN;06 12345678;1234ab;Nederland;01-02-2020
008;jan.jansen@example.com;Jan;Jansen;+31 6 1234 5678;;NL;2021-03-04
009;not-an-email;Piet;Pietersen;020-1234567;1000 AA;NL;05-06-2019
010;marie@example.org;marie;curie;0033 1 23 45 67 89;75001;France;07-08-2018
011;;Klaas;Vaak;0612;;;
012;k.vaak@example.com;Klaas;vaak;+31 6 9999 8888;;Atlantis;
013;lotte@example.com;Lotte;de Boer;0612345679;1234 AB;NL;31-12-2020
014;LOTTE@example.com;  Lotte ;de   Boer;;;NL;
015;zoe.muller@example.com;Zoë;Müller-Lüdenscheidt;+49 30 1234567;01067;Deutschland;15-03-2022
"""

MAPPING = """\
target: {model: shop.Customer, table: shop_customer, key: [email]}
defaults: {region: NL, country: NL}
columns:
  customer_no: {from: Klantnr}
  email: {from: E-mail, clean: [email], required: true}
  first_name: {from: Voornaam, clean: [name]}
  last_name: {from: Achternaam, clean: [name]}
  phone: {from: Telefoon, clean: [phone]}
  postcode: {from: Postcode, clean: [postcode]}
  country: {from: Land, clean: [country]}
  created_at: {from: Aangemaakt, clean: [{date: ["%d-%m-%Y", "%Y-%m-%d"]}]}
dedup: {keys: [[email]], keep: most_complete}
"""


@pytest.fixture
def mapping(tmp_path: Path) -> Mapping:
    path = tmp_path / "customers.yml"
    path.write_text(MAPPING)
    return load_mapping(path)


def run(source: Path, mapping: Mapping) -> tuple[Any, Any, Any]:
    frame, how = read_source(str(source), mapping)
    cleaned = clean(frame, mapping)
    deduped = deduplicate(cleaned.frame, mapping)
    return deduped, cleaned, how


def test_messy_export_gives_exactly_the_expected_rows(tmp_path: Path, mapping: Mapping) -> None:
    source = tmp_path / "export.csv"
    source.write_text(MESSY, encoding="utf-8")
    deduped, cleaned, how = run(source, mapping)
    assert how == {
        "format": "csv",
        "encoding": "utf-8",
        "encoding_basis": "UTF-8",
        "delimiter": ";",
        "rows": 9,
    }
    assert cleaned.rejects == [
        {"row": 4, "reason": "email: not an email address: 'not-an-email'"},
        {"row": 6, "reason": "email: required, but empty"},
        {"row": 7, "reason": "country: not a country: 'Atlantis'"},
    ]
    rows = deduped.frame.to_dict("records")
    assert rows == [
        {
            "row": 2,
            "customer_no": "007",  # the leading zeros survive
            "email": "jan.jansen@example.com",
            "first_name": "Jan",
            "last_name": "Jansen",
            "phone": "+31612345678",
            "postcode": "1234 AB",
            "country": "NL",
            "created_at": "2020-02-01",
        },
        {
            "row": 5,
            "customer_no": "010",
            "email": "marie@example.org",
            "first_name": "Marie",
            "last_name": "Curie",
            "phone": "+33123456789",  # 0033 from NL: the international prefix
            "postcode": "75001",
            "country": "FR",
            "created_at": "2018-08-07",
        },
        {
            "row": 8,
            "customer_no": "013",
            "email": "lotte@example.com",
            "first_name": "Lotte",
            "last_name": "de Boer",  # typed in mixed case: kept as typed
            "phone": "+31612345679",
            "postcode": "1234 AB",
            "country": "NL",
            "created_at": "2020-12-31",
        },
        {
            "row": 10,
            "customer_no": "015",
            "email": "zoe.muller@example.com",
            "first_name": "Zoë",
            "last_name": "Müller-Lüdenscheidt",
            "phone": "+49301234567",  # parsed in its row's country
            "postcode": "01067",
            "country": "DE",
            "created_at": "2022-03-15",
        },
    ]
    assert deduped.merges == [
        {"kept_row": 2, "merged_row": 3, "key": "email"},
        {"kept_row": 8, "merged_row": 9, "key": "email"},
    ]
    assert len(rows) + len(cleaned.rejects) + len(deduped.merges) == 9  # rows reconcile


def test_xlsx_and_cp1252_csv_read_identically(tmp_path: Path, mapping: Mapping) -> None:
    utf8 = tmp_path / "export.csv"
    utf8.write_text(MESSY, encoding="utf-8")
    legacy = tmp_path / "export-ansi.csv"
    legacy.write_bytes(MESSY.replace(";", ",").encode("cp1252"))
    bom = tmp_path / "export-bom.csv"
    bom.write_bytes(MESSY.encode("utf-8-sig"))
    xlsx = tmp_path / "export.xlsx"
    frame = pd.read_csv(utf8, sep=";", dtype=str, keep_default_na=False)
    frame.to_excel(xlsx, index=False)
    first = run(utf8, mapping)[0].frame
    for other in (legacy, bom, xlsx):
        deduped, _, _ = run(other, mapping)
        pd.testing.assert_frame_equal(deduped.frame, first)
    assert run(legacy, mapping)[2]["encoding"] == "cp1252"
    assert run(legacy, mapping)[2]["delimiter"] == ","


@pytest.mark.parametrize("name", ["old.sqlite", "old?v=2 #1 100%.sqlite"])
def test_a_legacy_sqlite_database(tmp_path: Path, mapping: Mapping, name: str) -> None:
    """Read-only through a file: URI, whatever the name holds (`?`, `#`, `%` are URI syntax:
    unquoted they opened another, empty file)."""
    frame = pd.read_csv(__import__("io").StringIO(MESSY), sep=";", dtype=str, keep_default_na=False)
    before = {p.name for p in tmp_path.iterdir()}
    db = tmp_path / name
    with sqlite3.connect(db) as conn:
        frame.to_sql("klanten", conn, index=False)
    path = tmp_path / "m.yml"
    path.write_text(MAPPING + "source: {query: select * from klanten order by Klantnr}\n")
    deduped, cleaned, how = run(db, load_mapping(path))
    assert how["format"] == "sqlite" and len(deduped.frame) == 4 and len(cleaned.rejects) == 3
    assert {p.name for p in tmp_path.iterdir()} - before == {name, "m.yml"}  # no other file


def test_a_header_the_source_lacks_is_one_clear_error(tmp_path: Path, mapping: Mapping) -> None:
    source = tmp_path / "export.csv"
    source.write_text(MESSY.replace("Telefoon", "Tel"), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        read_source(str(source), mapping)
    message = str(err.value)
    assert message.startswith(f"{source}: the mapping customers.yml expects column(s) 'Telefoon'")
    assert "'Tel'" in message and "\n" not in message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("clean: [phone]", "clean: [phnoe]"), "columns.phone.clean: 'phnoe' is not a rule"),
        (("key: [email]", "key: [mail]"), "target.key: 'mail' is not one of the mapped columns"),
        (("region: NL", "region: XX"), "defaults.region: 'XX' is not a phone region"),
        (("country: NL", "country: Holland"), "defaults.country: 'Holland' is not an ISO 3166"),
        (("keys: [[email]]", "keys: [[e_mail]]"), "dedup.keys[0]: e_mail not mapped"),
        (("dedup:", "dedupe:"), "dedupe: unknown key"),
    ],
)
def test_mapping_typos_are_one_clear_error(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = tmp_path / "customers.yml"
    path.write_text(MAPPING.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


GENERATED_MAPPING = """\
target: {model: shop.Customer, table: shop_customer, key: [email]}
defaults: {region: NL, country: NL}
columns:
  customer_no: {from: Klantnr}
  email: {from: E-mail, clean: [email], required: true}
  first_name: {from: Voornaam, clean: [name]}
  last_name: {from: Achternaam, clean: [name]}
  phone: {from: Telefoon, clean: [phone]}
  street: {from: Straat}
  postcode: {from: Postcode, clean: [postcode]}
  city: {from: Plaats, clean: [name]}
  country: {from: Land, clean: [country]}
  created_at: {from: Aangemaakt, clean: [{date: ["%d-%m-%Y", "%Y-%m-%d"]}]}
dedup: {keys: [[email], [phone, last_name]], keep: most_complete}
"""


def test_the_generated_messy_export_is_deterministic_and_reconciles(tmp_path: Path) -> None:
    from sandbox.messy import generate, write_csv

    one, two = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(generate(3000, seed=11), one)
    write_csv(generate(3000, seed=11), two)
    assert one.read_bytes() == two.read_bytes()
    path = tmp_path / "m.yml"
    path.write_text(GENERATED_MAPPING)
    deduped, cleaned, how = run(one, load_mapping(path))
    assert how["encoding"] == "cp1252" and how["delimiter"] == ";" and how["rows"] == 3000
    kept, rejected, merged = len(deduped.frame), len(cleaned.rejects), len(deduped.merges)
    assert kept + rejected + merged == 3000
    assert 60 < rejected < 200 and 120 < merged < 350  # ~4% broken, ~8% duplicates
    assert deduped.frame["customer_no"].str.match(r"^\d{7}$").all()  # zeros kept
    assert deduped.frame["phone"].str.match(r"^\+\d{9,13}$").all()
    assert deduped.frame["email"].is_unique


def test_a_legacy_postgresql_database(
    tmp_path: Path, mapping: Mapping, scratch_db: Any, sandbox: Any
) -> None:
    name, conn = scratch_db()
    frame = pd.read_csv(__import__("io").StringIO(MESSY), sep=";", dtype=str, keep_default_na=False)
    columns = ", ".join(f'"{c}" text' for c in frame.columns)
    conn.execute(f"create table klanten ({columns})")
    with conn.cursor() as cur, cur.copy("copy klanten from stdin") as copy:
        for row in frame.itertuples(index=False):
            copy.write_row(list(row))
    path = tmp_path / "m.yml"
    path.write_text(MAPPING + 'source: {query: "select * from klanten order by \\"Klantnr\\""}\n')
    dsn = sandbox.admin_conninfo(name)
    extracted, how = read_source(dsn, load_mapping(path))
    assert how["format"] == "postgres" and len(extracted) == 9
    assert extracted["Klantnr"].tolist()[:2] == ["007", "008"]
    cleaned = clean(extracted, load_mapping(path))
    assert len(cleaned.rejects) == 3


# every character COPY's text (and CSV) format treats specially, and the look-alikes
AWKWARD = [
    "",
    "\\N",
    "NULL",
    "\\",
    "\\\\",
    "\\.",
    "\\t is no tab",
    "ends with a backslash\\",
    "tab\there",
    "\t",
    "two\nlines",
    "\n",
    "cr\rand crlf\r\n",
    'double "quotes"',
    "single 'quotes'",
    "semi;colon, comma|pipe",
    "  spaced  ",
    "Zoë Müller-Lüdenscheidt, 東京, €, \u00a0nbsp, emoji \U0001f600",
]
LOAD_TABLE = """
create table shop_customer (
  id bigint generated by default as identity primary key,
  email varchar(254) not null unique,
  first_name text, last_name varchar(100), note text, created_at timestamptz)
"""


def loaded(conn: Any) -> list[dict[str, Any]]:
    cur = conn.execute("select email, first_name, last_name, note from shop_customer order by id")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def awkward_records(shift: int) -> list[dict[str, Any]]:
    n = len(AWKWARD)
    return [
        {
            "email": f"c{i}@example.com",
            "first_name": v,
            "last_name": None if (i + shift) % 3 == 0 else AWKWARD[(i + shift) % n],
            "note": "" if (i + shift) % 4 == 0 else AWKWARD[(i + 2 * shift + 1) % n] + v,
        }
        for i, v in enumerate(AWKWARD)
    ]


@pytest.mark.parametrize(
    "kind",
    ["awkward texts and NULLs", "awkward texts only", "plain texts only", "not only texts"],
)
def test_load_rows_keeps_every_value_exactly(scratch_db: Any, mapping: Mapping, kind: str) -> None:
    _, conn = scratch_db()
    conn.execute(LOAD_TABLE)
    if kind.startswith("awkward"):
        first, second = awkward_records(0), awkward_records(1)
        if kind == "awkward texts only":  # no NULL: the bulk encoder's shortcut is tried
            first, second = (
                [{k: "" if v is None else v for k, v in r.items()} for r in rows]
                for rows in (first, second)
            )
    else:
        first = [
            {"email": f"p{i}@example.com", "first_name": f"Name {i}", "last_name": "", "note": "x"}
            for i in range(30)
        ]
        second = [{**r, "last_name": f"Last {i}", "note": ""} for i, r in enumerate(first)]
        if kind == "not only texts":  # psycopg dumps the int, as it always did
            second[3]["note"] = 12345
    got = load_rows(conn, mapping, "seed_import_test", first)
    assert got == {
        "inserted": len(first),
        "updated": 0,
        "unchanged": 0,
        "sampled": min(25, len(first)),
    }
    assert loaded(conn) == first
    got = load_rows(conn, mapping, "seed_import_test", second)  # the same keys: updates
    changed = sum(1 for a, b in zip(first, second, strict=True) if str(a) != str(b))
    assert changed > 0
    assert got == {
        "inserted": 0,
        "updated": changed,
        "unchanged": len(second) - changed,
        "sampled": min(25, len(second)),
    }
    assert loaded(conn) == [
        {k: v if v is None or isinstance(v, str) else str(v) for k, v in r.items()} for r in second
    ]
    assert conn.execute("select to_regclass('seed_import_test')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("an existing key twice", "a key (email) repeats among the staging rows"),
        ("a new key twice", "a key (email) repeats among the staging rows"),
        ("too long for varchar(100)", "value too long for type character varying(100)"),
        ("not a timestamp", "invalid input syntax for type timestamp with time zone"),
        ("a NUL character", "0x00"),
        ("no unique key", "the key (email) is not a unique index of shop_customer"),
    ],
)
def test_a_load_that_cannot_be_right_writes_nothing(
    scratch_db: Any, mapping: Mapping, case: str, message: str
) -> None:
    _, conn = scratch_db()
    conn.execute(LOAD_TABLE)
    known = {"email": "a@example.com", "first_name": "A", "last_name": "", "note": None}
    load_rows(conn, mapping, "seed_import_test", [known])
    new = {"email": "b@example.com", "first_name": "B", "last_name": "", "note": None}
    records = [dict(new), {**known, "first_name": "changed"}]
    if case == "an existing key twice":
        records.append({**known, "first_name": "changed again"})
    elif case == "a new key twice":
        records.append({**new, "note": "again"})
    elif case == "too long for varchar(100)":
        records[0]["last_name"] = "x" * 101  # an explicit cast would cut it silently
    elif case == "not a timestamp":
        records = [{**r, "created_at": "2020-02-03"} for r in records]
        records[1]["created_at"] = "yesterday-ish"
    elif case == "a NUL character":
        records[0]["note"] = "nul\x00byte"
    else:
        conn.execute("alter table shop_customer drop constraint shop_customer_email_key")
    before = loaded(conn)
    with pytest.raises(ImportFailed) as err:
        load_rows(conn, mapping, "seed_import_test", records)
    assert str(err.value).startswith("import into shop_customer FAILED")
    assert message in str(err.value)
    assert loaded(conn) == before == [known]
    assert conn.execute("select to_regclass('seed_import_test')").fetchone() == (None,)


def test_an_update_writes_only_changed_rows_and_the_columns_it_may_change(
    scratch_db: Any, mapping: Mapping
) -> None:
    _, conn = scratch_db()
    conn.execute(LOAD_TABLE)
    rows = [
        {"email": f"u{i}@example.com", "first_name": f"F{i}", "last_name": "L", "note": "n"}
        for i in range(10)
    ]
    load_rows(conn, mapping, "seed_import_test", rows)
    versions = dict(conn.execute("select email, xmin::text from shop_customer").fetchall())
    again = [dict(r) for r in rows]
    again[2]["first_name"] = "changed"
    again[3]["note"] = "not written"  # `note` may not be changed on an existing row
    got = load_rows(conn, mapping, "seed_import_test", again, ["first_name", "last_name"])
    assert (got["inserted"], got["updated"], got["unchanged"]) == (0, 1, 9)
    now = dict(conn.execute("select email, xmin::text from shop_customer").fetchall())
    rewritten = sorted(e for e in now if now[e] != versions[e])
    assert rewritten == ["u2@example.com"]  # the unchanged rows are not rewritten
    assert loaded(conn)[3]["note"] == "n"
    assert loaded(conn)[2]["first_name"] == "changed"


def test_countries_come_from_a_maintained_list() -> None:
    """Names, ISO alpha-2 and alpha-3 codes of every country (pycountry), plus the local
    names an export in Dutch or German uses; an unknown name stays as typed (rejected)."""
    from seed.legacy.clean import country_names

    names = country_names()
    for typed, code in (
        ("PORTUGAL", "PT"), ("PRT", "PT"), ("SWEDEN", "SE"), ("CZECHIA", "CZ"),
        ("CZECH REPUBLIC", "CZ"), ("NEDERLAND", "NL"), ("DUITSLAND", "DE"), ("US", "US"),
    ):  # fmt: skip
        assert names[typed] == code, typed
    assert "ATLANTIS" not in names
