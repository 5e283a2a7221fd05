from django.db import models


class Customer(models.Model):
    # Expand: first_name/last_name are the new source of truth; `name` stays,
    # kept in sync on save, because the previous release still reads it.
    # db_default lets the previous release's INSERTs (which know nothing of
    # the new columns) keep working while this schema is live.
    name = models.CharField(max_length=200)
    first_name = models.CharField(max_length=100, blank=True, default="", db_default="")
    last_name = models.CharField(max_length=100, blank=True, default="", db_default="")
    email = models.EmailField(unique=True)
    created_at = models.DateTimeField()

    def save(self, *args, **kwargs):
        full_name = " ".join(part for part in (self.first_name, self.last_name) if part)
        if full_name:
            self.name = full_name
            update_fields = kwargs.get("update_fields")
            if update_fields is not None and "name" not in update_fields:
                kwargs["update_fields"] = [*update_fields, "name"]
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        PAID = "paid", "Paid"
        SHIPPED = "shipped", "Shipped"
        CANCELLED = "cancelled", "Cancelled"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    placed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"
