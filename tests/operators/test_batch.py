"""OpenRouterBatchOperator against the emulator, through the real hook: execute, the trigger's event,
execute_complete -- the path a deferred task takes, without the cost of a DAG run."""

# The emulator fixtures are imported from tests.batch.support (tests/operators/conftest.py belongs to
# the chat operator's tests), so ruff sees every test argument as a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_openrouter._compat import AirflowFailException, TaskDeferred
from airflow_openrouter.batch.items import BatchInputError
from airflow_openrouter.batch.submit import RequestSpool
from airflow_openrouter.exceptions import (
    OpenRouterBadRequestError,
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterPaymentRequiredError,
)
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.prompts import PromptRenderError
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    FakeTaskInstance,
    batch_emu,
    batch_emulator,
    batch_polls,
    batch_posts,
    first_event,
    fresh_emu,
    paused_emu,
    paused_emulator,
    read_rows,
    run_operator,
    task_context,
)


class Summary(BaseModel):
    summary: str


def docs(n: int) -> list[dict[str, Any]]:
    return [{"id": f"doc-{i}", "text": f"Document {i} says hello."} for i in range(n)]


def summarise(**kwargs: Any) -> OpenRouterBatchOperator:
    options: dict[str, Any] = {
        "task_id": "summarise",
        "items": docs(6),
        "prompt": "Summarise document {{ index }}: {{ item.text }}",
        "model": MODEL,
        "deferrable": True,
        **kwargs,
    }
    return OpenRouterBatchOperator(**options)


