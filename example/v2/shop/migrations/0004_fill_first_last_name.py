"""Expand, step 2: fill first_name/last_name from name, in one set-based UPDATE.

The first word is the first name, the rest (possibly several words, "van Dijk")
the last name; a single-word name leaves last_name empty. `name` is untouched.
"""

from django.db import migrations

FILL = """
    UPDATE shop_customer
    SET first_name = split_part(name, ' ', 1),
        last_name = CASE WHEN position(' ' in name) > 0
                         THEN substring(name from position(' ' in name) + 1)
                         ELSE ''
                    END
"""


def fill(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(FILL)


def unfill(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("UPDATE shop_customer SET first_name = '', last_name = ''")


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0003_customer_first_last_name"),
    ]

    operations = [
        migrations.RunPython(fill, reverse_code=unfill),
    ]
