"""Round order totals to whole units for the new invoicing system.

Buggy on purpose: it rounds the stored totals instead of the invoice copy, so
the cents of every order are lost. `migrate` exits 0, the schema is unchanged.
"""

from django.db import migrations


def round_totals(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("UPDATE shop_order SET total = round(total) WHERE total <> round(total)")


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.RunPython(round_totals, reverse_code=migrations.RunPython.noop),
    ]