@pytest.fixture
def context(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    return task_context(request)


def _record_file(context: dict[str, Any]) -> Path:
    """The JSON record of the context's task run (Airflow < 3.3, or no task state store)."""
    from airflow_openrouter.batch.state import STATE_DIR, TaskRunIdentity

    identity = TaskRunIdentity.from_context(context)
    results = identity.results_file(os.environ["AIRFLOW__OPENROUTER__RESULTS_PATH"])
    return Path(str(results).removeprefix("file://")).parent / STATE_DIR / f"{identity.key}.json"


# --- results and manifest --------------------------------------------------------------------------


def test_rows_are_validated_and_the_manifest_is_small_and_complete(batch_emu, context):
    manifest = run_operator(summarise(response_format=Summary, id_field="id"), context)

    rows = read_rows(manifest["output_uri"])
    assert set(rows) == {f"doc-{i}" for i in range(6)}
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert all(Summary.model_validate(r["output"]) for r in rows.values())
    assert rows["doc-4"]["index"] == 4 and rows["doc-4"]["usage"]["prompt_tokens"] > 0
    assert manifest["counts"]["succeeded"] == 6 and manifest["total"] == 6
    assert manifest["engine"] == "batch" and manifest["model"] == MODEL and manifest["provider"] == "OpenAI"
    assert manifest["cost_usd"] > 0 and manifest["total_tokens"] > 0
    assert len(manifest["batch_ids"]) == manifest["batch_count"] == 1
    assert len(json.dumps(manifest)) < 2048
    # The request is what the chat operator would send; the batch names the model once.
    (post,) = batch_posts(batch_emu)
    body = post["requests"][3]["body"]
    assert post["model"] == MODEL and "model" not in body
    assert body["messages"] == [{"role": "user", "content": "Summarise document 3: Document 3 says hello."}]
    assert body["response_format"]["type"] == "json_schema"


def test_item_text_is_data_and_never_rendered(batch_emu, context):
    items = [{"text": "{{ var.value.secret }} {% if true %}x{% endif %}"}]
    run_operator(summarise(items=items, prompt="{{ item.text }}"), context)

    (post,) = batch_posts(batch_emu)
    assert post["requests"][0]["body"]["messages"][0]["content"] == items[0]["text"]


def test_partial_item_failures_within_max_failed_fraction_succeed(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=["1", "4"])

    manifest = run_operator(summarise(max_failed_fraction=0.5, deferrable=False), context)

    rows = read_rows(manifest["output_uri"])
    assert manifest["counts"]["failed"] == 2 and manifest["counts"]["succeeded"] == 4
    assert rows["1"]["status"] == "failed" and rows["1"]["error"]


def test_failures_beyond_max_failed_fraction_fail_after_writing_rows_and_manifest(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=["2"])

    with pytest.raises(AirflowFailException, match=r"1 of 6 items did not succeed \(1 failed\)"):
        run_operator(summarise(), context)

    manifest = context["ti"].xcoms["return_value"]
    assert manifest["counts"]["failed"] == 1
    assert len(read_rows(manifest["output_uri"])) == 6


def test_invalid_structured_output_keeps_the_raw_text(batch_emu, context):
    batch_emu.batch_invalid_output_next(custom_ids=["doc-2"])

    manifest = run_operator(
        summarise(response_format=Summary, id_field="id", max_failed_fraction=0.2), context
    )

    row = read_rows(manifest["output_uri"])["doc-2"]
    assert row["status"] == "invalid_output"
    assert isinstance(row["output"], str) and row["error"]
    assert manifest["counts"]["invalid_output"] == 1


@pytest.mark.parametrize(
    ("outcome", "error"),
    [("expired", OpenRouterError), ("failed", AirflowFailException), ("cancelled", OpenRouterError)],
)
def test_a_batch_that_does_not_complete_fails_the_task_and_labels_every_row(
    batch_emu, context, outcome, error
):
    batch_emu.batch_outcome_next(status=outcome, reason=f"provider said {outcome}")

    with pytest.raises(
        error, match=f"batch\\(es\\) {outcome}: .*provider said {outcome}.*resubmits"
    ) as raised:
        run_operator(summarise(max_failed_fraction=1.0), context)

    # Only a failed batch fails without retries; an expired or cancelled one is worth a retry.
    assert isinstance(raised.value, AirflowFailException) == (outcome == "failed")
    manifest = context["ti"].xcoms["return_value"]
    assert manifest["status"] == outcome
    rows = read_rows(manifest["output_uri"])
    assert {r["status"] for r in rows.values()} == {outcome}


@pytest.mark.parametrize("outcome", ["expired", "failed", "cancelled"])
def test_the_next_try_resubmits_only_the_batch_that_ended_without_results(
    batch_emu, context, outcome, monkeypatch
):
    monkeypatch.setitem(RequestSpool.__init__.__kwdefaults__, "max_requests", 3)  # two batches of 3
    batch_emu.batch_outcome_next(status=outcome, reason="provider slow")  # the first batch only
    with pytest.raises(OpenRouterError if outcome != "failed" else AirflowFailException):
        run_operator(summarise(), context)
    (ended, kept) = context["ti"].xcoms["return_value"]["batch_ids"]

    context["ti"].try_number = 2  # a retry, or a clear of the task
    manifest = run_operator(summarise(), context)

    sent = [[r["custom_id"] for r in post["requests"]] for post in batch_posts(batch_emu)]
    assert sent == [["0", "1", "2"], ["3", "4", "5"], ["0", "1", "2"]]
    assert kept in manifest["batch_ids"] and ended not in manifest["batch_ids"]
    assert manifest["counts"]["succeeded"] == 6


# --- splitting and never paying twice --------------------------------------------------------------


def test_more_than_5000_items_are_split_into_several_batches(batch_emu, context):
    items = [{"n": i} for i in range(5_001)]

    manifest = run_operator(summarise(items=items, prompt="Say {{ item.n }}", max_tokens=4), context)

    assert [len(p["requests"]) for p in batch_posts(batch_emu)] == [5_000, 1]
    assert manifest["batch_count"] == 2 and manifest["counts"]["succeeded"] == 5_001
    assert read_rows(manifest["output_uri"])["5000"]["index"] == 5_000


def test_a_retry_after_submission_re_attaches_without_a_second_post(batch_emu, context):
    operator = summarise()
    with pytest.raises(TaskDeferred) as first_try:
        operator.execute(context)  # the worker dies while deferred: no execute_complete

    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert len(batch_posts(batch_emu)) == 1
    assert manifest["batch_ids"] == first_try.value.trigger.batch_ids
    assert manifest["counts"]["succeeded"] == 6


def test_a_post_whose_answer_is_lost_adopts_the_batch_it_created(fresh_emu, context, monkeypatch, capsys):
    create = OpenRouterHook.create_batch

    def answer_lost(self: OpenRouterHook, **kwargs: Any) -> Any:
        create(self, **kwargs)  # OpenRouter creates the batch; the reply never arrives
        raise OpenRouterConnectionError("read timed out", request_sent=True)

    monkeypatch.setattr(OpenRouterHook, "create_batch", answer_lost)
    manifest = run_operator(summarise(), context)

    assert len(batch_posts(fresh_emu)) == 1
    assert manifest["counts"]["succeeded"] == 6 and len(manifest["batch_ids"]) == 1
    assert "Adopting batch" in capsys.readouterr().out


def test_a_dropped_post_fails_the_try_and_the_retry_submits_exactly_one_batch(fresh_emu, context):
    before = {b.id for b in _all_batches()}
    fresh_emu.drop_connection_next(route="/batches", method="POST")
    with pytest.raises(OpenRouterConnectionError):
        run_operator(summarise(), context)

    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert {b.id for b in _all_batches()} - before == set(manifest["batch_ids"])
    assert manifest["counts"]["succeeded"] == 6


def _all_batches() -> list[Any]:
    with OpenRouterHook() as hook:
        return hook.list_batches(limit=100).data


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

    context["ti"].try_number = 2
    manifest = run_operator(summarise(), context)

    assert len(batch_posts(fresh_emu)) == 1
    assert manifest["counts"]["succeeded"] == 6


def test_several_batches_matching_a_lost_post_fail_naming_them(fresh_emu, context, monkeypatch):
    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="worker lost"):
        _crash_around_post(patched, after_post=False)
        run_operator(summarise(), context)
    requests = [
        {"custom_id": str(i), "body": {"messages": [{"role": "user", "content": "x"}]}} for i in range(6)
    ]
    with OpenRouterHook() as hook:  # e.g. another run of the same task, same size, same model
        lookalikes = [hook.create_batch(model=MODEL, requests=requests).id for _ in range(2)]

    context["ti"].try_number = 2
    with pytest.raises(AirflowFailException, match="cannot be told") as failed:
        run_operator(summarise(), context)

    assert all(batch_id in str(failed.value) for batch_id in lookalikes)
    assert len(batch_posts(fresh_emu)) == 2  # the two look-alikes; nothing submitted again


