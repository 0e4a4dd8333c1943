"""Settings of the shop. The database and the broker come from the environment, with local defaults.

WORKFLOW_CELERY_DATABASE_URL   postgresql+psycopg://127.0.0.1:5432/postgres
CELERY_BROKER_URL              redis://127.0.0.1:6379/0
"""

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from workflow_celery import celeryconfig as _recommended

BASE_DIR = Path(__file__).resolve().parent.parent

# The recommended Celery settings under the CELERY_ prefix; the shop's own follow and win.
globals().update(
    {f"CELERY_{name.upper()}": value for name, value in vars(_recommended).items() if not name.startswith("_")}
)
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

_db = make_url(os.environ.get("WORKFLOW_CELERY_DATABASE_URL", "postgresql+psycopg://127.0.0.1:5432/postgres"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.database,
        "USER": _db.username or "",
        "PASSWORD": _db.password or "",
        "HOST": _db.host or "",
        "PORT": str(_db.port or ""),
    }
}
WORKFLOW_CELERY = {"APP": "orders.workflows", "DATABASE": "default"}

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure: an example, set DJANGO_SECRET_KEY in production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"  # the admin's static files under runserver; 0 in production
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "workflow_celery.contrib.django",
    "orders",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "shop.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
