"""The result cache of OpenRouterEmbeddingOperator, both engines: what the emulator's journal shows was not
embedded again, and what the vectors, rows and manifest say about it."""

# ruff: noqa: F811  (fixtures imported from tests.batch.support)
from __future__ import annotations

import time
from array import array
from typing import Any

import pytest

from airflow_openrouter.testing import OpenRouterEmulator
from tests.batch.support import (  # noqa: F401  (fixtures)
    FakeTaskInstance,
    batch_emu,
    batch_emulator,
    batch_posts,
    run_operator,
    sent_ids,
)
from tests.operators.test_embedding import documents, embed, read_rows, sent_vectors

ENGINES = ["batch", "concurrent"]


def embedded_inputs(emulator: OpenRouterEmulator) -> list[str]:
    """Every text sent to be embedded: the inputs of /embeddings requests and of embeddings batches."""
    texts: list[str] = []
    for request in emulator.requests_to("/embeddings", method="POST"):
        inputs = request.body["input"]
        texts += [inputs] if isinstance(inputs, str) else inputs
    for post in batch_posts(emulator):
        texts += [r["body"]["input"] for r in post["requests"]]
    return texts


def nightly(run_id: str, cache: str | bool | None, *, engine: str, **kwargs: Any) -> dict[str, Any]:
    return run_operator(
        embed(engine=engine, result_cache=cache, **kwargs), {"ti": FakeTaskInstance(run_id=run_id)}
    )


def f32(values: Any) -> array:
    return array("f", values)


