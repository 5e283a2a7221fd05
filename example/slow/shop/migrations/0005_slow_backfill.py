"""A long data migration: about 5 seconds inside its transaction, changing nothing.

For the fault matrix (tests/faults/): it keeps `manage.py migrate` running long
enough to cut the SSH connection, restart PostgreSQL or kill `fab` while it
runs. Reversible (its reverse is a no-op, as its forward changes no row).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.RunSQL("SELECT pg_sleep(5)", reverse_sql=migrations.RunSQL.noop),
    ]
