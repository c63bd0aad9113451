"""The poll decision (BatchWatch) and the event it ends with, without I/O: an injected clock, typed inputs."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_openrouter.batch.watch import LATE_LOOK_S, BatchEvent, BatchSnapshot, BatchWatch
from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterNotFoundError,
    OpenRouterPaymentRequiredError,
    OpenRouterServerError,
)
from airflow_openrouter.types import Batch
from tests.batch.support import FakeClock


def batch(batch_id: str, status: str, **fields: Any) -> Batch:
    return Batch.model_validate({"id": batch_id, "status": status, **fields})


def not_found() -> OpenRouterNotFoundError:
    return OpenRouterNotFoundError("Batch job b not found.", status=404)


def test_watch_waits_until_every_batch_is_finished_and_names_the_worst():
    watch = BatchWatch(["a", "b", "c"])
    watch.observe(batch("a", "completed"))
    watch.observe(batch("b", "in_progress"))
    assert watch.outcome() is None and watch.pending_ids() == ["b", "c"]

    watch.observe(batch("b", "cancelled"))
    watch.observe(batch("c", "expired", error={"message": "window passed"}))

    event = watch.outcome()
    assert event is not None and event.status == "expired"
    assert event.reason == "1 batch(es) expired: c: window passed."
    assert event.ended_without_results() == ["b", "c"]


def test_observe_says_whether_state_or_counts_changed():
    watch = BatchWatch(["a"])
    assert watch.observe(batch("a", "in_progress", request_counts={"total": 5, "completed": 1}))
    assert not watch.observe(batch("a", "in_progress", request_counts={"total": 5, "completed": 1}))
    assert watch.observe(batch("a", "in_progress", request_counts={"total": 5, "completed": 2}))


def test_watch_treats_402_as_finished_with_results_withheld():
    watch = BatchWatch(["a"])
    watch.observe_error("a", OpenRouterPaymentRequiredError("no credits", status=402))

    event = watch.outcome()
    assert event is not None and event.status == "completed"
    assert event.error_of("a") == "no credits"


def test_a_404_ends_as_not_found_only_after_the_grace_period():
    clock = FakeClock()
    watch = BatchWatch(["a"], not_found_grace_s=60, clock=clock)
    watch.observe_error("a", not_found())
    clock.now += 59
    watch.observe_error("a", not_found())
    assert watch.outcome() is None

    clock.now += 2
    watch.observe_error("a", not_found())
    event = watch.outcome()
    assert event is not None and event.status == "not_found"
    assert event.ended_without_results() == ["a"] and "not this workspace's" in (event.reason or "")


def test_the_404_grace_of_a_batch_counts_from_its_creation():
    """A re-attach (a fresh watch) long after creation must not wait the grace out again."""
    clock = FakeClock()
    watch = BatchWatch(
        ["a", "b"], created_at={"a": int(clock.now) - 600, "b": int(clock.now) - 5}, clock=clock
    )
    watch.observe_error("a", not_found())
    watch.observe_error("b", not_found())

    assert watch.snapshot("a").status == "not_found"
    assert watch.snapshot("b").status == "unknown"  # just created: read-after-write lag


def test_the_404_grace_of_a_batch_of_unknown_age_counts_from_when_watching_started():
    clock = FakeClock()
    watch = BatchWatch(["a"], not_found_since=clock.now - 600, clock=clock)
    watch.observe_error("a", not_found())

    assert watch.snapshot("a").status == "not_found"


def test_watch_fails_at_once_on_an_error_that_waiting_will_not_fix():
    watch = BatchWatch(["a"])
    watch.observe_error("a", OpenRouterAuthenticationError("bad key", status=401))

    event = watch.outcome()
    assert event is not None and event.status == "error" and "bad key" in (event.reason or "")


def test_watch_never_times_out_before_every_batch_was_polled():
    clock = FakeClock()
    watch = BatchWatch(["a", "b"], deadline=clock.now - 1, clock=clock)
    assert watch.outcome() is None

    watch.observe(batch("a", "in_progress"))
    assert watch.outcome() is None
    watch.observe_error("b", OpenRouterServerError("502", status=502))

    event = watch.outcome()
    assert event is not None and event.status == "timeout"


def test_a_round_cut_by_the_deadline_counts_as_polled():
    clock = FakeClock()
    watch = BatchWatch(["a"], deadline=clock.now + 3, clock=clock)
    clock.now += 3
    watch.observe_cut(["a"])

    event = watch.outcome()
    assert event is not None and event.status == "timeout"


def test_the_round_budget_is_the_time_left_and_one_late_look_past_the_deadline():
    clock = FakeClock()
    assert BatchWatch(["a"], clock=clock).round_budget() is None
    assert BatchWatch(["a"], deadline=clock.now + 3, clock=clock).round_budget() == 3
    late = BatchWatch(["a"], deadline=clock.now - 100, clock=clock)
    assert late.round_budget() == LATE_LOOK_S


def test_watch_resets_the_error_count_after_a_good_poll():
    watch = BatchWatch(["a"], max_consecutive_errors=2)
    for _ in range(3):
        watch.observe_error("a", OpenRouterServerError("502", status=502))
        watch.observe(batch("a", "in_progress"))
    assert watch.outcome() is None


def test_an_event_survives_the_trip_through_its_payload():
    event = BatchEvent(
        "failed",
        (BatchSnapshot("a", "completed", 2, 2, 0), BatchSnapshot("b", "failed", error="bad body")),
        {"cost": 0.5},
        "1 batch(es) failed: b: bad body.",
    )

    assert BatchEvent.from_payload(event.to_payload()) == event
    assert event.status_of("b") == "failed" and event.error_of("b") == "bad body"
    assert event.status_of("missing") == "unknown"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"status": "success", "batches": []},
        {"status": "completed"},
        {"status": "completed", "batches": [1]},
    ],
)
def test_a_missing_or_unknown_event_is_an_error_never_a_success(payload):
    with pytest.raises(Exception, match="batch trigger"):
        BatchEvent.from_payload(payload, batch_ids=["a"])
