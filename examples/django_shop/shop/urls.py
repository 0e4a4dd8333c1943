from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/", include("orders.urls")),
    # The web UI for runs: staff only, through the admin's login.
    path("workflows/", include("workflow_celery.contrib.django.ui")),
]
