"""Never paying twice: re-attaching on retries and clears, lost POST answers proven before adoption
(never a sibling's batch), batches that vanish, the deadline. The batch operator against the emulator."""

# ruff: noqa: F811  (fixtures imported from tests.batch.support)

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_openrouter._compat import AirflowFailException, TaskDeferred
from airflow_openrouter.batch import batch_api
from airflow_openrouter.batch.state import BatchRecord, SubmittedBatch
from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterPaymentRequiredError,
)
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    FakeTaskInstance,
    batch_emu,
    batch_emulator,
    batch_polls,
    batch_posts,
    context,
    first_event,
    fresh_emu,
    paused_emu,
    paused_emulator,
    read_rows,
    record_file,
    run_operator,
    sent_ids,
    summarise,
    wait_until_finished,
)


def all_batch_ids() -> list[str]:
    with OpenRouterHook() as hook:
        return [b.id for b in hook.list_batches(limit=100).data]


def test_a_retry_after_submission_re_attaches_without_a_second_post(batch_emu, context):
    with pytest.raises(TaskDeferred) as first_try:
        summarise().execute(context)  # the worker dies while deferred: no execute_complete

    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert len(batch_posts(batch_emu)) == 1
    assert manifest["batch_ids"] == first_try.value.trigger.batch_ids
    assert manifest["counts"]["succeeded"] == 6


def test_every_request_carries_the_run_tag_and_rows_keep_the_item_ids(batch_emu, context):
    manifest = run_operator(summarise(id_field="id"), context)

    (post,) = batch_posts(batch_emu)
    tags = {r["custom_id"].split("~")[1] for r in post["requests"]}
    assert len(tags) == 1 and len(tags.pop()) == 10
    assert sent_ids(batch_emu) == [[f"doc-{i}" for i in range(6)]]
    assert set(read_rows(manifest["output_uri"])) == {f"doc-{i}" for i in range(6)}


# --- a POST /batches whose answer is lost ----------------------------------------------------------


def test_a_lost_answer_is_adopted_once_its_results_prove_it_is_ours(fresh_emu, context, capsys):
    fresh_emu.drop_answer_next(route="/batches", method="POST")  # created, then the answer is cut

    with pytest.raises(OpenRouterError, match="may be the one it created") as first_try:
        run_operator(summarise(), context)
    assert not isinstance(first_try.value, AirflowFailException)  # retryable: a retry looks again
    (created,) = all_batch_ids()
    assert created in str(first_try.value)

    wait_until_finished([created])
    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert len(batch_posts(fresh_emu)) == 1  # adopted, never paid twice
    assert manifest["batch_ids"] == [created] and manifest["counts"]["succeeded"] == 6
    assert f"Adopting batch {created}" in capsys.readouterr().out


def test_sibling_map_indexes_never_adopt_each_others_same_sized_batch(paused_emu, tmp_path, monkeypatch):
    """Map index 1 loses its POST answer while map index 0's batch has the same model and size: both
    are candidates, and only the one whose results carry map index 1's run tag is adopted."""
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")

    def mapped(map_index: int) -> dict[str, Any]:
        ti = FakeTaskInstance(run_id="mapped")
        ti.map_index = map_index
        return {"ti": ti}

    def operator(map_index: int) -> Any:
        items = [{"text": f"map {map_index} doc {i}"} for i in range(4)]  # same ids, same size
        return summarise(items=items, poll_interval=0.05)

    sibling, ours = mapped(0), mapped(1)
    with pytest.raises(TaskDeferred) as sibling_deferred:
        operator(0).execute(sibling)
    (sibling_batch,) = sibling_deferred.value.trigger.batch_ids
    paused_emu.drop_answer_next(route="/batches", method="POST")
    with pytest.raises(OpenRouterError, match="may be the one it created") as unproven:
        operator(1).execute(ours)
    (our_batch,) = set(all_batch_ids()) - {sibling_batch}
    assert sibling_batch in str(unproven.value) and our_batch in str(unproven.value)  # both named

    paused_emu.advance(3600)  # both complete: their results now tell whose they are
    ours["ti"].try_number = 2
    manifest = run_operator(operator(1), ours)
    sibling_manifest = operator(0).execute_complete(sibling, first_event(sibling_deferred.value.trigger))

    assert len(batch_posts(paused_emu)) == 2  # nothing submitted a third time
    assert manifest["batch_ids"] == [our_batch] and sibling_manifest["batch_ids"] == [sibling_batch]
    assert manifest["counts"]["succeeded"] == 4 and sibling_manifest["counts"]["succeeded"] == 4


