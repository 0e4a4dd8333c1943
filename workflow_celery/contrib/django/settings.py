"""``settings.WORKFLOW_CELERY``: the app's settings, read when used (Django's test runner may change them)."""

from __future__ import annotations

from typing import Any

from ...core.errors import ConfigurationError

SETTING = "WORKFLOW_CELERY"
KEYS = {"APP": "the module that builds your workflows", "DATABASE": "the alias in DATABASES of their tables"}


def _config() -> dict[str, Any]:
    from django.conf import settings

    config: Any = getattr(settings, SETTING, None)
    if config is None:
        return {}
    if not isinstance(config, dict) or any(not isinstance(config.get(key, ""), str) for key in KEYS):
        raise ConfigurationError(
            f'settings.{SETTING} must be a dict like {{"APP": "shop.workflows", "DATABASE": "default"}}, got {config!r}'
        )
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        known = ", ".join(f"{key} ({meaning})" for key, meaning in KEYS.items())
        raise ConfigurationError(f"settings.{SETTING} has unknown keys {unknown}: it takes {known}")
    return config


def app_module() -> str | None:
    """``settings.WORKFLOW_CELERY["APP"]``, the module that builds the project's workflows (None if unset).

    Raises ``ConfigurationError`` when the setting is not a dict of strings with known keys.
    """
    return _config().get("APP") or None


def database_alias() -> str:
    """``settings.WORKFLOW_CELERY["DATABASE"]``: the ``DATABASES`` alias of the workflow tables (``"default"``).

    Raises ``ConfigurationError`` as ``app_module`` does.
    """
    return _config().get("DATABASE") or "default"
