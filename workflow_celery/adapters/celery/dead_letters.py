"""Where a worker puts what it cannot hand to any task: the store of the workflow that owns the queue.

A message on a queue of no workflow (Celery's ``celery`` queue, say) goes to the
store of the first workflow built on the app, so one worker never loses what it
could not deliver, whichever queue it came from. Keeping a letter never
raises: when the store cannot take it, the bytes are written to the log
instead, and the worker goes on.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery

from ...core.dead_letters import DeadLetter
from .registry import registry, workflow_of_task

log = logging.getLogger(__name__)

MAX_LOGGED_BODY = 64 * 1024
"""Bytes of an undeliverable message written to the log when the store cannot keep it."""


def describe(exc: BaseException) -> str:
    """An exception as one short line: its type and message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DeadLetterBox:
    """Keeps undeliverable messages of one app's worker in its workflows' stores."""

    def __init__(self, app: Celery, worker: str = "") -> None:
        self.app = app
        self.worker = worker

    def keep_bytes(self, queue: str, raw: bytes, reason: str) -> None:
        """Keep bytes that were read from ``queue`` but are not a message at all."""
        self._keep(queue, raw, reason)

    def keep_message(self, message: Any, queue: str, reason: str) -> None:
        """Keep a broker message (a ``kombu.Message``): its body, content type, encoding and headers."""
        self._keep(
            queue,
            _body_bytes(getattr(message, "body", b"")),
            reason,
            content_type=getattr(message, "content_type", None) or "",
            content_encoding=getattr(message, "content_encoding", None) or "",
            headers=_headers_text(getattr(message, "headers", None)),
        )

    def _keep(self, queue: str, body: bytes, reason: str, **fields: str) -> None:
        workflows = registry(self.app)
        wf = workflow_of_task(self.app, queue) or next(iter(workflows.values()), None)
        try:
            if wf is None:
                raise LookupError("no workflow is built on this app")
            letter = DeadLetter(
                id=str(uuid.uuid4()),
                queue=queue,
                body=body,
                reason=reason,
                received_at=wf.clock.now(),
                worker=self.worker,
                **fields,
            )
            wf.store.add_dead_letter(letter)
        except Exception as exc:
            logged = base64.b64encode(body[:MAX_LOGGED_BODY]).decode("ascii")
            log.critical(
                "could not keep an undeliverable message from queue %s as a dead letter (%s); it is dropped. "
                "Why it could not be delivered: %s. Its %d bytes (the first %d, base64): %s",
                queue,
                describe(exc),
                reason,
                len(body),
                min(len(body), MAX_LOGGED_BODY),
                logged,
                extra={"queue": queue},
            )
            return
        log.error(
            "kept an undeliverable message from queue %s as dead letter %s: %s (workflow-celery dead-letters show %s)",
            queue,
            letter.id,
            reason,
            letter.id[:8],
            extra={"queue": queue, "dead_letter": letter.id},
        )


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    # A transport that handed over something else (a JSON value in a Redis envelope): its JSON text.
    return json.dumps(body, default=repr).encode("utf-8")


def _headers_text(headers: Any) -> str:
    if headers is None:
        return ""
    if isinstance(headers, Mapping):
        try:
            return json.dumps(dict(headers), default=repr, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):  # keys that are not strings, or that cannot be sorted
            pass
    try:
        return repr(headers)
    except Exception:
        return f"<unprintable {type(headers).__name__}>"
