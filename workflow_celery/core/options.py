"""Step and workflow options: frozen dataclasses validated on creation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from .errors import ConfigurationError

DEFAULT_ERR_BACKOFF = timedelta(seconds=1)
DEFAULT_MAX_BACKOFF = timedelta(minutes=5)
DEFAULT_PAUSE_AFTER_ERR_COUNT = 0
DEFAULT_REDELIVER_AFTER = timedelta(seconds=30)
DEFAULT_MAX_REDELIVER_INTERVAL = timedelta(minutes=10)
DEFAULT_RELAY_INTERVAL = timedelta(seconds=1)
DEFAULT_AUTO_RESUME_AFTER = timedelta(hours=1)
DEFAULT_HOOK_ERR_BACKOFF = timedelta(seconds=1)
DEFAULT_HOOK_MAX_BACKOFF = timedelta(minutes=5)
DEFAULT_MAX_RETRY_COUNTDOWN = timedelta(seconds=60)
DEFAULT_PUBLISH_TIMEOUT = timedelta(seconds=1)
DEFAULT_LAG_ALERT = timedelta(minutes=30)


def _check_positive(name: str, value: timedelta | None, workflow: str) -> None:
    if value is not None and value <= timedelta(0):
        raise ConfigurationError(f"option {name} must be positive, got {value}", workflow=workflow)


@dataclass(frozen=True, slots=True)
class StepOptions:
    """Per-step overrides; ``None`` means "use the workflow default"."""

    err_backoff: timedelta | None = None
    pause_after_err_count: int | None = None
    parallel_count: int | None = None
    max_backoff: timedelta | None = None
    consume_lag: timedelta | None = None
    """The step runs a run only once it has been at the status this long (its doorbell is due then)."""
    lag_alert: timedelta | None = None
    """Alert when a run has waited longer than this at the status (``timedelta(0)``: never)."""

    @classmethod
    def from_kwargs(cls, workflow: str, status: str, kwargs: Mapping[str, Any]) -> StepOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown step option(s) {', '.join(unknown)} for status {status}; "
                f"known options: {', '.join(sorted(known))}",
                workflow=workflow,
            )
        opts = cls(**kwargs)
        opts.validate(workflow)
        return opts

    def validate(self, workflow: str) -> None:
        for name in ("err_backoff", "max_backoff", "consume_lag", "lag_alert"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, timedelta):
                raise ConfigurationError(f"option {name} must be a timedelta, got {value!r}", workflow=workflow)
        for name in ("pause_after_err_count", "parallel_count"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigurationError(f"option {name} must be an int, got {value!r}", workflow=workflow)
        _check_positive("err_backoff", self.err_backoff, workflow)
        _check_positive("max_backoff", self.max_backoff, workflow)
        if self.pause_after_err_count is not None and self.pause_after_err_count < 0:
            raise ConfigurationError("option pause_after_err_count must be >= 0", workflow=workflow)
        if self.parallel_count is not None and self.parallel_count < 1:
            raise ConfigurationError("option parallel_count must be >= 1", workflow=workflow)
        for name in ("consume_lag", "lag_alert"):
            value = getattr(self, name)
            if value is not None and value < timedelta(0):
                raise ConfigurationError(f"option {name} must not be negative", workflow=workflow)


@dataclass(frozen=True, slots=True)
class WorkflowOptions:
    """Options given to ``Builder.build(app, store, **options)``."""

    err_backoff: timedelta = DEFAULT_ERR_BACKOFF
    max_backoff: timedelta = DEFAULT_MAX_BACKOFF
    pause_after_err_count: int = DEFAULT_PAUSE_AFTER_ERR_COUNT
    redeliver_after: timedelta = DEFAULT_REDELIVER_AFTER
    """A doorbell not answered within this time is rung again (lost or stuck message)."""
    max_redeliver_interval: timedelta = DEFAULT_MAX_REDELIVER_INTERVAL
    relay_interval: timedelta = DEFAULT_RELAY_INTERVAL
    auto_resume_after: timedelta | None = DEFAULT_AUTO_RESUME_AFTER
    """Paused runs are resumed after this long; ``None`` keeps them paused until resumed by hand."""
    hook_err_backoff: timedelta = DEFAULT_HOOK_ERR_BACKOFF
    """Base of the exponential backoff between attempts of a failing hook."""
    hook_max_backoff: timedelta = DEFAULT_HOOK_MAX_BACKOFF
    max_retry_countdown: timedelta = DEFAULT_MAX_RETRY_COUNTDOWN
    """Retries due within this long go through the broker (Celery's ``Task.retry`` with a countdown);
    later ones wait in the database until the relay publishes them. Keep it well under Redis'
    ``visibility_timeout``; ``timedelta(0)`` keeps every retry in the database."""
    publish_timeout: timedelta = DEFAULT_PUBLISH_TIMEOUT
    """How long publishing after a commit may wait on each broker operation before it gives up and leaves the
    doorbells to the relay: a broker that accepts connections but does not answer never holds the caller longer."""
    lag_alert: timedelta | None = DEFAULT_LAG_ALERT
    """Alert (a metric and a log line) when a run has waited longer than this at a status with a step;
    ``None`` never alerts. A step's ``lag_alert`` option overrides it."""
    metrics: Any = None
    """Receives hook execution metrics; default: Prometheus (``workflow_celery.adapters.prometheus``)."""
    custom_delete: Callable[[Any], Any] | None = None
    """``fn(obj) -> obj`` scrubbing personal data on ``delete_data`` (default: the type's default value)."""

    @classmethod
    def from_kwargs(cls, workflow: str, kwargs: Mapping[str, Any]) -> WorkflowOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown build option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}",
                workflow=workflow,
            )
        opts = cls(**kwargs)
        for name in (
            "err_backoff",
            "max_backoff",
            "redeliver_after",
            "max_redeliver_interval",
            "relay_interval",
            "hook_err_backoff",
            "hook_max_backoff",
            "publish_timeout",
        ):
            value = getattr(opts, name)
            if not isinstance(value, timedelta):
                raise ConfigurationError(f"option {name} must be a timedelta, got {value!r}", workflow=workflow)
            _check_positive(name, value, workflow)
        if opts.lag_alert is not None:
            if not isinstance(opts.lag_alert, timedelta):
                raise ConfigurationError(
                    f"option lag_alert must be a timedelta, got {opts.lag_alert!r}", workflow=workflow
                )
            _check_positive("lag_alert", opts.lag_alert, workflow)
        if not isinstance(opts.max_retry_countdown, timedelta) or opts.max_retry_countdown < timedelta(0):
            raise ConfigurationError(
                f"option max_retry_countdown must be a timedelta >= 0, got {opts.max_retry_countdown!r}",
                workflow=workflow,
            )
        if opts.auto_resume_after is not None and not isinstance(opts.auto_resume_after, timedelta):
            raise ConfigurationError("option auto_resume_after must be a timedelta or None", workflow=workflow)
        _check_positive("auto_resume_after", opts.auto_resume_after, workflow)
        if opts.custom_delete is not None and not callable(opts.custom_delete):
            raise ConfigurationError("option custom_delete must be callable", workflow=workflow)
        if opts.pause_after_err_count < 0:
            raise ConfigurationError("option pause_after_err_count must be >= 0", workflow=workflow)
        return opts
