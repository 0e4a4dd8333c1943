from django.urls import path

from . import views

urlpatterns = [
    path("", views.place_order, name="place-order"),
    path("<str:order_id>/", views.show_order, name="show-order"),
    path("<str:order_id>/cancel/", views.cancel_order, name="cancel-order"),
]
