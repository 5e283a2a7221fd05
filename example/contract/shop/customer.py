from django.db import models


class Customer(models.Model):
    # Contract: `name` is gone; first_name/last_name are the only source.
    first_name = models.CharField(max_length=100, blank=True, default="", db_default="")
    last_name = models.CharField(max_length=100, blank=True, default="", db_default="")
    email = models.EmailField(unique=True)
    created_at = models.DateTimeField()

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def __str__(self) -> str:
        return self.full_name
