"""The shop's own rows: an order and its lines. Its run lives in the workflow's tables, in the same database."""

from django.db import models


class ShopOrder(models.Model):
    id = models.CharField(max_length=64, primary_key=True)
    customer = models.CharField(max_length=200, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    cancelled = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.id


class OrderLine(models.Model):
    order = models.ForeignKey(ShopOrder, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(quantity__gt=0), name="order_line_quantity_positive")]
