"""The contract of ``Claims``: at most one attempt at a doorbell's work at a time.

Subclass ``ClaimsContract`` and override its ``store`` fixture, as :mod:`workflow_celery.testing.contract` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ...core.ports import RecordStore
from ...core.run_state import RunState
from .support import (
    HOUR,
    MINUTE,
    SECOND,
    T0,
    StoreContract,
    err,
    ids,
    moved,
    msg,
    rec,
    run_threads,
)


class ClaimsContract(StoreContract):
    """``Claims``: at most one attempt at a doorbell's work at a time, released, renewed, abandoned."""

    def test_claim_reads_the_run_and_takes_the_doorbell(self, store: RecordStore) -> None:
        r = rec()
        bell = msg(r)
        store.insert_run(r, [bell])
        claim = store.claim(bell.id, "run-1", 1, "token-a", T0, T0 + MINUTE)
        assert claim.claimed and not claim.abandoned and claim.failures == 0
        assert claim.record == store.lookup("run-1")
        assert claim.doorbell == replace(bell, claimed_until=T0 + MINUTE)
        assert store.outbox() == [replace(bell, claimed_until=T0 + MINUTE)]
        # Nobody else takes it while the claim lasts, and the relay leaves it alone.
        busy = store.claim(bell.id, "run-1", 1, "token-b", T0 + SECOND, T0 + HOUR)
        assert not busy.claimed and busy.doorbell is not None and busy.doorbell.claimed_until == T0 + MINUTE
        assert store.claim_due_outbox(T0 + SECOND, limit=5, redeliver_after=SECOND, max_interval=SECOND) == []
        # An expired claim that was never released is an abandoned attempt.
        late = store.claim(bell.id, "run-1", 1, "token-c", T0 + MINUTE, T0 + 2 * MINUTE)
        assert late.claimed and late.abandoned

    def test_claim_refuses_other_versions_missing_rows_and_unknown_runs(self, store: RecordStore) -> None:
        r = rec()
        bell = msg(r)
        store.insert_run(r, [bell])
        stale = store.claim(bell.id, "run-1", 2, "t", T0, T0 + MINUTE)
        assert not stale.claimed and stale.record == store.lookup("run-1") and stale.doorbell == bell
        missing = store.claim("run-1.7", "run-1", 1, "t", T0, T0 + MINUTE)
        assert not missing.claimed and missing.doorbell is None and missing.record is not None
        unknown = store.claim("nobody.1", "nobody", 1, "t", T0, T0 + MINUTE)
        assert unknown.record is None and unknown.doorbell is None and not unknown.claimed
        any_version = store.claim(bell.id, "run-1", None, "t", T0, T0 + MINUTE)  # hooks do not check the version
        assert any_version.claimed

    def test_claim_takes_only_the_next_attempt(self, store: RecordStore) -> None:
        r = rec()
        bell = msg(r)
        store.insert_run(r, [bell])
        assert not store.claim(bell.id, "run-1", 1, "t", T0, T0 + MINUTE, attempt=2).claimed
        assert store.claim(bell.id, "run-1", 1, "t", T0, T0 + MINUTE, attempt=1).claimed
        assert store.record_failure(bell.id, "t", "run-1", 1, err(), due_at=T0 + SECOND, retries=1) == 1
        # A late copy of the first attempt cannot skip the backoff of the second.
        assert not store.claim(bell.id, "run-1", 1, "u", T0, T0 + MINUTE, attempt=1).claimed
        assert store.claim(bell.id, "run-1", 1, "u", T0, T0 + MINUTE, attempt=2).claimed

    def test_release_claim_only_by_its_holder(self, store: RecordStore) -> None:
        r = rec()
        bell = msg(r, due_at=T0 + MINUTE)
        store.insert_run(r, [bell])
        assert store.claim(bell.id, "run-1", 1, "mine", T0, T0 + HOUR).claimed
        assert store.release_claim(bell.id, "not-mine") is False
        assert store.release_claim(bell.id, "mine", due_at=T0 + SECOND) is True
        assert store.outbox() == [replace(bell, due_at=T0 + SECOND)]
        assert store.release_claim(bell.id, "mine") is False  # already let go
        again = store.claim(bell.id, "run-1", 1, "next", T0, T0 + HOUR)
        assert again.claimed and not again.abandoned  # a released claim is not an abandoned attempt
        assert store.release_claim(bell.id, "next")
        assert store.outbox() == [replace(bell, due_at=T0 + SECOND)]

    def test_renew_claims_extends_claims_and_slots_never_shortens(self, store: RecordStore) -> None:
        r = rec()
        held, free = msg(r, kind="hook", id="held"), msg(r, kind="hook", id="free")
        store.insert_run(r, [held, free])
        assert store.claim("held", "run-1", None, "t", T0, T0 + MINUTE).claimed
        assert store.acquire_slot("wf", 1, 1, "held", T0, T0 + MINUTE)
        store.renew_claims(["held", "free", "unknown"], T0 + HOUR)
        by_id = {m.id: m for m in store.outbox()}
        assert by_id["held"].claimed_until == T0 + HOUR and by_id["free"].claimed_until is None
        store.renew_claims(["held"], T0 + 2 * MINUTE)
        assert {m.id: m for m in store.outbox()}["held"].claimed_until == T0 + HOUR
        assert not store.acquire_slot("wf", 1, 1, "other", T0 + 30 * MINUTE, T0 + HOUR)  # the slot was renewed too
        store.renew_claims([], T0 + HOUR)

    def test_abandon_claim_makes_the_doorbell_due_and_the_attempt_counted(self, store: RecordStore) -> None:
        r = rec()
        bell = msg(r, due_at=T0 + HOUR)
        store.insert_run(r, [bell])
        assert store.claim(bell.id, "run-1", 1, "dead", T0, T0 + HOUR).claimed
        store.abandon_claim(bell.id, T0 + SECOND)
        assert [
            m.id for m in store.claim_due_outbox(T0 + SECOND, limit=5, redeliver_after=MINUTE, max_interval=HOUR)
        ] == [bell.id]
        claim = store.claim(bell.id, "run-1", 1, "next", T0 + SECOND, T0 + HOUR)
        assert claim.claimed and claim.abandoned
        store.abandon_claim("unknown", T0)

    def test_replace_doorbell_swaps_it_only_for_its_holder(self, store: RecordStore) -> None:
        r = rec()
        timers = msg(r, id="run-1.1.timers")
        store.insert_run(r, [timers])
        timeouts = [msg(r, id=f"run-1.1.timeout.{i}", due_at=T0 + i * HOUR) for i in range(2)]
        assert store.replace_doorbell(timers.id, "nobody", timeouts) is False
        assert store.claim(timers.id, "run-1", 1, "t", T0, T0 + MINUTE).claimed
        assert store.replace_doorbell(timers.id, "t", timeouts) is True
        assert sorted(ids(store.outbox())) == sorted(ids(timeouts))
        assert store.replace_doorbell(timers.id, "t", timeouts) is False  # gone
        assert store.claim(timeouts[0].id, "run-1", 1, "u", T0, T0 + MINUTE).claimed
        assert store.replace_doorbell(timeouts[0].id, "u", []) is True
        assert ids(store.outbox()) == [timeouts[1].id]

    def test_concurrent_claims_of_one_doorbell_have_one_winner(
        self, store: RecordStore, open_store: Callable[[], RecordStore]
    ) -> None:
        r = rec()
        bell = msg(r)
        store.insert_run(r, [bell])
        stores = [open_store() for _ in range(8)]
        results = run_threads(8, lambda i: stores[i].claim(bell.id, "run-1", 1, f"t{i}", T0, T0 + MINUTE).claimed)
        assert results.count(True) == 1 and results.count(False) == 7, results

    def test_an_attempt_running_across_an_operators_write_keeps_the_run_until_it_ends(self, store: RecordStore) -> None:
        r = rec()
        running, idle = msg(r), msg(r, id="run-1.1.resume")
        store.insert_run(r, [running, idle])
        assert store.claim(running.id, "run-1", 1, "token-a", T0, T0 + MINUTE).claimed
        paused = moved(r, run_state=RunState.PAUSED)
        assert store.update_run(paused, 1, [], keep_running=True)
        [kept] = store.outbox("run-1")  # a doorbell nobody works on goes, as with any write
        assert (kept.id, kept.kind, kept.claimed_until) == (running.id, "superseded", T0 + MINUTE)
        resumed = moved(paused, run_state=RunState.RUNNING)
        again = msg(resumed)
        hook = msg(resumed, kind="hook", id="run-1.hook")
        assert store.update_run(resumed, 2, [again, hook], keep_running=True)
        # The step rung again waits for the attempt that still runs; the run's hooks do not.
        assert not store.claim(again.id, "run-1", 3, "token-b", T0 + 3 * SECOND, T0 + MINUTE).claimed
        assert store.claim(hook.id, "run-1", None, "token-h", T0 + 3 * SECOND, T0 + MINUTE).claimed
        # The relay leaves the running attempt's doorbell alone while its claim lives.
        due = store.claim_due_outbox(T0 + 3 * SECOND, limit=5, redeliver_after=SECOND, max_interval=SECOND)
        assert ids(due) == [again.id]
        assert store.replace_doorbell(running.id, "token-a", [])  # the attempt ended: its result was superseded
        assert store.claim(again.id, "run-1", 3, "token-b", T0 + 4 * SECOND, T0 + MINUTE).claimed

    @staticmethod
    def _paused_and_resumed_while_running(store: RecordStore) -> tuple[str, str]:
        """Run-1's step claimed by ``token-a``, then paused and resumed by an operator: (its id, the new one's)."""
        r = rec()
        running = msg(r)
        store.insert_run(r, [running])
        assert store.claim(running.id, "run-1", 1, "token-a", T0, T0 + MINUTE).claimed
        paused = moved(r, run_state=RunState.PAUSED)
        assert store.update_run(paused, 1, [], keep_running=True, reset_errors=True)
        resumed = moved(paused, run_state=RunState.RUNNING)
        again = msg(resumed)
        assert store.update_run(resumed, 2, [again], keep_running=True, reset_errors=True)
        return running.id, again.id

    def test_a_superseded_attempt_that_fails_counts_nothing_and_lets_go(self, store: RecordStore) -> None:
        running, again = self._paused_and_resumed_while_running(store)
        # Its failure is discarded with its result: the resumed run keeps its whole error budget.
        late = err("late", at=T0 + SECOND)
        assert store.record_failure(running, "token-a", "run-1", 1, late, due_at=T0 + HOUR, retries=1) is None
        assert store.errors("run-1") == [] and ids(store.outbox("run-1")) == [again]
        assert store.claim(again, "run-1", 3, "token-b", T0 + 2 * SECOND, T0 + MINUTE).claimed

    def test_a_superseded_attempt_whose_claim_expired_no_longer_holds_the_run(self, store: RecordStore) -> None:
        _, again = self._paused_and_resumed_while_running(store)
        # Its process died: once the claim expires, the run's step is claimed again.
        assert store.claim(again, "run-1", 3, "token-b", T0 + MINUTE + SECOND, T0 + HOUR).claimed

    def test_a_write_by_the_attempt_itself_keeps_nothing(self, store: RecordStore) -> None:
        r = rec()
        running, timers = msg(r), msg(r, id="run-1.1.timers")
        store.insert_run(r, [running, timers])
        assert store.claim(running.id, "run-1", 1, "token-a", T0, T0 + MINUTE).claimed
        assert store.claim(timers.id, "run-1", 1, "token-t", T0, T0 + MINUTE).claimed
        nxt = moved(r, status=2)
        assert store.update_run(nxt, 1, [msg(nxt)])
        assert ids(store.outbox("run-1")) == ["run-1.2"]
        assert store.claim("run-1.2", "run-1", 2, "token-b", T0 + SECOND, T0 + MINUTE).claimed
