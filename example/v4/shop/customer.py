from django.db import models


class Customer(models.Model):
    # Contract (v3): `name` is gone; first_name/last_name are the only source.
    first_name = models.CharField(max_length=100, blank=True, default="", db_default="")
    last_name = models.CharField(max_length=100, blank=True, default="", db_default="")
    email = models.EmailField(unique=True)
    created_at = models.DateTimeField()
    # v4: contact details, for the customers imported from the old CRM (import/)
    customer_no = models.CharField(max_length=20, blank=True, default="", db_default="")
    phone = models.CharField(max_length=20, blank=True, default="", db_default="")
    street = models.CharField(max_length=200, blank=True, default="", db_default="")
    postcode = models.CharField(max_length=10, blank=True, default="", db_default="")
    city = models.CharField(max_length=100, blank=True, default="", db_default="")
    country = models.CharField(max_length=2, blank=True, default="", db_default="")

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def __str__(self) -> str:
        return self.full_name
