"""The shop's JSON API. An order, its lines and its run are committed together, or none of them is.

    POST /orders/                {"id": "o-1", "lines": [{"sku": "book", "quantity": 1}], "total": 12.5}
    GET  /orders/o-1/            the order with its run's status
    POST /orders/o-1/cancel/     cancels the run and marks the order cancelled

An API for other services rather than browsers, so it takes no CSRF token
(the admin keeps Django's protection).
"""

import json

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from workflow_celery import InvalidRunStateTransition, RecordNotFound, WorkflowInProgress

from .models import OrderLine, ShopOrder
from .workflows import Order, wf


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        data = json.loads(request.body)
        order_id, lines, total = str(data["id"]), list(data["lines"]), float(data["total"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse(
            {"error": 'send JSON like {"id": "o-1", "lines": [{"sku": "book", "quantity": 1}], "total": 12.5}'},
            status=400,
        )
    if ShopOrder.objects.filter(id=order_id).exists():
        return JsonResponse({"error": "this order exists already"}, status=409)
    try:
        with transaction.atomic():
            order = ShopOrder.objects.create(id=order_id, customer=str(data.get("customer", "")))
            # Written in this transaction: if anything below fails, the run goes with the order,
            # and its first message is published only once the transaction commits.
            order.run_id = wf.trigger(
                order_id, initial_value=Order(id=order_id, skus=[str(line["sku"]) for line in lines], total=total)
            )
            order.save(update_fields=["run_id"])
            for line in lines:
                OrderLine.objects.create(order=order, sku=str(line["sku"]), quantity=int(line["quantity"]))
    except IntegrityError:
        return JsonResponse({"error": "every line needs a quantity above 0: nothing was saved"}, status=400)
    except WorkflowInProgress as exc:
        return JsonResponse(
            {"error": "this order is already being processed", "run_id": exc.context.get("run_id")}, status=409
        )
    return JsonResponse({"id": order.id, "run_id": order.run_id}, status=201)


@require_GET
def show_order(request: HttpRequest, order_id: str) -> JsonResponse:
    order = get_object_or_404(ShopOrder, id=order_id)
    try:
        run = wf.latest(order_id)
    except RecordNotFound:
        return JsonResponse({"id": order.id, "run_id": None})
    return JsonResponse(
        {
            "id": order.id,
            "cancelled": order.cancelled,
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in order.lines.all()],
            "run_id": run.run_id,
            "status": run.status.name,
            "run_state": run.run_state.name,
            "charge_id": run.object.charge_id,
            "tracking_number": run.object.tracking_number,
        }
    )


@csrf_exempt
@require_POST
def cancel_order(request: HttpRequest, order_id: str) -> JsonResponse:
    order = get_object_or_404(ShopOrder, id=order_id)
    try:
        with transaction.atomic():
            wf.cancel(order.run_id, reason="cancelled by the customer")
            order.cancelled = True
            order.save(update_fields=["cancelled"])
    except InvalidRunStateTransition as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"id": order.id, "cancelled": True})
