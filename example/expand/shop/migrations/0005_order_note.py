from django.db import migrations, models


class Migration(migrations.Migration):
    """Expand: a nullable column on the table the app writes to (v2's inserts leave it NULL)."""

    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="note",
            field=models.TextField(blank=True, null=True),
        ),
    ]
