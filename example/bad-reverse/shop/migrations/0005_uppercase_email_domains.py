"""Upper-case every email address for the old mail gateway, "reversibly".

Buggy on purpose: the reverse lower-cases every address, which is not the inverse
of the forward step — the 1,000 mixed-case addresses (`Customer<id>@Example.com`)
come back different. `migrate` exits 0 both ways; Django calls it reversible. Only
comparing the data after the reverse with the before-state shows it, and then the
rollback must restore the backup instead.
"""

from django.db import migrations


def upper(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("UPDATE shop_customer SET email = upper(email)")


def lower(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("UPDATE shop_customer SET email = lower(email)")


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.RunPython(upper, reverse_code=lower),
    ]
