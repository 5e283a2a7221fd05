"""A deterministic, messy legacy customer export for demos, tests and benchmarks.

`generate(n, seed)` makes `n` records the way an old CRM's Excel export looks: Dutch
headers, `;`-separated, customer numbers with leading zeros, names in every case,
emails with capitals and stray spaces, phones in many national formats (06…, +31 6…,
0031…, (020)…, with dots and dashes), postcodes with and without the space, country
as a name, a code or empty, dates as dd-mm-yyyy or yyyy-mm-dd — and on top of that
duplicates (the same person again with a spelling or format variant), invalid emails,
impossible phone numbers and broken rows. The same `seed` gives the same bytes with
the pinned Faker. `python -m sandbox.messy N OUT.csv` writes one.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pandas as pd
import phonenumbers
from faker import Faker

HEADERS = [
    "Klantnr",
    "E-mail",
    "Voornaam",
    "Achternaam",
    "Telefoon",
    "Straat",
    "Postcode",
    "Plaats",
    "Land",
    "Aangemaakt",
]
LOCALES = {"NL": "nl_NL", "DE": "de_DE", "BE": "nl_BE", "FR": "fr_FR"}
COUNTRY_SPELLINGS = {
    "NL": ["NL", "Nederland", "Netherlands", "nl", "NLD", ""],
    "DE": ["DE", "Duitsland", "Germany", "Deutschland"],
    "BE": ["BE", "België", "Belgium"],
    "FR": ["FR", "Frankrijk", "France"],
}
PHONE_PREFIX = {"NL": "31", "DE": "49", "BE": "32", "FR": "33"}


def _phone(rng: random.Random, country: str) -> str:
    """A valid number of `country` (drawn until phonenumbers says it is assigned), written
    one of the ways people write it."""
    lead = {"NL": "6", "DE": "30", "BE": "47", "FR": "6"}[country]
    length = {"NL": 9, "DE": 10, "BE": 9, "FR": 9}[country]
    while True:
        national = lead + "".join(rng.choice("0123456789") for _ in range(length - len(lead)))
        number = phonenumbers.parse(national, country)
        if phonenumbers.is_valid_number(number):
            break
    cc = PHONE_PREFIX[country]
    style = rng.randrange(6)
    if style == 0:
        return "0" + national
    if style == 1:
        return f"+{cc} {national[:1]} {national[1:5]} {national[5:]}"
    if style == 2:
        return f"00{cc}{national}"
    if style == 3:
        return f"0{national[:2]}-{national[2:]}"
    if style == 4:
        return f"+{cc}{national}"
    return "0" + ".".join(national[i : i + 2] for i in range(0, len(national), 2))


def _case(rng: random.Random, text: str) -> str:
    return rng.choice([text, text, text.lower(), text.upper(), f" {text}  "])


def generate(n: int, seed: int = 7) -> pd.DataFrame:
    """`n` records (including duplicates and broken rows), all text."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not a secret
    fakers = {c: Faker(loc) for c, loc in LOCALES.items()}
    for i, faker in enumerate(fakers.values()):
        faker.seed_instance(seed + i)
    rows: list[list[str]] = []
    number = 0
    while len(rows) < n:
        number += 1
        country = rng.choices(list(LOCALES), weights=[70, 12, 10, 8])[0]
        fake = fakers[country]
        first, last = fake.first_name(), fake.last_name()
        user = "".join(ch for ch in f"{first}.{last}".lower() if ch.isascii() and ch != " ")
        email = f"{user}{number}@{rng.choice(['example.com', 'example.net', 'example.org'])}"
        created = fake.date_between(start_date="-12y", end_date="-1d")
        date = created.strftime(rng.choice(["%d-%m-%Y", "%Y-%m-%d"]))
        postcode = fake.postcode()
        if country == "NL" and rng.random() < 0.5:
            postcode = postcode.replace(" ", "").lower()
        record = [
            f"{number:07d}",
            rng.choice([email, email, email.upper(), f" {email} ", email.capitalize()]),
            _case(rng, first),
            _case(rng, last),
            _phone(rng, country),
            fake.street_address(),
            postcode,
            _case(rng, fake.city()),
            rng.choice(COUNTRY_SPELLINGS[country]),
            date,
        ]
        roll = rng.random()
        if roll < 0.02:
            record[1] = record[1].replace("@", " at ")  # an invalid email
        elif roll < 0.03:
            record[4] = "12"  # no phone number anywhere
        elif roll < 0.035:
            record[9] = "31-02-2020"  # no such day
        elif roll < 0.04:
            record[1] = ""  # the required email is missing
        rows.append(record)
        if rng.random() < 0.08 and len(rows) < n:  # the same customer again
            twin = list(record)
            twin[1] = twin[1].strip().lower()
            twin[2], twin[3] = twin[2].strip().upper(), twin[3].strip().lower()
            twin[4] = _phone(rng, country) if rng.random() < 0.3 else twin[4]
            twin[5] = "" if rng.random() < 0.5 else twin[5]
            rows.append(twin)
    return pd.DataFrame(rows[:n], columns=HEADERS, dtype=str)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """As the old system exported it: `;`, Windows-1252, CRLF."""
    frame.to_csv(
        path, sep=";", index=False, encoding="cp1252", errors="replace", lineterminator="\r\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sandbox.messy N OUT.csv", file=sys.stderr)
        return 2
    write_csv(generate(int(argv[0])), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
