"""OpenRouterBatchTrigger against the emulator (async hook over loopback), and its poll decision."""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import pytest

from airflow_openrouter.batch.events import BatchEvent, BatchWatch
from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterNotFoundError,
    OpenRouterPaymentRequiredError,
    OpenRouterServerError,
)
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger
from airflow_openrouter.types import Batch
from tests.batch.support import MODEL, batch_polls, first_event


def submit(n_batches: int = 1) -> list[str]:
    requests = [{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}]
    with OpenRouterHook() as hook:
        return [hook.create_batch(model=MODEL, requests=requests).id for _ in range(n_batches)]


def trigger_for(batch_ids: list[str], **kwargs: Any) -> OpenRouterBatchTrigger:
    return OpenRouterBatchTrigger(
        batch_ids=batch_ids, poll_interval=0.05, deadline=time.time() + 30, **kwargs
    )


def rebuilt(trigger: OpenRouterBatchTrigger) -> OpenRouterBatchTrigger:
    """The trigger as the triggerer rebuilds it: from its classpath and serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**kwargs)


# --- serialization ---------------------------------------------------------------------------------


def test_serialize_carries_only_ids_and_plain_values_and_the_absolute_deadline(batch_emu):
    trigger = OpenRouterBatchTrigger(
        batch_ids=["batch_1", "batch_2"], poll_interval=7, deadline=1_900_000_000.0
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_openrouter.triggers.batch.OpenRouterBatchTrigger"
    assert kwargs == {
        "batch_ids": ["batch_1", "batch_2"],
        "openrouter_conn_id": "openrouter_default",
        "poll_interval": 7.0,
        "deadline": 1_900_000_000.0,
        "max_consecutive_errors": 5,
    }
    assert batch_emu.api_key not in repr(kwargs)
    assert rebuilt(trigger).serialize() == (classpath, kwargs)


def test_a_re_created_trigger_keeps_the_deadline_but_polls_once_before_timing_out(paused_emu):
    (batch_id,) = submit()  # the paused emulator never finishes it on its own
    trigger = OpenRouterBatchTrigger(batch_ids=[batch_id], poll_interval=0.05, deadline=time.time() - 1)

    event = first_event(rebuilt(trigger))  # e.g. after a triggerer restart, past the deadline

    assert event["status"] == "timeout"
    assert batch_id in event["reason"] and "keep running" in event["reason"]
    assert batch_polls(paused_emu) == 1  # looked once, then gave up: the deadline is not restarted


def test_a_trigger_past_its_deadline_reports_batches_that_already_finished(paused_emu):
    (batch_id,) = submit()
    paused_emu.advance(3600)
    trigger = OpenRouterBatchTrigger(batch_ids=[batch_id], poll_interval=0.05, deadline=time.time() - 1)

    assert first_event(rebuilt(trigger))["status"] == "completed"


# --- polling ---------------------------------------------------------------------------------------


def test_emits_one_completed_event_with_counts_and_usage_for_all_batches(batch_emu):
    batch_ids = submit(2)

    async def all_events() -> list[Any]:
        return [event async for event in trigger_for(batch_ids).run()]

    (event,) = asyncio.run(all_events())
    payload = event.payload
    assert payload["status"] == "completed" and payload["reason"] is None
    assert [b["id"] for b in payload["batches"]] == batch_ids
    assert all(b["status"] == "completed" and b["completed"] == 1 for b in payload["batches"])
    assert payload["usage"]["cost"] > 0 and payload["usage"]["total_tokens"] > 0
    assert "results" not in str(payload)  # never downloads results
    assert batch_emu.requests_to("/batches/*/results") == []


def test_transient_poll_errors_are_tolerated(batch_emu, monkeypatch):
    for name, value in batch_emu.connection_env(max_retries=0).items():
        monkeypatch.setenv(name, value)
    (batch_id,) = submit()
    batch_emu.fail_next(route="/batches/{id}", status=503, times=3, method="GET")

    assert first_event(trigger_for([batch_id]))["status"] == "completed"


def test_the_404_right_after_creation_is_tolerated(batch_emu):
    batch_emu.batch_not_found_for(0.5)
    (batch_id,) = submit()

    assert first_event(trigger_for([batch_id]))["status"] == "completed"


def test_polling_that_keeps_failing_ends_with_an_error_event(batch_emu, monkeypatch):
    for name, value in batch_emu.connection_env(max_retries=0).items():
        monkeypatch.setenv(name, value)
    (batch_id,) = submit()
    batch_emu.fail_next(route="/batches/{id}", status=503, times=10, method="GET")

    event = first_event(trigger_for([batch_id], max_consecutive_errors=3))

    assert event["status"] == "error" and "failed 3 times in a row" in event["reason"]


@pytest.mark.parametrize("outcome", ["failed", "expired", "cancelled"])
def test_a_batch_that_does_not_complete_gives_its_status_and_reason(batch_emu, outcome):
    batch_emu.batch_outcome_next(status=outcome, reason="upstream trouble")
    failed_id = submit()[0]
    completed_id = submit()[0]

    event = first_event(trigger_for([completed_id, failed_id]))

    assert event["status"] == outcome
    assert f"{failed_id}: upstream trouble" in event["reason"]
    assert BatchEvent.parse(event).status_of(completed_id) == "completed"


def test_on_kill_says_loudly_that_the_batches_keep_running(capsys):
    asyncio.run(OpenRouterBatchTrigger(batch_ids=["batch_9"]).on_kill())

    out = capsys.readouterr().out
    assert "batch_9 keep running" in out and "billed" in out


# --- the poll decision, without I/O ----------------------------------------------------------------


def batch(batch_id: str, status: str, **fields: Any) -> Batch:
    return Batch.model_validate({"id": batch_id, "status": status, **fields})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watch_waits_until_every_batch_is_finished_and_names_the_worst():
    watch = BatchWatch(["a", "b", "c"])
    watch.observe(batch("a", "completed"))
    watch.observe(batch("b", "in_progress"))
    assert watch.outcome() is None and watch.pending_ids() == ["b", "c"]

    watch.observe(batch("b", "cancelled"))
    watch.observe(batch("c", "expired", error={"message": "window passed"}))

    event = watch.outcome()
    assert event is not None and event["status"] == "expired"
    assert "c: window passed" in event["reason"]


def test_watch_treats_402_as_finished_with_results_withheld():
    watch = BatchWatch(["a"])
    watch.observe_error("a", OpenRouterPaymentRequiredError("no credits", status=402))

    event = watch.outcome()
    assert event is not None and event["status"] == "completed"
    assert BatchEvent.parse(event).payment_required


def test_watch_gives_up_on_a_404_only_after_the_grace_period():
    clock = Clock()
    watch = BatchWatch(["a"], not_found_grace_s=60, clock=clock)
    watch.observe_error("a", OpenRouterNotFoundError("gone", status=404))
    clock.now += 59
    watch.observe_error("a", OpenRouterNotFoundError("gone", status=404))
    assert watch.outcome() is None

    clock.now += 2
    watch.observe_error("a", OpenRouterNotFoundError("gone", status=404))
    event = watch.outcome()
    assert event is not None and event["status"] == "error"


def test_watch_fails_at_once_on_an_error_that_waiting_will_not_fix():
    watch = BatchWatch(["a"])
    watch.observe_error("a", OpenRouterAuthenticationError("bad key", status=401))

    event = watch.outcome()
    assert event is not None and event["status"] == "error" and "bad key" in event["reason"]


def test_watch_never_times_out_before_every_batch_was_polled():
    clock = Clock()
    watch = BatchWatch(["a", "b"], deadline=clock.now - 1, clock=clock)
    assert watch.outcome() is None

    watch.observe(batch("a", "in_progress"))
    assert watch.outcome() is None
    watch.observe_error("b", OpenRouterServerError("502", status=502))

    event = watch.outcome()
    assert event is not None and event["status"] == "timeout"


def test_watch_resets_the_error_count_after_a_good_poll():
    watch = BatchWatch(["a"], max_consecutive_errors=2)
    for _ in range(3):
        watch.observe_error("a", OpenRouterServerError("502", status=502))
        watch.observe(batch("a", "in_progress"))
    assert watch.outcome() is None


@pytest.mark.parametrize("event", [None, {}, {"status": "success", "batches": []}, {"status": "completed"}])
def test_a_missing_or_unknown_event_is_an_error_never_a_success(event):
    with pytest.raises(Exception, match="batch trigger"):
        BatchEvent.parse(event, batch_ids=["a"])
