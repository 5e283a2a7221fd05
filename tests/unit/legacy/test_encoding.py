"""seed.legacy.encoding: an export's encoding, decided where cp1252 and cp1250 differ.

Exports as old Windows systems write them (CRLF, semicolons, the locale's code page), in
the languages of Western and Central Europe, long and short, and the hard case: a few
accented names among hundreds of plain ones. The readings must equal the original text —
two encodings that decode a file identically are both right."""

from __future__ import annotations

import random

import pytest

from seed.legacy.encoding import AmbiguousEncoding, detect_encoding

NAMES = {
    "pl": ("cp1250", "PL", ["Łukasz Wójcik", "Małgorzata Żółkiewska", "Paweł Dąbrowski",
                            "Zbigniew Ścisło", "Grażyna Wróbel", "Łódź", "Gdańsk"]),
    "cs": ("cp1250", "CZ", ["Jiří Novák", "Petra Dvořáková", "Tomáš Černý", "Lukáš Růžička",
                            "Zdeněk Šťastný", "Plzeň", "Ústí nad Labem"]),
    "hu": ("cp1250", "HU", ["Szabó Gergő", "Kovács Erzsébet", "Tóth Ödön", "Kiss Lőrinc",
                            "Győr", "Székesfehérvár"]),
    "hr": ("cp1250", "HR", ["Marija Kovačević", "Josip Babić", "Đuro Šimić", "Željko Jurić",
                            "Čakovec", "Šibenik"]),
    "de": ("cp1252", "DE", ["Jürgen Müller", "Käthe Schröder", "Günther Weiß", "München"]),
    "fr": ("cp1252", "FR", ["François Lefèvre", "Hélène Dubois", "Jérôme Garçon", "Nîmes"]),
    "nl": ("cp1252", "NL", ["Anneke Jansen", "Maaïke Bakker", "Chloë de Wit", "Noël Smit"]),
    "sv": ("cp1252", "SE", ["Åsa Öberg", "Björn Ångström", "Göran Sjöström", "Umeå"]),
    "es": ("cp1252", "ES", ["José Muñoz", "María Peña", "Íñigo Ibáñez", "Logroño"]),
    "pt": ("cp1252", "PT", ["João Gonçalves", "Inês Conceição", "Sebastião Antunes"]),
}  # fmt: skip
PLAIN = ["John Smith", "Anna Berg", "Peter Jansen", "Maria Rossi"]


def export(lang: str, rows: int, accented: int, seed: int) -> tuple[str, bytes]:
    encoding, _, names = NAMES[lang]
    r = random.Random(seed)  # noqa: S311 (test data)
    chosen = set(r.sample(range(rows), accented))
    lines = ["Klantnr;Naam;Plaats;E-mail;Telefoon"]
    for i in range(rows):
        name = r.choice(names) if i in chosen else r.choice(PLAIN)
        lines.append(f"{i:05d};{name};{r.choice(names)if i in chosen else 'Springfield'};"
                     f"c{i}@example.com;+31 6 {r.randint(10**7, 10**8 - 1)}")  # fmt: skip
    text = "\r\n".join(lines) + "\r\n"
    return text, text.encode(encoding)


@pytest.mark.parametrize("lang", sorted(NAMES))
@pytest.mark.parametrize(("rows", "accented"), [(5, 5), (20, 20), (1000, 1000), (200, 1), (200, 3)])
def test_an_export_reads_as_written(lang: str, rows: int, accented: int) -> None:
    """Every language, every size, never a misreading; the mapping's region is the last
    word only when the letters and chardet leave it open (and it says so)."""
    _, region, _ = NAMES[lang]
    for seed in range(3):
        text, raw = export(lang, rows, accented, seed)
        found = detect_encoding(raw, region)
        assert raw.decode(found.encoding) == text, (lang, rows, accented, seed, found)
        if found.basis.startswith("defaults.region"):
            assert ", not '" in found.basis  # the word both ways, for the summary


def test_the_letters_decide_before_any_region() -> None:
    """A Polish export with a US mapping (the default region) still reads as Polish: `ł`
    read as cp1252 is `³`, no letter; a Spanish one with a Polish region stays Spanish."""
    text, raw = export("pl", 20, 20, 0)
    assert raw.decode(detect_encoding(raw, "US").encoding) == text
    text, raw = export("es", 20, 20, 0)
    assert raw.decode(detect_encoding(raw, "PL").encoding) == text


def test_bom_and_utf8_first() -> None:
    assert detect_encoding("Łódź".encode()).encoding == "utf-8"
    assert detect_encoding("\ufeffŁódź".encode()).encoding == "utf-8-sig"
    assert detect_encoding("Łódź".encode("utf-16")).encoding == "utf-16"
    assert detect_encoding(b"plain ascii").basis == "UTF-8"


def test_only_a_region_could_decide_and_the_mapping_names_none() -> None:
    """One Polish name among plain ones: `ń` (cp1250) or `ñ` (cp1252) are both letters of
    one alphabet. With defaults.region the region's code page, said with both readings;
    without one, refused (exit 2) naming both — never a silent guess."""
    raw = "Klantnr;Naam\r\n1;John Smith\r\n2;Anna Szymańska\r\n3;Peter Jansen\r\n".encode("cp1250")
    found = detect_encoding(raw, "PL")
    assert found.encoding == "cp1250"
    assert found.basis == "defaults.region PL: 'Szymańska', not 'Szymañska'"
    with pytest.raises(AmbiguousEncoding) as refused:
        detect_encoding(raw, None)
    assert refused.value.code == 2
    assert str(refused.value) == (
        "cannot tell whether it is cp1252 ('Szymañska') or cp1250 ('Szymańska'): set "
        "source.encoding, or defaults.region (the exporting machine's country), in the mapping"
    )