def test_changed_inputs_are_submitted_afresh(batch_emu, context, capsys):
    run_operator(summarise(), context)
    run_operator(summarise(prompt="Shorter: {{ item.text }}"), context)

    assert len(batch_posts(batch_emu)) == 2
    assert "The inputs changed since batch(es)" in capsys.readouterr().out


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


def test_a_re_attach_long_after_the_deadline_polls_once_and_does_not_defer(batch_emu, context):
    run_operator(summarise(), context)
    record = _record_file(context)
    saved = json.loads(record.read_text())
    for batch in saved["batches"]:  # the task is cleared four days later
        batch["created_at"], batch["expires_at"] = int(time.time()) - 97 * 3600, None
    record.write_text(json.dumps(saved))
    polls = batch_polls(batch_emu)

    context["ti"].try_number = 2
    manifest = summarise().execute(context)  # no TaskDeferred: the batch finished long ago

    assert manifest["counts"]["succeeded"] == 6
    assert batch_polls(batch_emu) == polls + 1
    assert len(batch_posts(batch_emu)) == 1


def test_the_default_deadline_follows_created_at_and_the_24_hour_window(monkeypatch):
    from airflow_openrouter.batch.state import BatchRecord, SubmittedBatch

    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
    operator = summarise(poll_interval=5)
    created = BatchRecord("f", MODEL, 1, [SubmittedBatch("b", 0, 1, created_at=990_000)])
    expiring = BatchRecord("f", MODEL, 1, [SubmittedBatch("b", 0, 1, created_at=990_000, expires_at=990_500)])
    unknown = BatchRecord("f", MODEL, 1, [SubmittedBatch("b", 0, 1)])

    assert operator._deadline(created) == 990_000 + 24 * 3600 + 3600
    assert operator._deadline(expiring) == 1_000_010.0  # past: still two polls from now
    assert operator._deadline(unknown) == 1_000_000 + 96 * 3600
    assert summarise(timeout=0, poll_interval=5)._deadline(created) == 1_000_010.0


