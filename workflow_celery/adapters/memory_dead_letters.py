"""The dead-letter box of ``MemoryStore``: messages no task could be given, kept in a dict."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..core.dead_letters import DeadLetter


class MemoryDeadLetters:
    """The ``DeadLetterBox`` role, in memory and thread-safe."""

    def __init__(self) -> None:
        self._dead_letters_lock = threading.Lock()
        self._dead_letters: dict[str, DeadLetter] = {}

    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._dead_letters_lock:
            self._dead_letters.setdefault(letter.id, letter)

    def _matching_dead_letters(self, queue: str | None, id_prefix: str | None) -> list[DeadLetter]:
        return [
            letter
            for letter in self._dead_letters.values()
            if (queue is None or letter.queue == queue) and (id_prefix is None or letter.id.startswith(id_prefix))
        ]

    def dead_letters(
        self, *, queue: str | None = None, id_prefix: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[DeadLetter]:
        with self._dead_letters_lock:
            found = self._matching_dead_letters(queue, id_prefix)
        found.sort(key=lambda letter: (letter.received_at, letter.id), reverse=True)
        return found[offset : offset + limit]

    def count_dead_letters(self, *, queue: str | None = None, id_prefix: str | None = None) -> int:
        with self._dead_letters_lock:
            return len(self._matching_dead_letters(queue, id_prefix))

    def discard_dead_letters(self, ids: Sequence[str]) -> int:
        with self._dead_letters_lock:
            return sum(self._dead_letters.pop(letter_id, None) is not None for letter_id in set(ids))
