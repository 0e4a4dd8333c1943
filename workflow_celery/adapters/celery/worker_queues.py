"""Which queues a worker of an app with workflows consumes: ``-Q`` and ``-X`` patterns, and no ``-Q`` at all.

- ``-Q`` patterns are replaced by the queues they match; a pattern that
  matches nothing stops the worker with the list of known queues.
- ``-X`` takes the same patterns: ``-Q 'wf.*' -X 'wf.hooks.*'`` runs steps only.
- No ``-Q``: every queue of every workflow, besides what Celery consumes by
  default (the ``celery`` queue, or the app's ``task_queues``), so a plain
  ``celery -A app worker`` runs everything the app has.

Celery selects queues in the worker's constructor, before its bootsteps are
made, and forgets the ``-X`` names it did not know. So a ``celeryd_init``
handler notes the options as given, and a worker bootstep — constructed after
Celery's own selection and before the consumer exists — corrects the selection
through the public ``Queues`` API, checks the time limits and gives the worker
a consumer that keeps undeliverable messages (``consumer``).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import click
from celery import Celery, bootsteps
from celery.exceptions import ImproperlyConfigured

from ...core.errors import ConfigurationError
from .consumer import consumer_class
from .dead_letters import DeadLetterBox
from .queues import as_list, expand_queue_patterns, is_pattern, known_queues
from .registry import all_queues, registry

log = logging.getLogger(__name__)

_requested: weakref.WeakKeyDictionary[Any, tuple[list[str], list[str]]] = weakref.WeakKeyDictionary()
"""Worker -> its ``-Q`` and ``-X`` names as given, noted by ``note_requested_queues``."""


def note_requested_queues(worker: Any, options: Any) -> None:
    """Keep the ``queues`` and ``exclude_queues`` options of a worker being made (from ``celeryd_init``)."""
    options = options if isinstance(options, dict) else {}
    _requested[worker] = (as_list(options.get("queues")), as_list(options.get("exclude_queues")))


def select_queues(app: Celery, requested: list[str] | None, excluded: list[str]) -> list[str]:
    """Make ``app.amqp.queues`` consume what ``-Q requested -X excluded`` mean; return the queue names.

    ``requested`` is None when the worker was given no ``-Q``. Raises
    ``ConfigurationError`` for a pattern that matches nothing, or when
    nothing is left to consume.
    """
    queues = app.amqp.queues
    for name in all_queues(app):
        # Declared exactly as a publisher's router creates them, so bindings match.
        if name not in queues:
            queues.add(queues.new_missing(name))
    consuming = queues.consume_from
    if requested is None:
        # Celery's own ``select`` was not called: the default set is being consumed; add the workflows to it.
        for name in all_queues(app):
            queues.select_add(queues[name])
    else:
        for name in [n for n in consuming if is_pattern(n)]:
            # Celery took the pattern for a queue name and made a queue of it; put the matches in its place.
            consuming.pop(name, None)
            queues.pop(name, None)
        known = known_queues(app)
        for name in expand_queue_patterns([n for n in requested if is_pattern(n)], known):
            queues.select_add(queues[name])
    if excluded:
        queues.deselect(expand_queue_patterns(excluded, known_queues(app)))
    selected = list(queues.consume_from)
    if not selected:
        raise ConfigurationError(
            f"-Q {','.join(requested or []) or '(all)'} -X {','.join(excluded)} leaves no queue to consume"
        )
    return selected


class UnknownQueues(click.BadParameter, ImproperlyConfigured):  # type: ignore[misc]
    """A ``-Q`` or ``-X`` pattern that matches no queue of the app.

    ``celery worker`` shows it as the usage error it is, one line and exit
    status 2, instead of a traceback; a worker made in code gets Celery's
    ``ImproperlyConfigured``.
    """


class WorkflowQueues(bootsteps.Step):  # type: ignore[misc]
    """Selects the worker's queues and gives it a consumer that keeps undeliverable messages aside.

    Everything happens in the constructor: Celery constructs every worker
    bootstep after selecting queues and before any step creates the consumer.
    """

    label = "workflow queues"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        app: Celery = worker.app
        if not registry(app):
            return
        from .worker import check_time_limits  # worker.py installs this step: imported here, not at the top

        check_time_limits(app)
        noted = _requested.get(worker)
        if noted is not None:
            requested: list[str] | None = noted[0] or None
            excluded = noted[1]
        else:
            # A worker made without the command line sends no celeryd_init: take what Celery selected (its
            # ``_consume_from`` stays None when nothing was), with no exclusions.
            selected_by_celery = getattr(app.amqp.queues, "_consume_from", None) is not None
            requested = list(app.amqp.queues.consume_from) if selected_by_celery else None
            excluded = []
        try:
            selected = select_queues(app, requested, excluded)
        except ConfigurationError as exc:
            raise UnknownQueues(str(exc), param_hint="'-Q' / '-X'") from None
        log.info("workflow-celery: consuming queues %s", ", ".join(selected))
        worker.consumer_cls = consumer_class(worker.consumer_cls, DeadLetterBox(app, worker.hostname))
