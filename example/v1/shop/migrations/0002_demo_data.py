"""Deterministic demo data: 20,000 customers and 50,000 orders.

Set-based SQL (generate_series), no Python loop over rows, so it runs in well
under a second and every machine gets byte-for-byte the same rows: the data
checks and checksums of Seed's demos depend on that.

- Names come from fixed lists (some with accents, apostrophes or two-word last
  names); every 1,000th customer (i % 1000 = 7) has a single-word name, which
  the v2 first/last split has to handle.
- Emails are customer<i>@example.com, except every 20th customer's, which was
  typed with capitals (Customer<i>@Example.com): the input of the bad-data
  release's "normalize emails".
- Times are a fixed base plus minute offsets (no day arithmetic, so the
  session time zone cannot shift them).
"""

from django.db import migrations

FIRST_NAMES = [
    "Ada", "Alan", "Amara", "Anna", "Arjun", "Beatriz", "Bjørn", "Carmen", "Chen", "Chloé",
    "Dara", "David", "Elena", "Emeka", "Fatima", "François", "Grace", "Hana", "Hugo", "Ines",
    "Ivan", "Jamal", "Jonas", "Kaito", "Lars", "Leila", "Lucía", "Marek", "Maya", "Noah",
    "Olga", "Omar", "Priya", "Rafael", "Sofia", "Søren", "Tomás", "Yara", "Zoë", "Łukasz",
]

# 41 entries (coprime to 40) so first and last names pair into 1,640 combinations.
LAST_NAMES = [
    "Abara", "Andersen", "Becker", "Brown", "Castillo", "Chowdhury", "da Silva", "Dubois",
    "Eriksson", "Fischer", "García", "Haddad", "Hoang", "Ivanova", "Jensen", "Kim",
    "Kowalski", "Larsen", "Lopez", "Martin", "Müller", "Nakamura", "Novak", "O'Brien",
    "Okafor", "Patel", "Petrov", "Quinn", "Rossi", "Santos", "Schmidt", "Singh", "Tanaka",
    "van Dijk", "Virtanen", "Wang", "Weber", "Nowak", "Yilmaz", "Zhang", "de la Cruz",
]

CUSTOMERS = 20_000
ORDERS = 50_000

INSERT_CUSTOMERS = """
    INSERT INTO shop_customer (id, name, email, created_at)
    SELECT
        i,
        CASE WHEN i %% 1000 = 7
             THEN (%(first)s::text[])[1 + i %% 40]
             ELSE (%(first)s::text[])[1 + i %% 40] || ' ' || (%(last)s::text[])[1 + (i * 7) %% 41]
        END,
        CASE WHEN i %% 20 = 0
             THEN 'Customer' || i || '@Example.com'
             ELSE 'customer' || i || '@example.com'
        END,
        timestamptz '2023-01-01 00:00:00+00' + make_interval(mins => i * 23)
    FROM generate_series(1, %(customers)s) AS i
"""

# Customer of order j: 1 + (j * 7919) mod 20000 (7919 is prime, so orders are
# spread evenly: every customer gets 2 or 3). Placed 0..96 days and some
# minutes after the customer was created.
INSERT_ORDERS = """
    INSERT INTO shop_order (id, customer_id, total, status, placed_at)
    SELECT
        j,
        c,
        round(5 + ((j * 7907) %% 99500) / 100.0, 2),
        (ARRAY['paid', 'shipped', 'shipped', 'new', 'paid',
               'shipped', 'cancelled', 'shipped', 'paid', 'shipped'])[1 + j %% 10],
        timestamptz '2023-01-01 00:00:00+00'
            + make_interval(mins => c * 23 + (j %% 97) * 1440 + (j * 13) %% 1440)
    FROM (
        SELECT j, 1 + (j * 7919) %% %(customers)s AS c
        FROM generate_series(1, %(orders)s) AS j
    ) AS o
"""

RESET_SEQUENCES = """
    SELECT setval(pg_get_serial_sequence('shop_customer', 'id'), (SELECT max(id) FROM shop_customer)),
           setval(pg_get_serial_sequence('shop_order', 'id'), (SELECT max(id) FROM shop_order))
"""


def forward(apps, schema_editor):
    params = {
        "first": FIRST_NAMES,
        "last": LAST_NAMES,
        "customers": CUSTOMERS,
        "orders": ORDERS,
    }
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(INSERT_CUSTOMERS, params)
        cursor.execute(INSERT_ORDERS, params)
        cursor.execute(RESET_SEQUENCES)


def reverse(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DELETE FROM shop_order")
        cursor.execute("DELETE FROM shop_customer")
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('shop_customer', 'id'), 1, false),"
            " setval(pg_get_serial_sequence('shop_order', 'id'), 1, false)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forward, reverse_code=reverse),
    ]
