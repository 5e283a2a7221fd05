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
