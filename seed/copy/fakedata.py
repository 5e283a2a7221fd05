"""Word lists the `fake` masking rules pick from, per locale (seed/copy/masking.py).

Small on purpose: a masked value is chosen from these lists by bytes of a keyed hash
of the original, inside PostgreSQL, so the lists travel as SQL array literals. Every
email, phone number and address they make is fictional: `example.*` domains
(RFC 2606), the 555 exchange in North America, and street names without numbers
that match a real address only by chance.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Locale:
    first: tuple[str, ...]
    last: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[str, ...]
    # `{n}` house number, `{street}`, `{postcode}`, `{city}`
    address: str
    postcode_digits: int
    # digits replace each `#`
    phone: str
    domains: tuple[str, ...] = ("example.com", "example.net", "example.org")


def words(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(sep))


_LOREM = words(
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
    "in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint "
    "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est "
    "laborum"
)

LOREM: tuple[str, ...] = tuple(dict.fromkeys(_LOREM))

LOCALES: dict[str, Locale] = {
    "en_US": Locale(
        first=words(
            "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth "
            "William Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen "
            "Christopher Lisa Daniel Nancy Matthew Betty Anthony Sandra Mark Ashley "
            "Donald Kimberly Steven Emily Andrew Donna Paul Michelle Joshua Carol"
        ),
        last=words(
            "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez "
            "Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin "
            "Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson "
            "Walker Young Allen King Wright Scott Torres Nguyen Hill Flores"
        ),
        streets=words(
            "Maple Street|Oak Avenue|Pine Road|Cedar Lane|Elm Street|Washington Avenue|"
            "Lake Drive|Hill Road|Park Place|Sunset Boulevard|River Road|Main Street|"
            "Church Street|Highland Avenue|Meadow Lane|Forest Drive|Spring Street|"
            "Willow Way|Chestnut Street|Valley Road",
            "|",
        ),
        cities=words(
            "Springfield|Riverton|Fairview|Madison|Georgetown|Clinton|Franklin|Greenville|"
            "Bristol|Salem|Oakland|Ashland|Burlington|Manchester|Milton|Newport",
            "|",
        ),
        address="{n} {street}, {city} {postcode}",
        postcode_digits=5,
        phone="+1 ###-555-01##",
    ),
    "de_DE": Locale(
        first=words(
            "Anna Lukas Marie Leon Sophie Finn Emma Paul Mia Jonas Hannah Elias Lena "
            "Felix Lea Noah Laura Maximilian Julia Ben Sarah Luis Johanna Tim Katharina "
            "Jan Clara Moritz Charlotte Niklas Greta Jakob Frieda Tobias Ida Jürgen "
            "Käthe Björn Sören Maren"
        ),
        last=words(
            "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann "
            "Schäfer Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann "
            "Braun Krüger Hofmann Hartmann Lange Schmitt Werner Schmitz Krause Meier "
            "Lehmann Schmid Schulze Maier Köhler Herrmann König Walter Mayer Huber"
        ),
        streets=words(
            "Hauptstraße|Schulstraße|Gartenstraße|Bahnhofstraße|Dorfstraße|Bergstraße|"
            "Birkenweg|Lindenstraße|Kirchstraße|Waldstraße|Ringstraße|Schillerstraße|"
            "Goethestraße|Mühlenweg|Am Markt|Rosenweg|Feldstraße|Wiesenweg",
            "|",
        ),
        cities=words(
            "Berlin|Hamburg|München|Köln|Frankfurt am Main|Stuttgart|Düsseldorf|Leipzig|"
            "Dortmund|Essen|Bremen|Dresden|Hannover|Nürnberg|Bonn|Münster",
            "|",
        ),
        address="{street} {n}, {postcode} {city}",
        postcode_digits=5,
        phone="+49 30 555####",
    ),
    "fr_FR": Locale(
        first=words(
            "Léa Hugo Chloé Louis Manon Gabriel Emma Arthur Camille Jules Inès Raphaël "
            "Sarah Lucas Jade Adam Louise Nathan Zoé Théo Alice Paul Lina Tom Juliette "
            "Noé Anaïs Maël Élise Antoine Margaux Étienne Céline Rémi Océane Jérôme "
            "Hélène François Amélie Benoît"
        ),
        last=words(
            "Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent "
            "Simon Michel Lefebvre Leroy Roux David Bertrand Morel Fournier Girard "
            "Bonnet Dupont Lambert Fontaine Rousseau Vincent Muller Lefèvre Faure André "
            "Mercier Blanc Guérin Boyer Garnier Chevalier François Legrand Gauthier Garcia"
        ),
        streets=words(
            "rue de la Paix|rue Victor Hugo|avenue Jean Jaurès|rue des Lilas|"
            "boulevard Voltaire|rue Pasteur|place de la République|rue du Moulin|"
            "allée des Tilleuls|rue de l'Église|chemin des Vignes|rue Nationale|"
            "avenue de la Gare|rue des Écoles|impasse des Roses|quai des Brumes",
            "|",
        ),
        cities=words(
            "Paris|Lyon|Marseille|Toulouse|Nice|Nantes|Strasbourg|Montpellier|Bordeaux|"
            "Lille|Rennes|Reims|Le Havre|Grenoble|Dijon|Angers",
            "|",
        ),
        address="{n} {street}, {postcode} {city}",
        postcode_digits=5,
        phone="+33 1 55 ## ## ##",
    ),
    "nl_NL": Locale(
        first=words(
            "Daan Emma Sem Julia Lucas Mila Levi Tess Finn Sophie Milan Zoë Noah Sara "
            "Luuk Anna Bram Evi Jesse Lotte Thijs Fleur Ruben Noor Lars Lieke Stijn "
            "Saar Jens Roos Sven Femke Niels Isa Joris Anouk Wouter Floor Bas Maud"
        ),
        last=words(
            "de Jong|Jansen|de Vries|van den Berg|van Dijk|Bakker|Janssen|Visser|Smit|"
            "Meijer|de Boer|Mulder|de Groot|Bos|Vos|Peters|Hendriks|van Leeuwen|Dekker|"
            "Brouwer|de Wit|Dijkstra|Smits|de Graaf|van der Meer|van der Linden|Kok|"
            "Jacobs|de Haan|Vermeulen|van den Heuvel|van der Veen|van den Broek|"
            "de Bruijn|de Bruin|van der Heijden|Schouten|van Beek|Willems|van Vliet",
            "|",
        ),
        streets=words(
            "Kerkstraat|Schoolstraat|Molenweg|Dorpsstraat|Stationsweg|Julianastraat|"
            "Beatrixstraat|Wilhelminastraat|Nieuwstraat|Lindelaan|Eikenlaan|Parkweg|"
            "Raadhuisplein|Kanaalweg|Sportlaan|Prins Hendrikkade",
            "|",
        ),
        cities=words(
            "Amsterdam|Rotterdam|Den Haag|Utrecht|Eindhoven|Groningen|Tilburg|Almere|"
            "Breda|Nijmegen|Haarlem|Arnhem|Zwolle|Leiden|Delft|Maastricht",
            "|",
        ),
        address="{street} {n}, {postcode} {city}",
        postcode_digits=4,
        phone="+31 20 555 ####",
    ),
}


def ascii_word(text: str) -> str:
    """`Jürgen` → `jurgen`, `van der Meer` → `vandermeer`, `O'Brien` → `obrien` (emails)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def vocabulary(locale: Locale, kind: str) -> frozenset[str]:
    """Every whole value a `fake` rule of `kind` can make from a short list (names,
    cities): a sampled original that happens to be one of them may appear in the
    masked data by chance, so the survival check must not count it."""
    if kind == "first_name":
        return frozenset(locale.first)
    if kind == "last_name":
        return frozenset(locale.last)
    if kind == "name":
        return frozenset(f"{f} {la}" for f in locale.first for la in locale.last)
    if kind == "city":
        return frozenset(locale.cities)
    return frozenset()