def test_mapped_tasks_writing_to_one_jsonl_path_get_a_file_each(batch_emu, tmp_path):
    uris = []
    for map_index in (0, 1):
        ti = FakeTaskInstance(run_id="mapped")
        ti.map_index = map_index
        items = [{"text": f"map {map_index} doc {i}"} for i in range(2)]
        manifest = run_operator(
            summarise(items=items, output_path=f"file://{tmp_path}/out.jsonl"), {"ti": ti}
        )
        uris.append(manifest["output_uri"])

    assert uris == [f"file://{tmp_path}/out.0.jsonl", f"file://{tmp_path}/out.1.jsonl"]
    assert all(len(read_rows(uri)) == 2 for uri in uris)


# --- bad input fails before anything is sent -------------------------------------------------------


def test_empty_items_submit_nothing_and_return_a_zero_manifest(batch_emu, context):
    manifest = run_operator(summarise(items=[]), context)

    assert manifest["total"] == 0 and manifest["batch_count"] == 0 and manifest["cost_usd"] == 0
    assert batch_posts(batch_emu) == []


def test_a_template_error_names_the_item_and_line_before_submitting(batch_emu, context):
    items = [{"text": "a"}, {"text": "b"}, {"txt": "c"}]
    prompt = "Summarise:\n{{ item.text.upper() }}"

    with pytest.raises(PromptRenderError, match=r"Item 2 \(custom_id '2'\).*line 2"):
        run_operator(summarise(items=items, prompt=prompt), context)
    assert batch_posts(batch_emu) == []


@pytest.mark.parametrize(
    ("items", "id_field", "message"),
    [
        ([{"text": "a"}, {"text": object()}], None, "Item 1 is not JSON-serialisable"),
        ([{"id": "x"}, {"id": "y"}, {"id": "x"}], "id", "Items 0 and 2 have the same 'id'"),
        ([{"id": "x"}, {}], "id", "Item 1 has no field 'id'"),
        ([{"id": "x" * 65}], "id", "Item 0: 'id' is 65 characters long"),
    ],
)
def test_bad_items_name_their_index(batch_emu, context, items, id_field, message):
    with pytest.raises(BatchInputError, match=message):
        run_operator(summarise(items=items, id_field=id_field), context)
    assert batch_posts(batch_emu) == []


def test_a_model_without_a_batch_variant_points_to_the_concurrent_engine(batch_emu, context):
    with pytest.raises(OpenRouterBadRequestError, match="engine='concurrent'"):
        run_operator(summarise(model="mistralai/mistral-7b-instruct:free"), context)


def test_items_stream_from_a_jsonl_file(batch_emu, context, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs(3)))

    manifest = run_operator(summarise(items=f"file://{source}", id_field="id"), context)

    assert set(read_rows(manifest["output_uri"])) == {"doc-0", "doc-1", "doc-2"}
