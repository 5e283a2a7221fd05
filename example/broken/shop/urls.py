"""`broken`: v2's code and schema with a mistake that only shows once it serves: every
URL lookup fails (500 on every request, /health/ included). No migration: a code-only
deploy, which must switch the host back."""

from django.urls import path

from . import views

raise RuntimeError("broken on purpose: this release cannot resolve a single URL")

urlpatterns = [  # never reached
    path("health/", views.health, name="health"),
]
