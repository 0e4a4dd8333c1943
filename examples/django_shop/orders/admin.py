from django.contrib import admin

from .models import OrderLine, ShopOrder


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0


@admin.register(ShopOrder)
class ShopOrderAdmin(admin.ModelAdmin):
    list_display = ("id", "customer", "run_id", "cancelled")
    inlines = [OrderLineInline]
