from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    """Expand: an index built CONCURRENTLY (writes to orders go on while it builds), alone in
    a non-atomic migration (CREATE INDEX CONCURRENTLY cannot run in a transaction)."""

    atomic = False

    dependencies = [
        ("shop", "0005_order_note"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="order",
            index=models.Index(fields=["placed_at"], name="shop_order_placed_at_idx"),
        ),
    ]
