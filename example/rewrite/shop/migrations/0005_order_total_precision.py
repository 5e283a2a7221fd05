"""Order totals get a third decimal place: numeric(10,2) -> numeric(12,3).

Changing a numeric column's scale makes PostgreSQL rewrite the whole table under an
ACCESS EXCLUSIVE lock: nothing reads or writes shop_order until it is done. Harmless
on 50,000 rows, minutes on a hundred million: what `fab <env> rehearse` measures and
extrapolates. Reversible (back to two places; totals have no third digit to lose).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.AlterField(
            model_name="order",
            name="total",
            field=models.DecimalField(decimal_places=3, max_digits=12),
        ),
    ]
