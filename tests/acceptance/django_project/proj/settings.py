"""Settings: the database and broker come from the environment the tests give."""

import os

from sqlalchemy.engine import make_url

from workflow_celery import celeryconfig as _recommended

# The recommended Celery settings under the CELERY_ prefix, as docs/django.md shows; ours follow.
globals().update(
    {f"CELERY_{name.upper()}": value for name, value in vars(_recommended).items() if not name.startswith("_")}
)

_db = make_url(os.environ["WORKFLOW_CELERY_DATABASE_URL"])

SECRET_KEY = "not-secret: a test project"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "shop",
    "workflow_celery.contrib.django",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.database,
        "USER": _db.username or "",
        "HOST": _db.host or "",
        "PORT": str(_db.port or ""),
    }
}
USE_TZ = True
CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
WORKFLOW_CELERY = {"APP": "shop.workflows"}
