"""OpenRouterBatchOperator against the emulator, through the real hook: execute, the trigger's event,
execute_complete -- the path a deferred task takes, without the cost of a DAG run."""

# The emulator fixtures are imported from tests.batch.support (tests/operators/conftest.py belongs to
# the chat operator's tests), so ruff sees every test argument as a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import json

import pytest

from airflow_openrouter._compat import AirflowFailException
from airflow_openrouter.batch.items import BatchInputError
from airflow_openrouter.batch.spool import RequestSpool
from airflow_openrouter.exceptions import (
    OpenRouterBadRequestError,
    OpenRouterConfigError,
    OpenRouterError,
)
from airflow_openrouter.prompts import PromptRenderError
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    FakeTaskInstance,
    Summary,
    batch_emu,
    batch_emulator,
    batch_posts,
    context,
    docs,
    read_rows,
    run_operator,
    sent_ids,
    summarise,
    task_context,
)

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

    manifest = run_operator(summarise(max_failed_fraction=0.5, deferrable=False, max_row_attempts=1), context)

    rows = read_rows(manifest["output_uri"])
    assert manifest["counts"]["failed"] == 2 and manifest["counts"]["succeeded"] == 4
    assert rows["1"]["status"] == "failed" and rows["1"]["error"]


def test_transient_item_failures_fail_retryably_and_the_retry_resubmits_only_them(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=["2", "4"])  # "provider_unavailable": may pass

    # max_row_attempts=1: no recovery pass inside the task (see test_batch_recovery.py), the retry resends.
    with pytest.raises(OpenRouterError, match=r"2 of 6 items did not succeed") as failed:
        run_operator(summarise(max_row_attempts=1), context)

    assert not isinstance(failed.value, AirflowFailException)  # Airflow retries it
    message = str(failed.value)
    assert "2 of them failed in a way that may pass" in message
    assert "a retry resubmits those items in a new batch" in message
    assert message.endswith("Causes: provider_unavailable \u00d72.")
    manifest = context["ti"].xcoms["return_value"]  # written before failing
    assert manifest["status"] == "failed" and manifest["errors"] == {"provider_unavailable": 2}
    assert manifest["counts"]["failed"] == 2 and len(read_rows(manifest["output_uri"])) == 6
    rows = read_rows(manifest["output_uri"])
    assert rows["2"]["transient"] is True and rows["2"]["cause"] == "provider_unavailable"

    context["ti"].try_number = 2
    manifest = run_operator(summarise(max_row_attempts=1), context)

    assert sent_ids(batch_emu) == [[str(i) for i in range(6)], ["2", "4"]]  # only the failed ones again
    assert manifest["status"] == "completed" and manifest["counts"]["succeeded"] == 6
    assert manifest["batch_count"] == 2
    rows = read_rows(manifest["output_uri"])
    assert {r["status"] for r in rows.values()} == {"succeeded"}


def test_permanent_failures_fail_without_retries_and_never_advise_a_higher_threshold(batch_emu, context):
    batch_emu.batch_invalid_output_next(custom_ids=[f"doc-{i}" for i in range(6)])

    with pytest.raises(AirflowFailException, match=r"6 of 6 items did not succeed") as failed:
        run_operator(summarise(response_format=Summary, id_field="id", max_row_attempts=1), context)

    message = str(failed.value)
    assert "Every failure is permanent, so a retry would fail the same way" in message
    assert "max_failed_fraction" not in message.split("allows.")[1]  # one cause for every item
    assert message.endswith("Causes: invalid output \u00d76.")


def test_a_mix_of_permanent_failures_may_suggest_the_threshold(batch_emu, context):
    batch_emu.batch_invalid_output_next(custom_ids=["doc-1"])

    with pytest.raises(AirflowFailException, match="or raise max_failed_fraction"):
        run_operator(summarise(response_format=Summary, id_field="id", max_row_attempts=1), context)


