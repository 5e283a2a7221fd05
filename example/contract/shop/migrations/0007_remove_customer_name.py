from django.db import migrations


class Migration(migrations.Migration):
    """Contract after `expand`: `name` goes (the release before this one still reads it, so
    this cannot run while that release serves: a maintenance-mode deploy)."""

    dependencies = [
        ("shop", "0006_order_placed_at_index"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="customer",
            name="name",
        ),
    ]
