"""Backfill loyalty points from past orders.

Meant to read a points table that an earlier, never-merged migration was
supposed to create; it is not there, so this migration always fails. On
PostgreSQL each migration runs in its own transaction: 0005 (the new column)
is applied and recorded, this one is rolled back and not recorded.
"""

from django.db import migrations


def backfill_loyalty_points(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('shop_points')")
        (points_table,) = cursor.fetchone()
    if points_table is None:
        raise RuntimeError("backfill_loyalty_points: points table missing")


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0005_customer_loyalty_points"),
    ]

    operations = [
        migrations.RunPython(backfill_loyalty_points, reverse_code=migrations.RunPython.noop),
    ]
