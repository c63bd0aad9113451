"""OpenRouterEmbeddingOperator against the emulator: both engines, Parquet and JSONL results read back and
compared with what OpenRouter returns for the same text, re-attach on retry, failures classified,
inputs grouped into requests, and arguments refused before anything is paid for."""

# ruff: noqa: F811  (fixtures imported from tests.batch.support)

from __future__ import annotations

import json
import math
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest

from airflow_openrouter._compat import AirflowFailException, TaskDeferred
from airflow_openrouter.exceptions import (
    BatchInputError,
    OpenRouterAuthenticationError,
    OpenRouterConfigError,
    OpenRouterError,
)
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.operators.embedding import OpenRouterEmbeddingOperator
from airflow_openrouter.testing import OpenRouterEmulator
from tests.batch.support import (  # noqa: F401  (fixtures)
    batch_emu,
    batch_emulator,
    batch_posts,
    context,
    fresh_emu,
    run_operator,
    task_context,
    wait_until_finished,
)

MODEL = "openai/text-embedding-3-small"
REPO = Path(__file__).resolve().parents[2]


def documents(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"doc-{i}", "title": f"Title {i}", "body": f"Document {i} is about topic {i % 3}."}
        for i in range(n)
    ]


def embed(**kwargs: Any) -> OpenRouterEmbeddingOperator:
    options: dict[str, Any] = {
        "task_id": "embed",
        "items": documents(6),
        "text": "{{ item.title }}: {{ item.body }}",
        "id_field": "id",
        "model": MODEL,
        "deferrable": True,
        **kwargs,
    }
    return OpenRouterEmbeddingOperator(**options)


def read_rows(uri: str) -> dict[str, dict[str, Any]]:
    """The rows of a Parquet or JSONL results file, by custom_id (one per item)."""
    path = Path(uri.removeprefix("file://"))
    if path.suffix == ".parquet":
        rows = parquet(uri).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {row["custom_id"]: row for row in rows}
    assert len(by_id) == len(rows)
    return by_id


def parquet(uri: str) -> Any:
    import pyarrow.parquet as pq  # not at module level: a test runs this module without pyarrow

    return pq.read_table(uri.removeprefix("file://"))


def sent_vectors(texts: list[str], **options: Any) -> list[array]:
    """What OpenRouter answers for these texts, as float32."""
    with OpenRouterHook() as hook:
        return hook.embed(model=MODEL, input=texts, **options).vectors()


def embedding_posts(emulator: OpenRouterEmulator) -> list[dict[str, Any]]:
    return [r.body for r in emulator.requests_to("/embeddings", method="POST")]


def f32(values: list[float]) -> array:
    return array("f", values)


# --- both engines, both formats ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["batch", "concurrent"])
def test_parquet_rows_hold_the_vectors_openrouter_returns_for_each_items_text(batch_emu, context, engine):
    items = documents(6)

    manifest = run_operator(embed(engine=engine, items=items), context)

    assert manifest["output_uri"].endswith(".parquet") and manifest["engine"] == engine
    assert manifest["status"] == "completed" and manifest["counts"]["succeeded"] == manifest["total"] == 6
    assert manifest["dimensions"] == 1536 and manifest["completion_tokens"] == 0
    table = parquet(manifest["output_uri"])
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[1536]"
    assert manifest["cost_usd"] == pytest.approx(batch_emu.billed_usd) and batch_emu.billed_usd > 0
    rows = read_rows(manifest["output_uri"])
    texts = [f"{d['title']}: {d['body']}" for d in items]
    expected = sent_vectors(texts)
    for i, item in enumerate(items):
        row = rows[item["id"]]
        assert row["id"] == item["id"] and row["index"] == i and row["status"] == "succeeded"
        assert f32(row["vector"]) == expected[i]  # float32 values, exactly
        assert row["model"] == MODEL and row["dimensions"] == 1536 and row["error"] is None
    assert sum(r["usage"]["prompt_tokens"] for r in rows.values()) == manifest["prompt_tokens"] > 0
    assert math.isclose(sum(r["usage"]["cost"] for r in rows.values()), manifest["cost_usd"], rel_tol=1e-6)


