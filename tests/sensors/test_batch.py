"""OpenRouterBatchSensor against the emulator: what a poke decides, soft_fail, and deferral.

The three modes run end to end in tests/operators/test_batch_pipeline.py (dag.test())."""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_openrouter._compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.sensors.batch import OpenRouterBatchSensor
from tests.batch.support import MODEL, FakeTaskInstance, first_event

REQUESTS = [{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}]


def submit() -> str:
    with OpenRouterHook() as hook:
        return hook.create_batch(model=MODEL, requests=REQUESTS).id


def wait_until_finished(batch_id: str) -> None:
    with OpenRouterHook() as hook:
        while not hook.get_batch(batch_id).is_terminal:
            time.sleep(0.05)


def sensor(batch_ids: Any, **kwargs: Any) -> OpenRouterBatchSensor:
    return OpenRouterBatchSensor(
        task_id="wait", batch_ids=batch_ids, poke_interval=0.05, timeout=30, **kwargs
    )


def context() -> dict[str, Any]:
    return {"ti": FakeTaskInstance(run_id="sensor")}


def test_poke_is_false_while_running_then_returns_counts_and_usage(openrouter_emulator):
    batch_id = submit()  # the plugin's emulator runs batches on a manual clock
    waiting = sensor(batch_id)
    assert waiting.poke(context()) is False

    openrouter_emulator.advance(60)
    result = waiting.execute(context())

    assert result["batch_ids"] == [batch_id]
    assert result["batches"] == [
        {"id": batch_id, "status": "completed", "total": 1, "completed": 1, "failed": 0}
    ]
    assert result["usage"]["cost"] > 0


@pytest.mark.parametrize("outcome", ["failed", "expired", "cancelled"])
def test_a_batch_that_does_not_complete_fails_with_the_reason(batch_emu, outcome):
    batch_emu.batch_outcome_next(status=outcome, reason="quota exhausted upstream")
    batch_id = submit()

    with pytest.raises(AirflowFailException, match=f"{outcome}: {batch_id}: quota exhausted upstream"):
        sensor([batch_id]).execute(context())


@pytest.mark.parametrize("deferrable", [False, True])
def test_soft_fail_skips_instead_of_failing(batch_emu, deferrable):
    batch_emu.batch_outcome_next(status="failed")
    batch_id = submit()
    wait_until_finished(batch_id)

    with pytest.raises(AirflowSkipException):
        sensor([batch_id], soft_fail=True, deferrable=deferrable).execute(context())


def test_deferrable_mode_defers_to_the_batch_trigger_and_resumes(batch_emu):
    batch_id = submit()
    waiting = sensor([batch_id], deferrable=True)

    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute(context())
    trigger = deferred.value.trigger
    assert trigger.batch_ids == [batch_id]
    assert trigger.poll_interval == 0.2  # [openrouter] poll_interval (tests/conftest.py), as the operator

    result = waiting.execute_complete(context(), first_event(trigger))
    assert result["batches"][0]["status"] == "completed"


def test_deferrable_mode_does_not_defer_for_finished_batches(batch_emu):
    batch_id = submit()
    wait_until_finished(batch_id)

    result = sensor(batch_id, deferrable=True).execute(context())

    assert result["batch_ids"] == [batch_id]


def test_a_trigger_timeout_is_a_sensor_timeout():
    event = {"status": "timeout", "batches": [{"id": "b", "status": "in_progress"}], "reason": "deadline"}
    with pytest.raises(AirflowSensorTimeout, match="deadline"):
        sensor(["b"]).execute_complete(context(), event)


def test_batch_ids_must_be_given():
    with pytest.raises(ValueError, match="batch_ids must be"):
        sensor([]).poke(context())


@pytest.mark.parametrize("deferrable", [False, True])
def test_an_unpollable_batch_is_a_retryable_error_not_a_skip(batch_emu, deferrable):
    """A rejected key is no verdict on the batch: the task fails retryably, even with soft_fail."""
    from airflow_openrouter.exceptions import OpenRouterError

    batch_id = submit()
    batch_emu.fail_next(route="/batches/{id}", status=401, times=100)
    waiting = sensor(batch_id, deferrable=deferrable, soft_fail=True)

    with pytest.raises(OpenRouterError, match="401") as info:
        waiting.execute(context())
    assert not isinstance(info.value, (AirflowSkipException, AirflowFailException))


def test_an_error_event_from_the_trigger_is_a_retryable_error():
    from airflow_openrouter.exceptions import OpenRouterError

    event = {"status": "error", "batches": [{"id": "b", "status": "in_progress"}], "reason": "HTTP 401"}
    with pytest.raises(OpenRouterError, match="HTTP 401") as info:
        sensor(["b"], soft_fail=True).execute_complete(context(), event)
    assert not isinstance(info.value, AirflowFailException)
