from django.urls import path

from . import views

urlpatterns = [
    path("health/", views.health, name="health"),
    path("version/", views.version, name="version"),
    path("customers/<int:customer_id>/", views.customer_detail, name="customer-detail"),
    path("orders/", views.place_order, name="place-order"),
]
