"""An index on orders.status, built the plain way: CREATE INDEX takes a SHARE lock, so
every write to shop_order waits until the index is built. On a big table that is
downtime; `fab <env> lint` blocks it (squawk: require-concurrent-index-creation)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="order",
            index=models.Index(fields=["status"], name="shop_order_status_idx"),
        ),
    ]
