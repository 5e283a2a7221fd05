"""A long data migration: about 5 seconds inside its transaction, changing nothing.

For the fault matrix (tests/faults/): it keeps `manage.py migrate` running long
enough to cut the SSH connection, restart PostgreSQL or kill `fab` while it
runs. Reversible (its reverse is a no-op, as its forward changes no row).
SHOP_SLOW_SECONDS in the app's env sets another duration (a test that must act while
it runs on a busy machine).
"""

import os

from django.db import migrations

SECONDS = float(os.environ.get("SHOP_SLOW_SECONDS") or 5)


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.RunSQL(f"SELECT pg_sleep({SECONDS:g})", reverse_sql=migrations.RunSQL.noop),
    ]
