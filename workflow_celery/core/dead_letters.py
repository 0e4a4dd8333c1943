"""Dead letters: what arrived on a queue and could not be handed to any task, kept for an operator.

A worker that receives something it cannot deliver to task code — bytes that
are not a message, a body that does not decode, a content type it does not
accept, a message without the headers of a task, a task nobody registered —
keeps it aside in the store, exactly as it arrived, and goes on with the next
message. An operator lists, inspects and discards dead letters
(``workflow-celery dead-letters``); nothing is ever redelivered on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .text import MAX_NAME_LENGTH, MAX_REASON_LENGTH, storable_text

MAX_HEADERS_TEXT = 20_000
"""Characters kept of a dead letter's headers (JSON text)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message kept aside: its bytes as received, where and when it arrived, and why it was kept.

    ``body`` is the message body as the broker delivered it (for bytes that
    were not a message at all, everything that was read). ``headers`` is the
    message's headers as JSON text, empty when it had none.
    """

    id: str
    queue: str
    body: bytes
    reason: str
    received_at: datetime
    content_type: str = ""
    content_encoding: str = ""
    headers: str = ""
    worker: str = ""
    """The node name of the worker that kept it aside."""

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        # Whatever the message carried, every store can keep it (see ``text``); the body stays bytes.
        object.__setattr__(self, "body", bytes(self.body))
        object.__setattr__(self, "queue", storable_text(self.queue, limit=MAX_NAME_LENGTH))
        object.__setattr__(self, "reason", storable_text(self.reason, limit=MAX_REASON_LENGTH))
        object.__setattr__(self, "content_type", storable_text(self.content_type, limit=MAX_NAME_LENGTH))
        object.__setattr__(self, "content_encoding", storable_text(self.content_encoding, limit=MAX_NAME_LENGTH))
        object.__setattr__(self, "headers", storable_text(self.headers, limit=MAX_HEADERS_TEXT))
        object.__setattr__(self, "worker", storable_text(self.worker, limit=MAX_NAME_LENGTH))
