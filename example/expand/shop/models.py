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
    total = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    placed_at = models.DateTimeField()
    # release `expand`: a nullable column (v2 keeps inserting orders without it) and an
    # index built CONCURRENTLY (writes go on while it builds): an online deploy
    note = models.TextField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["placed_at"], name="shop_order_placed_at_idx")]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"