def test_a_lost_post_that_created_nothing_never_adopts_a_finished_look_alike(fresh_emu, context):
    lookalike = summarise(items=[{"text": f"other {i}"} for i in range(6)])
    other = run_operator(lookalike, {"ti": FakeTaskInstance(run_id="another run")})
    fresh_emu.drop_connection_next(route="/batches", method="POST")  # dropped before creating anything

    with pytest.raises(OpenRouterConnectionError):
        run_operator(summarise(), context)
    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert len(all_batch_ids()) == 2  # the look-alike, and ours
    assert manifest["batch_ids"] != other["batch_ids"]
    assert manifest["counts"]["succeeded"] == 6


def test_a_refused_submission_fails_without_retries_and_leaves_no_lost_post_behind(
    batch_emu, context, capsys
):
    body = {"error": {"code": 401, "message": "No auth credentials found."}}
    batch_emu.fail_next(route="/batches", status=401, method="POST", body=body)

    with pytest.raises(OpenRouterAuthenticationError, match="nothing was submitted or billed") as failed:
        run_operator(summarise(), context)
    assert isinstance(failed.value, AirflowFailException)  # a retry would be refused the same way
    assert json.loads(record_file(context).read_text())["pending"] is None  # OpenRouter created nothing

    context["ti"].try_number = 2  # the key fixed, the task cleared
    manifest = run_operator(summarise(), context)

    assert manifest["counts"]["succeeded"] == 6
    assert "may have created" not in capsys.readouterr().out  # no lost batch looked for


def _crash_around_post(monkeypatch: pytest.MonkeyPatch, *, after_post: bool) -> None:
    """The worker dies while POST /batches is in flight: before it reached OpenRouter, or after."""
    create = OpenRouterHook.create_batch

    def crash(self: OpenRouterHook, **kwargs: Any) -> Any:
        if after_post:
            create(self, **kwargs)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(OpenRouterHook, "create_batch", crash)


@pytest.mark.parametrize("after_post", [True, False])
def test_a_retry_after_a_crash_mid_post_pays_once(fresh_emu, context, monkeypatch, after_post):
    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="worker lost"):
        _crash_around_post(patched, after_post=after_post)
        run_operator(summarise(), context)
    wait_until_finished(all_batch_ids())

    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert len(batch_posts(fresh_emu)) == 1
    assert manifest["counts"]["succeeded"] == 6


def test_running_look_alikes_of_a_lost_post_fail_retryably_naming_them(paused_emu, context, monkeypatch):
    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="worker lost"):
        _crash_around_post(patched, after_post=False)
        run_operator(summarise(), context)
    requests = [
        {"custom_id": str(i), "body": {"messages": [{"role": "user", "content": "x"}]}} for i in range(6)
    ]
    with OpenRouterHook() as hook:  # e.g. another run of the same task, same size, same model
        lookalikes = [hook.create_batch(model=MODEL, requests=requests).id for _ in range(2)]

    context["ti"].try_number = 2
    with pytest.raises(OpenRouterError, match="shows only in its results") as unproven:
        run_operator(summarise(), context)
    assert all(batch_id in str(unproven.value) for batch_id in lookalikes)
    assert not isinstance(unproven.value, AirflowFailException)
    assert len(batch_posts(paused_emu)) == 2  # nothing submitted while it cannot be told

    paused_emu.advance(3600)  # they finish: their custom ids are not this run's
    context["ti"].try_number = 3
    with pytest.raises(TaskDeferred) as deferred:
        summarise(poll_interval=0.05).execute(context)
    paused_emu.advance(3600)
    manifest = summarise().execute_complete(context, first_event(deferred.value.trigger))

    assert len(batch_posts(paused_emu)) == 3
    assert not set(manifest["batch_ids"]) & set(lookalikes) and manifest["counts"]["succeeded"] == 6