def test_invalid_structured_output_keeps_the_raw_text(batch_emu, context):
    batch_emu.batch_invalid_output_next(custom_ids=["doc-2"])

    manifest = run_operator(
        summarise(response_format=Summary, id_field="id", max_failed_fraction=0.2, max_row_attempts=1),
        context,
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
        error, match=f"batch\\(es\\) {outcome}: .*provider said {outcome}\\. Results: .*resubmits"
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

    assert sent_ids(batch_emu) == [["0", "1", "2"], ["3", "4", "5"], ["0", "1", "2"]]
    assert kept in manifest["batch_ids"] and ended not in manifest["batch_ids"]
    assert manifest["counts"]["succeeded"] == 6


# --- splitting and never paying twice --------------------------------------------------------------


def test_more_than_5000_items_are_split_into_several_batches(batch_emu, context):
    items = [{"n": i} for i in range(5_001)]

    manifest = run_operator(summarise(items=items, prompt="Say {{ item.n }}", max_tokens=4), context)

    assert [len(p["requests"]) for p in batch_posts(batch_emu)] == [5_000, 1]
    assert manifest["batch_count"] == 2 and manifest["counts"]["succeeded"] == 5_001
    assert read_rows(manifest["output_uri"])["5000"]["index"] == 5_000


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
    assert manifest["status"] == "completed"
    assert batch_posts(batch_emu) == []


def test_empty_items_without_waiting_still_push_batch_ids_for_the_sensor(batch_emu, context):
    result = summarise(items=[], wait_for_completion=False).execute(context)

    assert result == {"batch_ids": [], "model": MODEL, "total": 0}
    assert context["ti"].xcoms["batch_ids"] == []


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
        (["a", "b"], "id", "Item 0 is a str, not a dict: id_field='id' needs every item to be a dict"),
        (
            [{"id": "x" * 54}],
            "id",
            "Item 0: 'id' is 54 characters long; the Batch API takes custom ids of at most 64",
        ),
    ],
)
def test_bad_items_name_their_index(batch_emu, context, items, id_field, message):
    with pytest.raises(BatchInputError, match=message):
        run_operator(summarise(items=items, id_field=id_field), context)
    assert batch_posts(batch_emu) == []


def test_a_model_without_a_batch_variant_points_to_the_concurrent_engine(batch_emu, context):
    with pytest.raises(OpenRouterBadRequestError, match="endpoint\\. Batches take text-only") as failed:
        run_operator(summarise(model="mistralai/mistral-7b-instruct:free"), context)
    assert "engine='concurrent'" in str(failed.value)
    assert isinstance(failed.value, AirflowFailException)  # the typed error, and no retry


def test_an_unknown_model_says_so_and_suggests_the_closest_ids(batch_emu, context):
    with pytest.raises(OpenRouterBadRequestError) as failed:
        run_operator(summarise(model="openai/gpt-4o-mnii"), context)

    message = str(failed.value)
    assert "is not a valid model ID. Model 'openai/gpt-4o-mnii' is unknown to OpenRouter" in message
    assert "The closest ids: openai/gpt-4o-mini" in message
    assert "batch variant" not in message and isinstance(failed.value, AirflowFailException)


@pytest.mark.parametrize(("name", "value"), [("max_tokens", "100"), ("temperature", "0.2"), ("seed", 1.5)])
def test_a_mistyped_request_parameter_fails_before_any_batch_is_submitted(batch_emu, context, name, value):
    """OpenRouter accepts the batch and then fails it as a whole: it must never get that far. (The
    constructor refuses such a value at parse time; the engine checks every rendered body again, however
    the value got there.)"""
    operator = summarise()
    setattr(operator, name, value)
    with pytest.raises(
        OpenRouterConfigError, match=rf"Item 0 .*nothing was sent; the request: {name} must be"
    ):
        run_operator(operator, context)
    assert batch_posts(batch_emu) == []


@pytest.mark.parametrize("interval", [0, -1])
def test_poll_interval_must_be_positive(batch_emu, context, interval):
    with pytest.raises(OpenRouterConfigError, match="poll_interval must be a positive number"):
        run_operator(summarise(poll_interval=interval), context)
    assert batch_posts(batch_emu) == []


def test_integer_ids_are_kept_as_they_were_beside_the_string_custom_id(batch_emu, context):
    items = [{"n": 10 + i, "text": f"doc {i}"} for i in range(3)]

    manifest = run_operator(summarise(items=items, id_field="n"), context)

    rows = read_rows(manifest["output_uri"])
    assert set(rows) == {"10", "11", "12"}
    assert rows["11"]["id"] == 11 and rows["11"]["custom_id"] == "11" and rows["11"]["index"] == 1


def test_the_manifest_has_every_key_and_counts_providers_and_causes(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=["3"])

    manifest = run_operator(summarise(max_failed_fraction=0.5, max_row_attempts=1), context)

    assert manifest["status"] == "completed_with_failures"
    assert manifest["provider"] == "OpenAI" and manifest["providers"] == {"OpenAI": 5}
    assert manifest["errors"] == {"provider_unavailable": 1}
    assert None not in (manifest["started_at"], manifest["finished_at"], manifest["duration_s"])


def test_items_stream_from_a_jsonl_file(batch_emu, context, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs(3)))

    manifest = run_operator(summarise(items=f"file://{source}", id_field="id"), context)

    assert set(read_rows(manifest["output_uri"])) == {"doc-0", "doc-1", "doc-2"}
