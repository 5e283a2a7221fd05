"""A data migration without reverse_code: Django cannot migrate back past it, so a
rollback can never reverse this deploy. `fab <env> lint` blocks it
(irreversible-data-migration). It changes no row of the demo data."""

from django.db import migrations


def blank_status_to_new(apps, schema_editor):
    Order = apps.get_model("shop", "Order")
    Order.objects.filter(status="").update(status="new")


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0005_order_status_index"),
    ]

    operations = [
        migrations.RunPython(blank_status_to_new),
    ]