def text_of(document: dict[str, Any]) -> str:
    return f"{document['title']}: {document['body']}"


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("engine", ENGINES)
def test_the_second_run_embeds_nothing_and_writes_the_same_vectors_from_the_cache(
    batch_emu, cache, tmp_path, engine, suffix
):
    first = nightly("monday", cache, engine=engine, output_path=f"file://{tmp_path}/monday{suffix}")
    assert len(embedded_inputs(batch_emu)) == 6
    batch_emu.clear_requests()

    second = nightly("tuesday", cache, engine=engine, output_path=f"file://{tmp_path}/tuesday{suffix}")

    assert embedded_inputs(batch_emu) == [] and not batch_emu.requests_to("/batches", method="POST")
    before, after = read_rows(first["output_uri"]), read_rows(second["output_uri"])
    fresh = sent_vectors([text_of(d) for d in documents(6)])
    for i, (custom_id, row) in enumerate(sorted(after.items())):
        assert row["status"] == "succeeded" and row["cached"] is True and before[custom_id]["cached"] is False
        assert f32(row["vector"]) == f32(before[custom_id]["vector"]) == fresh[i]  # float32, exactly
        assert row["dimensions"] == 1536 and row["model"] == before[custom_id]["model"]
        assert row["usage"]["cost"] == 0
        assert row["usage"]["cost_saved"] == pytest.approx(before[custom_id]["usage"]["cost"])
        assert row["usage"]["prompt_tokens"] == before[custom_id]["usage"]["prompt_tokens"]
    assert second["status"] == "completed" and second["counts"]["succeeded"] == 6
    assert second["cached"] == 6 and second["cost_usd"] == 0 and second["dimensions"] == 1536
    assert second["cost_saved_usd"] == pytest.approx(first["cost_usd"]) and first["cost_usd"] > 0
    assert second["estimated_cost_usd"] == 0 and "6 from the result cache" in second["estimate_basis"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_changed_document_alone_is_embedded_again(batch_emu, cache, engine):
    nightly("monday", cache, engine=engine)
    batch_emu.clear_requests()
    items = documents(6)
    items[3] = {**items[3], "body": "Document 3 was edited overnight."}

    manifest = nightly("tuesday", cache, engine=engine, items=items)

    assert embedded_inputs(batch_emu) == [text_of(items[3])]
    if engine == "batch":
        assert sent_ids(batch_emu) == [["doc-3"]]
    rows = read_rows(manifest["output_uri"])
    assert {c for c, r in rows.items() if not r["cached"]} == {"doc-3"}
    assert f32(rows["doc-3"]["vector"]) == sent_vectors([text_of(items[3])])[0]
    assert manifest["cached"] == 5 and manifest["counts"]["succeeded"] == 6 and manifest["cost_usd"] > 0
    batch_emu.clear_requests()
    # ... and the edited text is cached in its turn.
    assert nightly("wednesday", cache, engine=engine, items=items)["cached"] == 6
    assert embedded_inputs(batch_emu) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_vector_older_than_result_cache_ttl_is_embedded_again(batch_emu, cache, engine):
    nightly("monday", cache, engine=engine, result_cache_ttl=1)
    batch_emu.clear_requests()
    assert nightly("tuesday", cache, engine=engine, result_cache_ttl=60)["cached"] == 6
    time.sleep(2.1)  # entry ages are kept in whole seconds

    manifest = nightly("wednesday", cache, engine=engine, result_cache_ttl=1)

    assert manifest["cached"] == 0 and len(embedded_inputs(batch_emu)) == 6
    assert manifest["counts"]["succeeded"] == 6


def test_the_key_is_the_input_not_the_item_id_nor_the_engine(batch_emu, cache):
    nightly("monday", cache, engine="concurrent")
    batch_emu.clear_requests()
    renamed = [{**d, "id": f"renamed-{i}"} for i, d in enumerate(documents(6))]

    assert nightly("tuesday", cache, engine="batch", items=renamed)["cached"] == 6
    assert nightly("tuesday-2", cache, engine="concurrent", user="someone-else")["cached"] == 6
    assert embedded_inputs(batch_emu) == []


@pytest.mark.parametrize(
    "changed",
    [
        {"dimensions": 256},
        {"model": "openai/text-embedding-3-large"},
        {"text": "{{ item.body }}"},
        {"extra_body": {"input_type": "search_document"}},
    ],
    ids=["dimensions", "model", "text", "request field"],
)
def test_anything_that_changes_the_vector_is_embedded_again(batch_emu, cache, changed):
    nightly("monday", cache, engine="concurrent")
    batch_emu.clear_requests()

    manifest = nightly("tuesday", cache, engine="concurrent", **changed)

    assert manifest["cached"] == 0 and len(embedded_inputs(batch_emu)) == 6


def test_a_different_encoding_format_is_another_request(batch_emu, cache):
    nightly("monday", cache, engine="concurrent")
    batch_emu.clear_requests()

    manifest = nightly("tuesday", cache, engine="concurrent", extra_body={"encoding_format": "float"})

    assert manifest["cached"] == 0 and len(embedded_inputs(batch_emu)) == 6
    batch_emu.clear_requests()
    assert (
        nightly("wednesday", cache, engine="concurrent", extra_body={"encoding_format": "float"})["cached"]
        == 6
    )


def test_a_chat_batch_with_the_same_model_and_text_never_reads_an_embedding(batch_emu, cache):
    from tests.batch.support import summarise

    nightly("monday", cache, engine="concurrent")  # vectors cached under the embedding model
    items = [{"id": d["id"], "text": text_of(d)} for d in documents(6)]
    chat = summarise(
        engine="concurrent",
        model="openai/text-embedding-3-small",  # the same namespace...
        items=items,
        id_field="id",
        prompt="{{ item.text }}",
        result_cache=cache,
        max_failed_fraction=1.0,  # OpenRouter refuses chat with an embedding model, as it should
    )
    batch_emu.clear_requests()

    manifest = run_operator(chat, {"ti": FakeTaskInstance(run_id="tuesday", task_id="chat")})

    # Every item was asked for (and refused): none was answered with a cached vector.
    assert manifest["cached"] == 0 and len(batch_emu.requests_to("/chat/completions", method="POST")) == 6


@pytest.mark.parametrize("engine", ENGINES)
def test_failed_inputs_are_never_cached(batch_emu, cache, engine):
    if engine == "batch":
        batch_emu.batch_item_errors_next(custom_ids=["doc-1"])
    else:
        batch_emu.fail_next("/embeddings", status=400, times=1)
    first = nightly(
        "monday",
        cache,
        engine=engine,
        max_failed_fraction=1.0,
        max_inputs_per_request=1,
        max_concurrency=1,
        max_row_attempts=1,  # the failure stays: no recovery pass
    )
    failed = {c for c, r in read_rows(first["output_uri"]).items() if r["status"] != "succeeded"}
    assert len(failed) == 1 and first["counts"]["succeeded"] == 5
    batch_emu.clear_requests()

    second = nightly("tuesday", cache, engine=engine, max_failed_fraction=1.0)

    assert len(embedded_inputs(batch_emu)) == 1
    assert {c for c, r in read_rows(second["output_uri"]).items() if not r["cached"]} == failed
    assert second["counts"]["succeeded"] == 6


def test_the_config_option_is_the_default_and_false_turns_it_off(batch_emu, cache, monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULT_CACHE", cache)
    nightly("monday", None, engine="concurrent")
    batch_emu.clear_requests()

    assert nightly("tuesday", None, engine="concurrent")["cached"] == 6
    assert nightly("wednesday", False, engine="concurrent")["cached"] == 0
    assert len(embedded_inputs(batch_emu)) == 6


def test_a_dry_run_counts_the_cached_vectors_and_estimates_only_the_rest(batch_emu, cache):
    nightly("monday", cache, engine="batch", items=documents(4))
    batch_emu.clear_requests()

    manifest = nightly("tuesday", cache, engine="batch", dry_run=True)

    assert manifest["status"] == "dry_run" and manifest["cached"] == 4
    assert "2 items" in manifest["estimate_basis"] and embedded_inputs(batch_emu) == []
