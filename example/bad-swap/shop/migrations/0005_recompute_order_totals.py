"""Recompute order totals after the currency fix.

Buggy on purpose: the join pairs each order with its neighbour, so totals are
swapped between orders 1<->2, 3<->4, ... Row counts and even sum(total) are
unchanged; only a per-row checksum (with the primary key) notices.
"""

from django.db import migrations

SWAP = """
    UPDATE shop_order o
       SET total = n.total
      FROM shop_order n
     WHERE (o.id % 2 = 1 AND n.id = o.id + 1)
        OR (o.id % 2 = 0 AND n.id = o.id - 1)
"""


def recompute(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(SWAP)


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.RunPython(recompute, reverse_code=migrations.RunPython.noop),
    ]
