"""The contract of ``DeadLetterBox``: messages no task could be given.

Subclass ``DeadLetterBoxContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

import pytest

from ...core.dead_letters import DeadLetter
from ...core.ports import RecordStore
from .support import (
    EVERY_BYTE,
    NASTY,
    NASTY_IDS,
    SECOND,
    T0,
    StoreContract,
    letter,
)


class DeadLetterBoxContract(StoreContract):
    """``DeadLetterBox``: kept byte for byte, once per id, listed newest first, discarded."""

    def test_a_dead_letter_keeps_its_bytes_exactly(self, store: RecordStore) -> None:
        kept = letter()
        store.add_dead_letter(kept)
        [found] = store.dead_letters()
        assert found == kept and found.body == EVERY_BYTE and type(found.body) is bytes
        assert found.received_at.tzinfo is not None
        empty = letter("dl-2", body=b"", at=T0 + SECOND)
        store.add_dead_letter(empty)
        assert store.dead_letters(id_prefix="dl-2") == [empty]

    def test_adding_a_dead_letter_twice_keeps_the_first(self, store: RecordStore) -> None:
        store.add_dead_letter(letter(body=b"first"))
        store.add_dead_letter(letter(body=b"second"))
        assert [d.body for d in store.dead_letters()] == [b"first"]
        assert store.count_dead_letters() == 1

    def test_dead_letters_are_listed_newest_first_in_pages_and_filtered(self, store: RecordStore) -> None:
        for i in range(5):
            store.add_dead_letter(letter(f"dl-{i}", queue=f"q{i % 2}", at=T0 + i * SECOND))
        store.add_dead_letter(letter("dl-x", queue="q0", at=T0 + 4 * SECOND))  # same time as dl-4: the id decides
        assert [d.id for d in store.dead_letters()] == ["dl-x", "dl-4", "dl-3", "dl-2", "dl-1", "dl-0"]
        assert [d.id for d in store.dead_letters(limit=2, offset=1)] == ["dl-4", "dl-3"]
        assert [d.id for d in store.dead_letters(queue="q1")] == ["dl-3", "dl-1"]
        assert store.count_dead_letters() == 6 and store.count_dead_letters(queue="q0") == 4
        assert store.count_dead_letters(queue="nowhere") == 0 and store.dead_letters(queue="nowhere") == []

    def test_dead_letters_are_found_by_id_prefix(self, store: RecordStore) -> None:
        store.add_dead_letter(letter("ab12-one"))
        store.add_dead_letter(letter("ab34-two", at=T0 + SECOND))
        store.add_dead_letter(letter("a%_-three", at=T0 + 2 * SECOND))
        assert [d.id for d in store.dead_letters(id_prefix="ab")] == ["ab34-two", "ab12-one"]
        assert [d.id for d in store.dead_letters(id_prefix="ab12")] == ["ab12-one"]
        assert store.count_dead_letters(id_prefix="a%") == 1  # LIKE wildcards are taken literally
        assert store.count_dead_letters(id_prefix="a_") == 0
        assert store.count_dead_letters(queue="onboarding.created", id_prefix="ab") == 2

    def test_discarding_dead_letters_says_how_many_there_were(self, store: RecordStore) -> None:
        for i in range(3):
            store.add_dead_letter(letter(f"dl-{i}", at=T0 + i * SECOND))
        assert store.discard_dead_letters(["dl-0", "dl-2", "dl-2", "unknown"]) == 2
        assert [d.id for d in store.dead_letters()] == ["dl-1"]
        assert store.discard_dead_letters(["dl-0"]) == 0
        assert store.discard_dead_letters([]) == 0
        assert store.count_dead_letters() == 1

    @pytest.mark.parametrize("text", NASTY, ids=NASTY_IDS)
    def test_any_dead_letter_text_is_stored(self, store: RecordStore, text: str) -> None:
        kept = DeadLetter(
            id="dl-1",
            queue=text,
            body=text.encode("utf-8", "surrogatepass"),
            reason=text,
            received_at=T0,
            content_type=text,
            content_encoding=text,
            headers=text,
            worker=text,
        )
        store.add_dead_letter(kept)
        [found] = store.dead_letters()
        assert found == kept and found.body == text.encode("utf-8", "surrogatepass")
        assert "\x00" not in found.reason + found.queue + found.headers and len(found.reason) <= 2000
