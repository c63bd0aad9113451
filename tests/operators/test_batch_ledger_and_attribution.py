"""The exact per-row ledger and the attribution of every request, in both engines: checked against what
the emulator billed (its generations) and what it received (its journal)."""

# ruff: noqa: F811
from __future__ import annotations

import json

import pytest

from airflow_openrouter._compat import TaskDeferred
from airflow_openrouter.batch.items import item_custom_id
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    FakeTaskInstance,
    Summary,
    batch_emu,
    batch_emulator,
    batch_posts,
    context,
    read_rows,
    run_operator,
    summarise,
)

ENGINES = ["batch", "concurrent"]
LEDGER = {
    "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "cost",
    "cost_details", "is_byok",
}  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_every_row_carries_the_exact_ledger_of_its_generation(batch_emu, context, engine):
    manifest = run_operator(summarise(engine=engine, response_format=Summary, max_tokens=60), context)

    rows = read_rows(manifest["output_uri"])
    for row in rows.values():
        assert set(row["usage"]) == LEDGER
        assert (
            row["usage"]["total_tokens"] == row["usage"]["prompt_tokens"] + row["usage"]["completion_tokens"]
        )
        assert row["cached"] is False and row["usage"]["is_byok"] is False and row["model"] == MODEL
        assert row["generation_id"].startswith("gen-batch-" if engine == "batch" else "gen-")
        if engine == "concurrent":  # a sync generation can be looked up (GET /generation)
            generation = batch_emu.generation(row["generation_id"])
            assert row["usage"]["cost"] == pytest.approx(generation["total_cost"])
            assert row["usage"]["prompt_tokens"] == generation["tokens_prompt"]
            assert row["usage"]["completion_tokens"] == generation["tokens_completion"]
            assert row["provider"] == generation["provider_name"]
    assert manifest["cost_usd"] == pytest.approx(sum(r["usage"]["cost"] for r in rows.values()))
    assert manifest["cost_by_status"] == {"succeeded": pytest.approx(manifest["cost_usd"])}
    assert manifest["cost_usd"] == pytest.approx(batch_emu.billed_usd)
    # The sync list price of the same tokens: the Batch API's half price shows beside it.
    assert manifest["list_price_usd"] == pytest.approx(manifest["cost_usd"] * (2 if engine == "batch" else 1))
    assert manifest["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in rows.values())


def test_cost_is_split_by_status(batch_emu, context):
    batch_emu.batch_invalid_output_next(custom_ids=["2"])
    batch_emu.batch_item_errors_next(custom_ids=["4"])

    manifest = run_operator(
        summarise(response_format=Summary, max_failed_fraction=0.5, max_row_attempts=1), context
    )

    rows = read_rows(manifest["output_uri"])
    assert rows["2"]["status"] == "invalid_output" and rows["2"]["usage"]["cost"] > 0
    assert rows["4"]["status"] == "failed" and rows["4"]["usage"] is None
    split = manifest["cost_by_status"]
    assert set(split) == {"succeeded", "invalid_output"}
    assert split["invalid_output"] == pytest.approx(rows["2"]["usage"]["cost"])
    assert sum(split.values()) == pytest.approx(manifest["cost_usd"])


def test_the_manifest_stays_under_2_kb_with_every_cost_field_filled():
    from decimal import Decimal

    from airflow_openrouter.batch import results
    from airflow_openrouter.batch.budget import BATCH_ASSUMPTION, estimate_lines
    from airflow_openrouter.cost.estimate import JobEstimate
    from airflow_openrouter.cost.prices import ModelPrice

    tally = results.Tally()
    causes = ["503 server_error", "429 rate_limit", "timeout", "connection error", "invalid output",
              "403 moderation", "provider_overloaded", "batch expired", "not started: cost cap", "missing",
              "rate_limit_exceeded", "batch not found"]  # fmt: skip
    for i in range(20_000):
        tally.add(
            {
                "custom_id": str(i), "index": i, "status": results.ROW_STATUSES[i % 6], "cause": causes[i % 12],
                "provider": f"Provider {i % 5} Inference", "transient": True, "cached": i % 7 == 0,
                "usage": {"prompt_tokens": 123_456, "completion_tokens": 65_432, "cost": 0.0123456789,
                          "cached_tokens": 5, "reasoning_tokens": 7, "cost_saved": 0.0123456789,
                          "cost_details": {"upstream_inference_cost": 0.0123456789}, "is_byok": i % 2 == 0}
                if results.ROW_STATUSES[i % 6] in ("succeeded", "invalid_output", "failed") else None,
            }
        )  # fmt: skip
    model = "meta-llama/llama-3.3-70b-instruct-turbo-preview:floor"
    price = ModelPrice(model, model.split(":")[0], Decimal("0.00000088"), Decimal("0.0000012345"))
    lines = [
        {"custom_id": f"doc-{i}", "body": {"messages": [{"role": "user", "content": "y" * i}], "max_tokens": 100 + i % 9}}
        for i in range(500)
    ]  # fmt: skip
    passes = (
        estimate_lines(lines, price, "batch"),
        estimate_lines(lines, price, "batch", name="recovery pass 1"),
    )
    estimate = JobEstimate(
        model,
        price,
        passes,
        earlier_usd=12.5,
        cached=400,
        price_note=f"priced as {price.listed_as}; {BATCH_ASSUMPTION}",
    )
    manifest = results.build_manifest(
        output_uri="s3://aws_default@company-data-lake-prod/openrouter/nightly_document_enrichment/"
        "extract_fields/scheduled__2026-11-25T06_00_00_00_00.17.jsonl",
        engine="batch", model=model, tally=tally, status="completed_with_failures",
        batch_ids=[f"batch_{i:024x}" for i in range(40)], started_at=0.0, price=price, estimate=estimate.summary(),
    )  # fmt: skip

    assert len(json.dumps(manifest)) < 2048, json.dumps(manifest, indent=1)
    assert manifest["estimate_basis"].startswith("first pass: 500 items, 31,376 prompt + up to 51,990")
    assert "(max_tokens 100-108)" in manifest["estimate_basis"]


# --- attribution -------------------------------------------------------------------------------------


def test_every_concurrent_request_says_which_task_run_and_try_sent_it(batch_emu, context):
    context["ti"].try_number = 3
    run_operator(summarise(engine="concurrent"), context)

    ti = context["ti"]
    posts = batch_emu.requests_to("/chat/completions", method="POST")
    assert len(posts) == 6
    for post in posts:
        attribution = post.attribution
        assert attribution.metadata == {
            "dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": "-1", "try_number": "3",
        }  # fmt: skip
        assert attribution.user == f"airflow/{ti.dag_id}/{ti.task_id}"
        assert attribution.session_id == f"airflow/{ti.dag_id}/{ti.task_id}/{ti.run_id}"


def test_generations_show_the_user_and_the_session(batch_emu, context):
    manifest = run_operator(summarise(engine="concurrent", items=[{"text": "one"}]), context)

    row = read_rows(manifest["output_uri"])["0"]
    generation = batch_emu.generation(row["generation_id"])
    ti = context["ti"]
    assert generation["external_user"] == f"airflow/{ti.dag_id}/{ti.task_id}"
    assert generation["session_id"] == f"airflow/{ti.dag_id}/{ti.task_id}/{ti.run_id}"


def test_batch_bodies_carry_user_and_metadata_but_no_session(batch_emu, context):
    run_operator(summarise(), context)

    (post,) = batch_emu.requests_to("/batches", method="POST")
    ti = context["ti"]
    assert "metadata" not in post.body  # not a Batch API field
    assert len(post.item_attributions) == 6
    for custom_id, attribution in post.item_attributions.items():
        assert attribution.session_id is None  # batch generations are not grouped by session
        assert attribution.user == f"airflow/{ti.dag_id}/{ti.task_id}"
        assert attribution.metadata["run_id"] == ti.run_id and attribution.metadata["try_number"] == "1"
        assert item_custom_id(custom_id) in {str(i) for i in range(6)}


def test_the_users_own_user_session_and_metadata_are_kept(batch_emu, context):
    mine = {"team": "finance", "dag_id": "my-own-label"}
    run_operator(
        summarise(engine="concurrent", user="end-user-7", extra_body={"metadata": mine, "session_id": "s-1"}),
        context,
    )

    for post in batch_emu.requests_to("/chat/completions", method="POST"):
        attribution = post.attribution
        assert attribution.user == "end-user-7" and attribution.session_id == "s-1"
        assert attribution.metadata["team"] == "finance" and attribution.metadata["dag_id"] == "my-own-label"
        assert attribution.metadata["task_id"] == context["ti"].task_id  # ours fill the keys left


def test_sixteen_metadata_pairs_of_the_user_leave_no_room_and_the_request_is_accepted(batch_emu, context):
    mine = {f"key{i}": "v" for i in range(16)}
    manifest = run_operator(summarise(engine="concurrent", extra_body={"metadata": mine}), context)

    assert manifest["counts"]["succeeded"] == 6
    assert all(
        p.attribution.metadata == mine for p in batch_emu.requests_to("/chat/completions", method="POST")
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_ids_past_the_documented_limits_are_cut_safely_and_accepted(batch_emu, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    run_id = "scheduled__2026-12-01T00:00:00+00:00__" + "\U0001f600" * 300  # emoji: 2 UTF-16 units each
    ti = FakeTaskInstance(run_id=run_id, task_id="t" * 250, dag_id="d" * 250)

    manifest = run_operator(summarise(engine=engine, task_id="t" * 250), {"ti": ti})

    assert manifest["counts"]["succeeded"] == 6  # the emulator checks the documented limits: no 400
    if engine == "batch":
        attributions = list(batch_emu.requests_to("/batches", method="POST")[0].item_attributions.values())
    else:
        attributions = [p.attribution for p in batch_emu.requests_to("/chat/completions", method="POST")]
    for attribution in attributions:
        value = attribution.metadata["run_id"]
        assert len(value.encode("utf-16-le")) // 2 <= 512 and value.startswith("scheduled__2026-12-01")
        assert value.rsplit("~", 1)[1].isalnum() and len(value.rsplit("~", 1)[1]) == 8
        if attribution.session_id is not None:
            assert len(attribution.session_id.encode("utf-16-le")) // 2 <= 256


def test_a_retry_with_another_try_number_re_attaches_without_resubmitting(batch_emu, context):
    with pytest.raises(TaskDeferred):
        summarise().execute(context)
    context["ti"].try_number = 2

    manifest = run_operator(summarise(), context)

    (post,) = batch_emu.requests_to("/batches", method="POST")  # the attribution is not in the fingerprint
    assert {a.metadata["try_number"] for a in post.item_attributions.values()} == {"1"}
    assert manifest["counts"]["succeeded"] == 6