@pytest.mark.parametrize("engine", ["batch", "concurrent"])
def test_a_jsonl_output_path_gets_the_same_vectors_as_json_numbers(batch_emu, context, tmp_path, engine):
    output = f"file://{tmp_path}/vectors/{engine}.jsonl"

    manifest = run_operator(embed(engine=engine, output_path=output, dimensions=64), context)

    assert manifest["output_uri"] == output and manifest["dimensions"] == 64
    rows = read_rows(output)
    expected = sent_vectors(
        [f"Title {i}: Document {i} is about topic {i % 3}." for i in range(6)], dimensions=64
    )
    assert [f32(rows[f"doc-{i}"]["vector"]) for i in range(6)] == expected
    assert set(rows["doc-0"]) == {
        "custom_id", "id", "index", "status", "vector", "model", "dimensions", "error", "cause", "transient",
        "cached", "usage", "attempts", "history",
    }  # fmt: skip


def test_equal_texts_get_equal_vectors_and_different_texts_different_ones(batch_emu, context):
    items = [
        {"id": "a", "t": "the same words"},
        {"id": "b", "t": "the same words"},
        {"id": "c", "t": "other words"},
    ]

    manifest = run_operator(embed(items=items, text="{{ item.t }}", engine="concurrent"), context)

    rows = read_rows(manifest["output_uri"])
    assert rows["a"]["vector"] == rows["b"]["vector"] != rows["c"]["vector"]


@pytest.mark.parametrize("engine", ["batch", "concurrent"])
def test_dimensions_shorten_every_vector_to_a_unit_vector_of_that_size(batch_emu, context, engine):
    manifest = run_operator(embed(engine=engine, dimensions=256), context)

    rows = read_rows(manifest["output_uri"])
    assert {len(r["vector"]) for r in rows.values()} == {256} and manifest["dimensions"] == 256
    for row in rows.values():
        assert math.isclose(math.fsum(v * v for v in row["vector"]), 1.0, rel_tol=1e-5)
    sent = [b["dimensions"] for b in embedding_posts(batch_emu)] or [
        r["body"]["dimensions"] for post in batch_posts(batch_emu) for r in post["requests"]
    ]
    assert set(sent) == {256}


