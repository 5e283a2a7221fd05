from django.db import models

# The customer model changes from version to version (expand, contract); each version's
# overlay replaces shop/customer.py only. Order never changes.
from .customer import Customer

__all__ = ["Customer", "Order"]


class Order(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        PAID = "paid", "Paid"
        SHIPPED = "shipped", "Shipped"
        CANCELLED = "cancelled", "Cancelled"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    # release `rewrite`: a third decimal place (ALTER COLUMN TYPE rewrites the table)
    total = models.DecimalField(max_digits=12, decimal_places=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    placed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"
