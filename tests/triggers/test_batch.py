"""OpenRouterBatchTrigger against the emulator (async hook over loopback), and its poll decision."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import Any

import pytest

from airflow_openrouter.batch.watch import BatchEvent
from airflow_openrouter.exceptions import OpenRouterConfigError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger
from tests.batch.support import MODEL, batch_polls, first_event


def submit(n_batches: int = 1, n_requests: int = 1) -> list[str]:
    return [b.id for b in submit_batches(n_batches, n_requests)]


def submit_batches(n_batches: int = 1, n_requests: int = 1) -> list[Any]:
    requests = [
        {"custom_id": f"r{i}", "body": {"messages": [{"role": "user", "content": "hi"}]}}
        for i in range(n_requests)
    ]
    with OpenRouterHook() as hook:
        return [hook.create_batch(model=MODEL, requests=requests) for _ in range(n_batches)]


def trigger_for(batch_ids: list[str], **kwargs: Any) -> OpenRouterBatchTrigger:
    """A trigger polling every 50 ms, 30 s of deadline."""
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
        batch_ids=["batch_1", "batch_2"],
        poll_interval=7,
        deadline=1_900_000_000.0,
        created_at={"batch_1": 1_800_000_000, "batch_9": 1},
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_openrouter.triggers.batch.OpenRouterBatchTrigger"
    assert kwargs == {
        "batch_ids": ["batch_1", "batch_2"],
        "openrouter_conn_id": "openrouter_default",
        "poll_interval": 7.0,
        "deadline": 1_900_000_000.0,
        "max_consecutive_errors": 5,
        "created_at": {"batch_1": 1_800_000_000},  # only the batches it waits for
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


def test_batches_of_known_creation_time_are_polled_through_the_list_never_downloading_results(batch_emu):
    """GET /batches/{id} of a completed batch inlines every result row; the list endpoint never does."""
    batches = submit_batches(2, n_requests=50)
    created_at = {b.id: b.created_at for b in batches}

    event = first_event(trigger_for(list(created_at), created_at=created_at))

    assert event["status"] == "completed"
    assert [b["completed"] for b in event["batches"]] == [50, 50]
    assert batch_emu.requests_to("/batches/{id}", method="GET") == []  # not one GET /batches/{id}
    lists = batch_emu.requests_to("/batches", method="GET")
    assert lists and all(r.query["created_after"] and r.query["created_before"] for r in lists)


def test_a_batch_the_list_does_not_show_is_read_by_id(batch_emu):
    (batch,) = submit_batches()
    created_at = {batch.id: batch.created_at + 10_000}  # a wrong window: the list cannot find it

    assert first_event(trigger_for([batch.id], created_at=created_at))["status"] == "completed"
    assert batch_emu.requests_to("/batches/{id}", method="GET")


def test_every_poll_is_bounded_by_the_deadline_against_a_slow_server(batch_emu):
    (batch_id,) = submit()
    batch_emu.set_latency(4000)  # every answer takes 4 s
    started = time.monotonic()

    event = first_event(
        OpenRouterBatchTrigger(batch_ids=[batch_id], poll_interval=0.05, deadline=time.time() + 0.5)
    )

    assert event["status"] == "timeout" and batch_id in event["reason"]
    assert time.monotonic() - started < 4  # it gave up at its deadline, not when the server answered


@pytest.mark.parametrize("interval", [0, -1, "30", None])
def test_poll_interval_must_be_a_positive_number(interval):
    with pytest.raises(OpenRouterConfigError, match="poll_interval must be a positive number"):
        OpenRouterBatchTrigger(batch_ids=["b"], poll_interval=interval)


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
    assert BatchEvent.from_payload(event).status_of(completed_id) == "completed"


def test_a_batch_that_is_gone_for_good_ends_as_not_found(batch_emu):
    (batch,) = submit_batches()
    with OpenRouterHook() as hook:
        while not hook.get_batch(batch.id).is_terminal:
            time.sleep(0.05)
        hook.delete_batch(batch.id)
    # Created ten minutes ago as far as the trigger knows: past the read-after-write grace.
    event = first_event(trigger_for([batch.id], created_at={batch.id: batch.created_at - 600}))

    assert event["status"] == "not_found"
    assert event["batches"][0]["status"] == "not_found" and "not found" in event["reason"]


def test_on_kill_says_loudly_that_the_batches_keep_running(capsys):
    asyncio.run(OpenRouterBatchTrigger(batch_ids=["batch_9"]).on_kill())

    out = capsys.readouterr().out
    assert "batch_9 keep running" in out and "billed" in out


# --- many triggers in one loop: the shared poller ----------------------------------------------------


async def _run_together(triggers: list[OpenRouterBatchTrigger], until: Any = None) -> list[Any]:
    """Run the triggers as the triggerer does, each in its own task of one loop; their events."""

    async def first(trigger: OpenRouterBatchTrigger) -> Any:
        async for event in trigger.run():
            return event.payload
        return None

    return await asyncio.gather(*(first(t) for t in triggers))


def test_the_triggers_of_one_connection_share_their_list_requests(paused_emu):
    batches = submit_batches(12)
    deadline = time.time() + 60
    triggers = [
        OpenRouterBatchTrigger(
            batch_ids=[b.id], poll_interval=0.5, deadline=deadline, created_at={b.id: b.created_at}
        )
        for b in batches
    ]

    async def main() -> list[Any]:
        async def finish_later() -> None:
            await asyncio.sleep(1.6)  # three or four polls of each trigger, then the batches complete
            paused_emu.advance(3600)

        events, _ = await asyncio.gather(_run_together(triggers), finish_later())
        return events

    events = asyncio.run(main())

    assert [e["status"] for e in events] == ["completed"] * 12
    assert [e["batches"][0]["id"] for e in events] == [b.id for b in batches]  # each its own batch
    lists = paused_emu.requests_to("/batches", method="GET")
    # On their own, 12 triggers polling 4-5 times would send 48-60 requests; together about one a round.
    assert 4 <= len(lists) <= 12, len(lists)
    assert paused_emu.requests_to("/batches/{id}", method="GET") == []


def test_triggers_sharing_the_poller_each_end_on_their_own_terms(batch_emu):
    batch_emu.batch_outcome_next(status="failed", reason="upstream trouble")
    failed, completed = submit_batches(2)
    (slow,) = submit_batches()
    batch_emu.batch_not_found_for(3600)  # the next batch answers 404 for an hour...
    (vanished,) = submit_batches()
    created = {b.id: b.created_at for b in (failed, completed, slow, vanished)}

    def trigger(batch_id: str, deadline_s: float, **kwargs: Any) -> OpenRouterBatchTrigger:
        return OpenRouterBatchTrigger(
            batch_ids=[batch_id], poll_interval=0.05, deadline=time.time() + deadline_s, **kwargs
        )

    events = asyncio.run(
        _run_together(
            [
                trigger(failed.id, 30, created_at={failed.id: created[failed.id]}),
                trigger(completed.id, 30, created_at={completed.id: created[completed.id]}),
                # ... and this one waits for it, with a deadline of its own that passes first.
                trigger(vanished.id, 1.0),
            ]
        )
    )

    assert [e["status"] for e in events] == ["failed", "completed", "timeout"]
    assert "upstream trouble" in events[0]["reason"] and vanished.id in events[2]["reason"]


def test_cancelling_one_trigger_leaves_the_others_waiting(paused_emu):
    a, b = submit_batches(2)

    async def main() -> Any:
        deadline = time.time() + 60
        first = asyncio.create_task(
            _run_together([OpenRouterBatchTrigger(batch_ids=[a.id], poll_interval=0.05, deadline=deadline)])
        )
        second = asyncio.create_task(
            _run_together([OpenRouterBatchTrigger(batch_ids=[b.id], poll_interval=0.05, deadline=deadline)])
        )
        await asyncio.sleep(0.3)
        first.cancel()  # e.g. "Mark failed" on one deferred task
        await asyncio.sleep(0.3)
        polls_before = batch_polls(paused_emu)
        await asyncio.sleep(0.3)
        assert batch_polls(paused_emu) > polls_before  # the other one still polls
        paused_emu.advance(3600)
        return await second

    ((event,),) = [asyncio.run(main())]
    assert event["status"] == "completed" and event["batches"][0]["id"] == b.id


def test_a_waiting_batch_logs_info_only_when_it_moves(paused_emu, caplog, capsys):
    """Issue 11.10: no INFO line per poll, neither the batch's nor the request's."""
    (batch,) = submit_batches()

    async def main() -> Any:
        trigger = OpenRouterBatchTrigger(batch_ids=[batch.id], poll_interval=0.05, deadline=time.time() + 60)

        async def finish_later() -> None:
            await asyncio.sleep(0.8)  # a dozen polls of an unchanged batch
            paused_emu.advance(3600)

        events, _ = await asyncio.gather(_run_together([trigger]), finish_later())
        return events

    with caplog.at_level(logging.DEBUG):
        (event,) = asyncio.run(main())

    assert event["status"] == "completed"
    # The trigger's own lines (Airflow's structured logger, at INFO): one per change of the batch.
    lines = capsys.readouterr().out.splitlines()
    moves = [line for line in lines if f"Batch {batch.id}:" in line]
    assert len(moves) == 2 and "validating" in moves[0] and "completed" in moves[1]
    assert all("[info" in line for line in moves)
    # The requests' per-call lines (the transport's logger): DEBUG, one per poll.
    calls = [r for r in caplog.records if r.getMessage().startswith("OpenRouter GET /batches")]
    assert len(calls) >= 5 and {r.levelno for r in calls} == {logging.DEBUG}
    assert not [line for line in lines if "OpenRouter GET" in line]


def test_triggers_of_different_connections_poll_each_with_its_own_key_and_a_bad_one_fails_alone(
    monkeypatch,
):
    import json

    from airflow_openrouter.testing import OpenRouterEmulator

    keys = {"openrouter_team_a": "sk-or-v1-" + "a1" * 16, "openrouter_team_b": "sk-or-v1-" + "b2" * 16}
    with OpenRouterEmulator(api_keys=list(keys.values()), batch_durations=(0.05, 0.1, 0.05)) as emu:
        for conn_id, key in {**keys, "openrouter_revoked": "sk-or-v1-" + "c3" * 16}.items():
            conn = json.loads(emu.connection_json(max_retries=0))
            conn["password"] = key
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        owner: dict[str, str] = {}
        for conn_id in keys:
            with OpenRouterHook(conn_id) as hook:
                batch_id = hook.create_batch(model=MODEL, requests=[
                    {"custom_id": "r", "body": {"messages": [{"role": "user", "content": "hi"}]}}
                ]).id  # fmt: skip
            owner[batch_id] = conn_id
        (a, b) = owner
        emu.clear_requests()

        events = asyncio.run(
            _run_together(
                [
                    trigger_for([a], openrouter_conn_id="openrouter_team_a"),
                    trigger_for([b], openrouter_conn_id="openrouter_team_b"),
                    trigger_for([a], openrouter_conn_id="openrouter_revoked"),
                ]
            )
        )

        assert [e["status"] for e in events] == ["completed", "completed", "error"]
        assert "401" in events[2]["reason"]
        polls = emu.requests_to("/batches/{id}", method="GET")
        assert polls
        for poll in polls:  # each batch is read only with its own connection's key (or the revoked one)
            batch_id = poll.path.rsplit("/", 1)[-1]
            sent_key = poll.headers["authorization"].removeprefix("Bearer ")
            assert sent_key in (keys[owner[batch_id]], "sk-or-v1-" + "c3" * 16)
            if batch_id == b:
                assert sent_key == keys["openrouter_team_b"]
