from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Customer, Order

VERSION = (Path(settings.BASE_DIR) / "VERSION").read_text().strip()


def health(request: HttpRequest) -> HttpResponse:
    """200 "ok <version>" when the database answers, 503 otherwise."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return HttpResponse(
            f"database unavailable: {exc.__class__.__name__}\n",
            status=503,
            content_type="text/plain",
        )
    return HttpResponse(f"ok {VERSION}", content_type="text/plain")


def version(request: HttpRequest) -> HttpResponse:
    return HttpResponse(VERSION, content_type="text/plain")


def customer_detail(request: HttpRequest, customer_id: int) -> JsonResponse:
    """Every column of the customer, whatever this version's model has."""
    customer = get_object_or_404(Customer, pk=customer_id)
    fields = Customer._meta.concrete_fields
    return JsonResponse({f.attname: getattr(customer, f.attname) for f in fields})


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """POST /orders/ with customer=<id>&total=<amount>: a new order; 201 {"id": n}. Every
    release serves it (Order never changes): what a load test writes through."""
    try:
        customer = int(request.POST["customer"])
        total = Decimal(request.POST["total"])
    except (KeyError, ValueError, InvalidOperation):
        return JsonResponse({"error": "customer (id) and total (amount) are required"}, status=400)
    get_object_or_404(Customer, pk=customer)
    order = Order.objects.create(customer_id=customer, total=total, placed_at=timezone.now())
    return JsonResponse({"id": order.pk}, status=201)