def test_integer_ids_stay_integers_and_rows_without_id_field_are_keyed_by_index(
    batch_emu, request, tmp_path, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    items = [{"id": 10 + i, "body": f"text {i}"} for i in range(3)]

    by_int = run_operator(embed(items=items, text="{{ item.body }}"), task_context(request))
    by_index = run_operator(
        embed(task_id="by_index", items=items, text="{{ item.body }}", id_field=None),
        {"ti": type(task_context(request)["ti"])(run_id="by_index")},
    )

    table = parquet(by_int["output_uri"])
    assert str(table.schema.field("id").type) == "int64"
    assert sorted(table.column("id").to_pylist()) == [10, 11, 12]
    assert sorted(parquet(by_index["output_uri"]).column("id").to_pylist()) == [0, 1, 2]


# --- the Batch API: one line per item, re-attach, failures ------------------------------------------


def test_a_batch_holds_one_embeddings_line_per_item_with_base64_vectors_and_no_provider(batch_emu, context):
    run_operator(embed(), context)

    (post,) = batch_posts(batch_emu)
    assert post["endpoint"] == "/v1/embeddings" and post["model"] == MODEL and "provider" not in post
    bodies = [r["body"] for r in post["requests"]]
    # The attribution: embeddings requests take ``user`` (and ``session_id``, not in batches), no metadata.
    assert bodies[2] == {
        "input": "Title 2: Document 2 is about topic 2.",
        "encoding_format": "base64",
        "user": "airflow/batch_unit/summarise",
    }
    assert embedding_posts(batch_emu) == []  # nothing through the full-price endpoint


def test_a_retry_after_submission_re_attaches_without_a_second_post(batch_emu, context):
    with pytest.raises(TaskDeferred) as first_try:
        embed().execute(context)  # the worker dies while deferred: no execute_complete

    context["ti"].try_number = 2
    manifest = run_operator(embed(), context)

    assert len(batch_posts(batch_emu)) == 1
    assert manifest["batch_ids"] == first_try.value.trigger.batch_ids
    assert manifest["counts"]["succeeded"] == 6 and len(read_rows(manifest["output_uri"])) == 6


def test_a_lost_submission_answer_is_adopted_once_its_results_prove_it_is_this_runs(fresh_emu, context):
    fresh_emu.drop_answer_next(route="/batches", method="POST")  # created, then the answer is cut

    with pytest.raises(OpenRouterError, match="may be the one it created") as first_try:
        run_operator(embed(), context)
    assert not isinstance(first_try.value, AirflowFailException)
    with OpenRouterHook() as hook:
        (created,) = [b.id for b in hook.list_batches(limit=100).data]
    wait_until_finished([created])
    context["ti"].try_number = 2
    manifest = run_operator(embed(), context)

    assert len(batch_posts(fresh_emu)) == 1 and manifest["batch_ids"] == [created]
    assert manifest["counts"]["succeeded"] == 6 and manifest["dimensions"] == 1536


def test_transient_item_failures_fail_retryably_and_the_retry_resubmits_only_them(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=["doc-1", "doc-4"])

    with pytest.raises(OpenRouterError, match="2 of them failed in a way that may pass") as first_try:
        run_operator(embed(max_row_attempts=1), context)
    assert not isinstance(first_try.value, AirflowFailException)
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    assert {c for c, r in rows.items() if r["status"] == "failed"} == {"doc-1", "doc-4"}
    assert rows["doc-1"]["transient"] is True and rows["doc-1"]["dimensions"] is None
    assert all(math.isnan(v) for v in rows["doc-1"]["vector"])  # Parquet: NaNs, not null

    context["ti"].try_number = 2
    manifest = run_operator(embed(max_row_attempts=1), context)

    first, second = batch_posts(batch_emu)
    assert len(first["requests"]) == 6
    assert [r["custom_id"].split("~")[0] for r in second["requests"]] == ["doc-1", "doc-4"]
    assert manifest["counts"]["succeeded"] == 6 and manifest["batch_count"] == 2


def test_a_batch_model_without_a_batch_variant_is_refused_once_with_advice(batch_emu, context):
    with pytest.raises(OpenRouterError) as refused:
        run_operator(embed(model="qwen/qwen3-embedding-8b"), context)

    assert isinstance(refused.value, AirflowFailException)
    assert "engine='concurrent'" in str(refused.value) and len(batch_posts(batch_emu)) == 1
    assert batch_emu.billed_usd == 0


def test_an_unknown_embedding_model_names_the_closest_embedding_models(batch_emu, context):
    with pytest.raises(OpenRouterError) as refused:
        run_operator(embed(model="openai/text-embedding-3-smal"), context)

    message = str(refused.value)
    assert "not in /embeddings/models" in message and "openai/text-embedding-3-small" in message


# --- the concurrent engine: grouped requests, failures ----------------------------------------------


def test_concurrent_requests_carry_up_to_max_inputs_per_request_items_in_item_order(batch_emu, context):
    manifest = run_operator(
        embed(engine="concurrent", items=documents(10), max_inputs_per_request=4, max_concurrency=1), context
    )

    inputs = [post["input"] for post in embedding_posts(batch_emu)]
    assert [len(i) for i in inputs] == [4, 4, 2]
    assert [text for batch in inputs for text in batch] == [
        f"Title {i}: Document {i} is about topic {i % 3}." for i in range(10)
    ]
    assert all(
        post["encoding_format"] == "base64" and post["model"] == MODEL for post in embedding_posts(batch_emu)
    )
    assert manifest["counts"]["succeeded"] == 10


def test_concurrent_requests_stay_within_the_token_budget_and_a_large_item_goes_alone(batch_emu, context):
    items = [
        {"id": f"d{i}", "t": "x" * size} for i, size in enumerate([40, 40, 40, 400, 40])
    ]  # 10 and 100 tokens

    run_operator(
        embed(
            engine="concurrent",
            items=items,
            text="{{ item.t }}",
            max_tokens_per_request=25,
            max_concurrency=1,
        ),
        context,
    )

    assert [[len(t) for t in post["input"]] for post in embedding_posts(batch_emu)] == [
        [40, 40],
        [40],
        [400],
        [40],
    ]


def test_one_input_refused_on_its_own_fails_alone_while_its_request_neighbours_succeed(batch_emu, context):
    items = [{"id": f"d{i}", "t": f"short text {i}"} for i in range(8)]
    items[5]["t"] = "word " * 8000  # 10,000 tokens: more than the model's 8,192

    with pytest.raises(AirflowFailException, match="Every failure is permanent"):
        run_operator(embed(engine="concurrent", items=items, text="{{ item.t }}", max_concurrency=1), context)

    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    assert {c for c, r in rows.items() if r["status"] == "succeeded"} == {f"d{i}" for i in range(8)} - {"d5"}
    assert rows["d5"]["cause"] == "400 bad_request" and rows["d5"]["transient"] is False
    assert "8192" in rows["d5"]["error"]
    assert f32(rows["d6"]["vector"]) == sent_vectors(["short text 6"])[0]


def test_a_refusal_of_every_input_stops_the_run_after_the_first_request(batch_emu, context):
    """mistral-embed returns one size only: both halves of the first request are refused alike, and so
    is each input of the first half on its own."""
    with pytest.raises(OpenRouterError, match="comes back for every item") as failed:
        run_operator(
            embed(
                engine="concurrent",
                model="mistralai/mistral-embed-2312",
                dimensions=64,
                items=documents(40),
                max_inputs_per_request=4,
                max_concurrency=1,
            ),
            context,
        )

    assert isinstance(failed.value, AirflowFailException)
    # The request, its two halves, then the first half's two inputs on their own (all refused: free).
    assert len(embedding_posts(batch_emu)) == 5
    manifest = context["ti"].xcoms["return_value"]
    assert manifest["counts"]["failed"] == 40 and batch_emu.billed_usd == 0


def test_the_cost_cap_refuses_before_sending_when_the_estimate_of_the_shared_requests_exceeds_it(
    batch_emu, context
):
    from airflow_openrouter.exceptions import OpenRouterCostLimitError

    with pytest.raises(OpenRouterCostLimitError, match=r"12 items .* nothing was sent|nothing was sent"):
        run_operator(
            embed(
                engine="concurrent",
                items=documents(12),
                max_inputs_per_request=4,
                max_concurrency=1,
                max_cost_usd=1e-9,
            ),
            context,
        )

    assert embedding_posts(batch_emu) == []


def test_the_estimate_of_an_embeddings_run_is_its_bill(batch_emu, context):
    """Prices come from /embeddings/models, prompt tokens by the documented rule, no completion."""
    manifest = run_operator(
        embed(engine="concurrent", items=documents(12), max_inputs_per_request=4), context
    )

    assert manifest["estimated_cost_usd"] == pytest.approx(manifest["cost_usd"])
    assert manifest["cost_usd"] == pytest.approx(batch_emu.billed_usd) and manifest["cost_usd"] > 0


def test_transient_request_failures_fail_retryably_and_the_retry_sends_only_those_items(batch_emu, context):
    batch_emu.fail_next("/embeddings", status=503, times=2)  # the hook's one retry: one request fails

    with pytest.raises(OpenRouterError, match="may pass") as first_try:
        run_operator(
            embed(
                engine="concurrent",
                items=documents(9),
                max_inputs_per_request=3,
                max_concurrency=1,
                max_row_attempts=1,
            ),
            context,
        )
    assert not isinstance(first_try.value, AirflowFailException)
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    failed = {c for c, r in rows.items() if r["status"] == "failed"}
    assert failed == {"doc-0", "doc-1", "doc-2"} and rows["doc-0"]["cause"] == "503 server_error"

    batch_emu.clear_requests()
    context["ti"].try_number = 2
    manifest = run_operator(embed(engine="concurrent", items=documents(9), max_inputs_per_request=3), context)

    assert [post["input"] for post in embedding_posts(batch_emu)] == [
        [f"Title {i}: Document {i} is about topic {i % 3}." for i in range(3)]
    ]
    assert manifest["counts"]["succeeded"] == 9


def test_a_wrong_key_stops_the_concurrent_run_at_the_first_401(wrong_key, context):
    with pytest.raises(OpenRouterAuthenticationError) as failed:
        embed(engine="concurrent", items=documents(100), max_inputs_per_request=2, max_concurrency=1).execute(
            context
        )

    assert isinstance(failed.value, AirflowFailException)
    assert len(embedding_posts(wrong_key)) == 1
    manifest = context["ti"].xcoms["return_value"]
    assert manifest["counts"]["failed"] == 100
    assert "sk-or-v1-" not in json.dumps(manifest) + str(failed.value)


def test_a_wrong_key_stops_the_batch_engine_at_its_one_refused_post(wrong_key, context):
    with pytest.raises(OpenRouterAuthenticationError) as failed:
        embed(items=documents(100)).execute(context)

    assert isinstance(failed.value, AirflowFailException)
    assert len(batch_posts(wrong_key)) == 1 and "sk-or-v1-" not in str(failed.value)


# --- bad input costs nothing ------------------------------------------------------------------------


def test_an_item_whose_text_renders_empty_fails_before_anything_is_sent(batch_emu, context):
    items = [*documents(3), {"id": "blank", "title": "", "body": ""}]

    with pytest.raises(BatchInputError, match=r"Item 3 \(custom_id 'blank'\).*rendered empty"):
        run_operator(embed(items=items, text="{{ item.title }}{{ item.body }}"), context)
    assert batch_posts(batch_emu) == [] and embedding_posts(batch_emu) == []


def test_item_text_is_data_and_a_template_error_names_the_item(batch_emu, context):
    items = [{"id": "a", "body": "{{ conn.openrouter_default.password }}"}]
    manifest = run_operator(embed(items=items, text="{{ item.body }}"), context)
    (post,) = batch_posts(batch_emu)
    assert post["requests"][0]["body"]["input"] == "{{ conn.openrouter_default.password }}"
    assert manifest["counts"]["succeeded"] == 1

    with pytest.raises(OpenRouterError, match=r"Item 0.*summary"):
        run_operator(embed(task_id="undefined", items=items, text="{{ item.summary }}"), context)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"dimensions": 0}, "dimensions"),
        ({"dimensions": "256"}, "dimensions"),
        ({"max_inputs_per_request": 4096}, "max_inputs_per_request"),
        ({"max_tokens_per_request": 0}, "max_tokens_per_request"),
        ({"temperature": 0.2}, "temperature"),
        ({"response_format": "json_object"}, "response_format"),
        ({"system_prompt": "You embed."}, "system_prompt"),
        ({"provider": {"only": ["openai"]}}, "provider"),
        ({"extra_body": {"input_type": "search_document"}}, "input_type"),
        ({"user": 7}, "user"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed_naming_the_argument(arguments, named):
    with pytest.raises(OpenRouterConfigError, match=rf"Task 'embed': {named}"):
        embed(**arguments)
    with pytest.raises(OpenRouterConfigError, match=named):
        OpenRouterEmbeddingOperator.partial(task_id="embed", text="{{ item }}", model=MODEL, **arguments)


def test_provider_and_input_type_are_taken_by_the_concurrent_engine(batch_emu, context):
    run_operator(
        embed(
            engine="concurrent", provider={"order": ["OpenAI"]}, extra_body={"input_type": "search_document"}
        ),
        context,
    )

    (post,) = embedding_posts(batch_emu)
    assert post["provider"] == {"order": ["OpenAI"]} and post["input_type"] == "search_document"


def test_without_pyarrow_vectors_go_to_jsonl_and_a_parquet_path_is_refused_before_sending(
    batch_emulator, tmp_path
):
    """pyarrow hidden in a subprocess, as on a worker without the parquet extra."""
    batch_emulator.reset()
    probe = f"""
import sys, json, os
sys.modules["pyarrow"] = None  # import pyarrow -> ImportError
os.environ.update({batch_emulator.connection_env()!r})
os.environ["AIRFLOW__OPENROUTER__RESULTS_PATH"] = "file://{tmp_path}/out"
from tests.batch.support import FakeTaskInstance, run_operator
from tests.operators.test_embedding import embed
manifest = run_operator(embed(engine="concurrent"), {{"ti": FakeTaskInstance(run_id="no_pyarrow")}})
print("MANIFEST", json.dumps(manifest))
try:
    embed(output_path="file://{tmp_path}/v.parquet").execute({{"ti": FakeTaskInstance(run_id="parquet")}})
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120
    )

    assert done.returncode == 0, done.stderr[-3000:]
    said = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines() if " " in line}
    manifest, refusal = json.loads(said["MANIFEST"]), said["REFUSED"]
    assert manifest["output_uri"].endswith(".jsonl") and manifest["counts"]["succeeded"] == 6
    assert len(read_rows(manifest["output_uri"])["doc-0"]["vector"]) == 1536
    assert "pyarrow is not installed: writing the vectors as JSONL" in done.stdout
    assert batch_emulator.requests_to("/batches", method="POST") == []  # the Parquet task sent nothing
    assert refusal.startswith("OpenRouterConfigError") and "airflow-openrouter[parquet]" in refusal


def test_rows_that_failed_transiently_are_recovered_inside_the_task_on_both_engines(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=["doc-1", "doc-4"])
    batch_manifest = run_operator(embed(), context)
    batch_emu.fail_next("/embeddings", status=503, times=2)  # the hook's one retry: one request fails
    concurrent_manifest = run_operator(
        embed(engine="concurrent", items=documents(9), max_inputs_per_request=3, max_concurrency=1),
        {"ti": type(context["ti"])(run_id="concurrent-recovery")},
    )

    for manifest, recovered in ((batch_manifest, 2), (concurrent_manifest, 3)):
        assert manifest["status"] == "completed" and manifest["recovery"]["recovered"] == recovered
        rows = read_rows(manifest["output_uri"])
        again = [r for r in rows.values() if r["attempts"] == 2]
        assert len(again) == recovered and all(r["dimensions"] for r in again)
    # The batch's two failed rows went out again from the worker (fewer than 50: no second batch).
    assert len(batch_posts(batch_emu)) == 1


def test_two_refused_inputs_one_in_each_half_fail_alone_and_never_stop_the_run(batch_emu, context):
    items = [{"id": f"d{i}", "t": f"short text {i}"} for i in range(8)]
    items[0]["t"] = items[2]["t"] = "word " * 8000  # 10,000 tokens each: more than the model's 8,192

    with pytest.raises(AirflowFailException, match="Every failure is permanent"):
        run_operator(
            embed(
                engine="concurrent",
                items=items,
                text="{{ item.t }}",
                max_inputs_per_request=4,
                max_concurrency=1,
            ),
            context,
        )

    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    assert {c for c, r in rows.items() if r["status"] != "succeeded"} == {"d0", "d2"}


def test_integer_ids_too_large_for_int64_are_written_as_strings_not_lost_after_paying(batch_emu, context):
    pytest.importorskip("pyarrow")
    items = [{"id": 2**64 + i, "title": "t", "body": f"b{i}"} for i in range(3)]  # 128-bit style ids

    manifest = run_operator(embed(engine="concurrent", items=items), context)

    rows = read_rows(manifest["output_uri"])
    assert manifest["counts"]["succeeded"] == 3
    assert {row["id"] for row in rows.values()} == {str(2**64 + i) for i in range(3)}
