"""`broken`: v2's code and schema with a mistake that only shows once it serves: every
URL lookup fails (500 on every request, /health/ included). No migration: a code-only
deploy, which must switch the host back.

SHOP_BROKEN_ON (in the app's env), when set, limits the mistake to the hosts whose
APP_BIND it lists (comma-separated): a release that works on one host and fails on
another, as one missing a system library on that host would."""

import os

from django.urls import path

from . import views

_only_on = [h.strip() for h in os.environ.get("SHOP_BROKEN_ON", "").split(",") if h.strip()]
if not _only_on or os.environ.get("APP_BIND") in _only_on:
    raise RuntimeError("broken on purpose: this release cannot resolve a single URL")

urlpatterns = [  # v2's, where it works
    path("health/", views.health, name="health"),
    path("version/", views.version, name="version"),
    path("customers/<int:customer_id>/", views.customer_detail, name="customer-detail"),
    path("orders/", views.place_order, name="place-order"),
]
