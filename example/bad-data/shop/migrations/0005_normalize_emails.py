"""Normalize customer emails to lower case.

Addresses that differ only by case are the same mailbox, and the unique
constraint would reject the lower-cased copy, so the duplicate account is
dropped first and the remaining addresses are lower-cased.
"""

from django.db import migrations
from django.db.models.functions import Lower


def normalize_emails(apps, schema_editor):
    Customer = apps.get_model("shop", "Customer")
    # Drop the duplicate accounts: a mixed-case address whose lower-case twin
    # already exists would violate the unique constraint once lower-cased.
    duplicates = Customer.objects.exclude(email=Lower("email"))
    duplicates.delete()
    Customer.objects.exclude(email=Lower("email")).update(email=Lower("email"))


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0004_fill_first_last_name"),
    ]

    operations = [
        migrations.RunPython(normalize_emails, reverse_code=migrations.RunPython.noop),
    ]
