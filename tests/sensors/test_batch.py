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
        task_id="wait", batch_ids=batch_ids, **{"poke_interval": 0.05, "timeout": 30, **kwargs}
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


@pytest.mark.parametrize("batch_ids", [None, "", [""], [3]])
def test_batch_ids_must_be_ids(batch_ids):
    with pytest.raises(ValueError, match="batch_ids must be"):
        sensor(batch_ids).poke(context())


@pytest.mark.parametrize("deferrable", [False, True])
def test_an_empty_list_of_batch_ids_has_nothing_to_wait_for(batch_emu, deferrable):
    """What an upstream operator with no items pushes: the sensor must not fail on it."""
    result = sensor([], deferrable=deferrable).execute(context())

    assert result == {"batch_ids": [], "batches": [], "usage": {}}
    assert batch_emu.requests_to("/batches/{id}") == []


def test_poke_mode_keeps_one_watch_so_a_wrong_batch_id_fails_after_the_grace(batch_emu, monkeypatch):
    from airflow_openrouter.batch import watch

    monkeypatch.setattr(watch, "NOT_FOUND_GRACE_S", 0.3)
    waiting = sensor("batch_doesnotexist")  # poke mode, timeout=30

    with pytest.raises(AirflowFailException, match=r"batch_doesnotexist: not found for more than 0\.3 s"):
        waiting.execute(context())
    assert len(batch_emu.requests_to("/batches/{id}")) >= 2  # several pokes, one watch


def test_reschedule_mode_counts_the_grace_from_the_first_reschedule(batch_emu):
    """Each poke of reschedule mode is a new process: the grace counts from when the sensor started."""
    from datetime import datetime, timedelta, timezone

    class RescheduledTaskInstance(FakeTaskInstance):
        def get_first_reschedule_date(self, context: Any) -> datetime:
            return datetime.now(tz=timezone.utc) - timedelta(minutes=10)

    waiting = sensor("batch_doesnotexist", mode="reschedule")

    with pytest.raises(AirflowFailException, match="not found"):
        waiting.poke({"ti": RescheduledTaskInstance(run_id="sensor")})


def test_a_poke_is_bounded_by_the_time_left_to_the_sensor_timeout(batch_emu):
    batch_id = submit()
    batch_emu.set_latency(4000)
    started = time.monotonic()

    with pytest.raises(AirflowSensorTimeout, match="deadline passed"):
        sensor(batch_id, timeout=0.5).execute(context())
    assert time.monotonic() - started < 4  # not held by the slow answer


def test_deferrable_mode_hands_the_creation_times_it_saw_to_the_trigger(batch_emu):
    batch_id = submit()
    with OpenRouterHook() as hook:
        created_at = hook.get_batch(batch_id).created_at

    with pytest.raises(TaskDeferred) as deferred:
        sensor(batch_id, deferrable=True).execute(context())

    assert deferred.value.trigger.created_at == {batch_id: created_at}  # polled through the list from now on


@pytest.mark.parametrize("interval", [0, -5])
def test_poll_interval_must_be_positive(interval):
    from airflow_openrouter.exceptions import OpenRouterConfigError

    with pytest.raises(OpenRouterConfigError, match="poll_interval"):
        sensor("b", poll_interval=interval)


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


def test_an_error_event_from_the_trigger_is_a_retryable_error_even_with_soft_fail():
    """Resumed the way Airflow resumes it (resume_execution, which turns errors into skips under
    soft_fail): a failed poll is no verdict on the batches."""
    from airflow_openrouter.exceptions import OpenRouterError

    event = {"status": "error", "batches": [{"id": "b", "status": "in_progress"}], "reason": "HTTP 401"}
    with pytest.raises(OpenRouterError, match="HTTP 401") as info:
        sensor(["b"], soft_fail=True).resume_execution("execute_complete", {"event": event}, context())
    assert not isinstance(info.value, (AirflowFailException, AirflowSkipException))


def test_a_failed_batch_event_is_skipped_with_soft_fail_when_resumed():
    event = {
        "status": "failed",
        "batches": [{"id": "b", "status": "failed"}],
        "reason": "1 batch(es) failed.",
    }
    with pytest.raises(AirflowSkipException):
        sensor(["b"], soft_fail=True).resume_execution("execute_complete", {"event": event}, context())


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_connection_without_a_key_fails_the_sensor_even_with_soft_fail_never_skips_it(
    batch_emu, monkeypatch, deferrable
):
    """A missing key is no verdict on the batches, like a rejected one: soft_fail must not turn a
    misconfigured connection into a skip (downstream tasks would be skipped as if the batch had failed)."""
    import json

    from airflow_openrouter.exceptions import OpenRouterMissingKeyError

    batch_id = submit()
    connection = json.loads(batch_emu.connection_json())
    connection.pop("password")
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_NOKEY", json.dumps(connection))
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    waiting = sensor(batch_id, deferrable=deferrable, soft_fail=True, openrouter_conn_id="openrouter_nokey")

    with pytest.raises(OpenRouterMissingKeyError) as info:
        waiting.execute(context())
    assert not isinstance(info.value, AirflowSkipException)
