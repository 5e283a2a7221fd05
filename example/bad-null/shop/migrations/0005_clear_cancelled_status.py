"""Let cancelled orders be re-triaged.

Buggy on purpose: it drops NOT NULL from status behind Django's back and sets the
status of cancelled orders to NULL, losing which orders were cancelled. The
model state is unchanged, so `makemigrations --check` stays quiet.
"""

from django.db import migrations


def clear_status(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("ALTER TABLE shop_order ALTER COLUMN status DROP NOT NULL")
        cursor.execute("UPDATE shop_order SET status = NULL WHERE status = 'cancelled'")


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.RunPython(clear_status, reverse_code=migrations.RunPython.noop),
    ]