# --- the record ------------------------------------------------------------------------------------


def test_changed_inputs_are_submitted_afresh(batch_emu, context, capsys):
    run_operator(summarise(), context)
    run_operator(summarise(prompt="Shorter: {{ item.text }}"), context)

    assert len(batch_posts(batch_emu)) == 2
    assert "The inputs changed since batch(es)" in capsys.readouterr().out


class TaskStateStore:
    """Airflow 3.3's task state store as a task sees it; ``clear()`` is what clear_on_success does."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self.values[key] = json.loads(json.dumps(value))

    def clear(self) -> None:
        self.values.clear()


def test_a_clear_after_success_re_attaches_even_when_the_task_state_was_deleted(batch_emu, context):
    store = TaskStateStore()
    context["task_state_store"] = store
    run_operator(summarise(), context)
    assert store.values  # the record went to the task state store ...
    assert record_file(context).exists()  # ... and beside the results

    store.clear()  # [state_store] clear_on_success = True, when the task succeeded
    context["ti"].try_number = 2  # a later clear of the task, same inputs
    manifest = run_operator(summarise(), context)

    assert len(batch_posts(batch_emu)) == 1
    assert manifest["counts"]["succeeded"] == 6


def test_payment_required_then_a_retry_fetches_the_same_results_without_resubmitting(batch_emu, context):
    batch_emu.batch_payment_required_until_credits()

    with pytest.raises(
        OpenRouterPaymentRequiredError, match=r"Add credits.*retry the task.*without submitting"
    ):
        run_operator(summarise(), context)

    batch_emu.add_credits(10)
    manifest = run_operator(summarise(), context)
    assert manifest["counts"]["succeeded"] == 6
    assert len(batch_posts(batch_emu)) == 1


def test_wait_for_completion_false_returns_the_batch_ids(batch_emu, context):
    result = summarise(wait_for_completion=False).execute(context)

    assert len(batch_posts(batch_emu)) == 1
    assert len(result["batch_ids"]) == 1 and result["batch_ids"][0].startswith("batch_")
    assert result["total"] == 6 and result["model"] == MODEL
    assert context["ti"].xcoms["batch_ids"] == result["batch_ids"]


# --- batches that vanish ---------------------------------------------------------------------------


def _age_the_record(context: dict[str, Any], seconds: float) -> None:
    record = record_file(context)
    saved = json.loads(record.read_text())
    for batch in saved["batches"]:
        batch["created_at"], batch["expires_at"] = int(time.time() - seconds), None
    record.write_text(json.dumps(saved))


def test_a_recorded_batch_that_is_gone_for_good_is_resubmitted_by_the_next_try(batch_emu, context, capsys):
    first = run_operator(summarise(), context)
    (gone,) = first["batch_ids"]
    with OpenRouterHook() as hook:
        hook.delete_batch(gone)  # deleted on openrouter.ai, say
    _age_the_record(context, 600)  # well past the read-after-write grace

    context["ti"].try_number = 2  # a clear of the task
    manifest = run_operator(summarise(), context)

    assert sent_ids(batch_emu) == [[str(i) for i in range(6)]] * 2
    assert gone not in manifest["batch_ids"] and manifest["counts"]["succeeded"] == 6
    assert f"Batch(es) {gone} ended without results (not_found" in capsys.readouterr().out


def test_a_batch_that_vanishes_while_waited_for_fails_retryably_and_only_its_items_go_again(
    batch_emu, context, monkeypatch
):
    from airflow_openrouter.batch import spool, watch

    monkeypatch.setattr(watch, "NOT_FOUND_GRACE_S", 0.0)
    monkeypatch.setitem(spool.RequestSpool.__init__.__kwdefaults__, "max_requests", 3)  # two batches
    with pytest.raises(TaskDeferred) as deferred:
        summarise().execute(context)
    vanished, kept = deferred.value.trigger.batch_ids
    wait_until_finished([vanished])
    with OpenRouterHook() as hook:
        hook.delete_batch(vanished)

    with pytest.raises(OpenRouterError, match=r"not found.*resubmits only the items") as failed:
        summarise().execute_complete(context, first_event(deferred.value.trigger))
    assert not isinstance(failed.value, AirflowFailException)
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    assert {rows[str(i)]["status"] for i in range(3)} == {"missing"}
    assert context["ti"].xcoms["return_value"]["status"] == "not_found"

    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert sent_ids(batch_emu)[2:] == [["0", "1", "2"]]
    assert kept in manifest["batch_ids"] and manifest["counts"]["succeeded"] == 6


# --- the deadline ----------------------------------------------------------------------------------


def test_a_timeout_fails_naming_the_batches_and_a_retry_re_attaches(paused_emu, context):
    operator = summarise(timeout=0, poll_interval=0.05)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    event = first_event(deferred.value.trigger)
    assert event["status"] == "timeout"
    assert batch_polls(paused_emu) >= 1  # it looked before giving up

    with pytest.raises(OpenRouterError, match=r"keep running on OpenRouter.*Batch ids: batch_") as failed:
        operator.execute_complete(context, event)
    assert not isinstance(failed.value, AirflowFailException)  # retryable

    paused_emu.advance(3600)  # the batch finishes while the task waits for its retry
    context["ti"].try_number = 2
    manifest = run_operator(summarise(timeout=0, poll_interval=0.05), context)

    assert len(batch_posts(paused_emu)) == 1
    assert manifest["batch_ids"] == deferred.value.trigger.batch_ids
    assert manifest["counts"]["succeeded"] == 6


def test_a_re_attach_long_after_the_deadline_looks_once_and_does_not_defer(batch_emu, context):
    run_operator(summarise(), context)
    _age_the_record(context, 97 * 3600)  # the task is cleared four days later
    polls = batch_polls(batch_emu)

    context["ti"].try_number = 2
    manifest = summarise().execute(context)  # no TaskDeferred: the batch finished long ago

    assert manifest["counts"]["succeeded"] == 6
    assert batch_polls(batch_emu) <= polls + 2  # one round: the list, then the batch by id
    assert len(batch_posts(batch_emu)) == 1


def test_the_default_deadline_follows_expires_at_else_created_at_and_the_24_hour_window(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)

    def record(**times: Any) -> BatchRecord:
        return BatchRecord("f", MODEL, 1, [SubmittedBatch("b", ((0, 1),), **times)])

    created = record(created_at=990_000)
    expiring = record(created_at=990_000, expires_at=1_200_000)  # e.g. Vertex: longer than 24 h
    expired = record(created_at=990_000, expires_at=990_500)
    unknown = record()

    assert batch_api.deadline(created, None, 5) == 990_000 + 24 * 3600 + 3600
    assert batch_api.deadline(expiring, None, 5) == 1_200_000 + 3600
    assert batch_api.deadline(expired, None, 5) == 1_000_010.0  # past: still two polls from now
    assert batch_api.deadline(unknown, None, 5) == 1_000_000 + 96 * 3600
    assert batch_api.deadline(created, 0, 5) == 1_000_010.0


def test_the_trigger_gets_the_creation_times_so_it_polls_through_the_list(batch_emu, context):
    with pytest.raises(TaskDeferred) as deferred:
        summarise().execute(context)

    trigger = deferred.value.trigger
    (batch_id,) = trigger.batch_ids
    assert trigger.created_at[batch_id] > 0
    first_event(trigger)
    assert batch_emu.requests_to("/batches/{id}", method="GET") == []
