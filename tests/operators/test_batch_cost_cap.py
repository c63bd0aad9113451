"""The estimate and the cap, before anything is sent: both engines, against the emulator's /models prices
and its exact bills. The journal proves what was not sent; the manifest and the error show the figures."""

# ruff: noqa: F811
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from airflow_openrouter._compat import AirflowFailException
from airflow_openrouter.exceptions import OpenRouterCostLimitError, OpenRouterError
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    batch_emu,
    batch_emulator,
    batch_posts,
    context,
    docs,
    record_file,
    run_operator,
    summarise,
)

PROMPT_PRICE, COMPLETION_PRICE = 0.15e-6, 0.6e-6  # openai/gpt-4o-mini in the emulator's /models


def sent(emulator: Any) -> int:
    """Requests that cost something: chat completions and batch submissions."""
    return len(emulator.requests_to("/chat/completions", method="POST")) + len(batch_posts(emulator))


def prompt_tokens(indexes: range | list[int]) -> int:
    """What the emulator bills for the prompts of ``summarise()``'s items (its documented rule)."""
    return sum(math.ceil(len(f"Summarise document {i}: Document {i} says hello.") / 4) for i in indexes)


def upper_bound(indexes: range | list[int], max_tokens: int, factor: float) -> float:
    return (prompt_tokens(indexes) * PROMPT_PRICE + len(indexes) * max_tokens * COMPLETION_PRICE) * factor


@pytest.mark.parametrize("engine", ["batch", "concurrent"])
def test_past_the_cap_nothing_is_sent_and_the_error_shows_estimate_cap_and_contributors(
    batch_emu, context, engine
):
    operator = summarise(engine=engine, max_tokens=4096, max_cost_usd=0.001)

    with pytest.raises(OpenRouterCostLimitError) as refused:
        run_operator(operator, context)

    assert isinstance(refused.value, AirflowFailException)  # permanent: a retry would estimate the same
    assert sent(batch_emu) == 0
    expected = upper_bound(range(6), 4096, 0.5 if engine == "batch" else 1.0)
    assert refused.value.estimate_usd == pytest.approx(expected)
    assert refused.value.max_cost_usd == 0.001
    message = str(refused.value)
    assert f"up to ${expected:.4f}" in message and "max_cost_usd=$0.001" in message
    assert "6 items \u00d7 \u2264 4,096 completion tokens (max_tokens)" in refused.value.contributors[0]
    assert "nothing was" in message and "max_tokens" in message
    assert not record_file(context).exists()  # no batch record for a run that submitted nothing


@pytest.mark.parametrize("engine", ["batch", "concurrent"])
def test_the_estimate_is_an_upper_bound_of_the_bill_and_exact_for_the_prompts(batch_emu, context, engine):
    manifest = run_operator(summarise(engine=engine, max_tokens=40, max_cost_usd=1.0), context)

    prompts = prompt_tokens(range(6))
    assert manifest["prompt_tokens"] == prompts  # the estimator's rule is the emulator's
    assert manifest["estimated_cost_usd"] == pytest.approx(
        upper_bound(range(6), 40, 0.5 if engine == "batch" else 1)
    )
    assert manifest["cost_usd"] <= manifest["estimated_cost_usd"]
    assert batch_emu.billed_usd == pytest.approx(manifest["cost_usd"])
    basis = manifest["estimate_basis"]
    assert f"6 items, {prompts} prompt + up to 240 completion tokens (max_tokens 40)" in basis
    assert "tokens = chars/4" in basis and "$0.15/$0.60 per 1M" in basis
    assert ("x0.5 Batch API (assumed: /models has no batch price)" in basis) == (engine == "batch")
    assert len(json.dumps(manifest)) < 2048


def test_without_max_tokens_the_bound_is_the_models_max_completion_tokens(batch_emu, context):
    with pytest.raises(OpenRouterCostLimitError) as refused:
        run_operator(summarise(engine="concurrent", max_cost_usd=0.05), context)

    # gpt-4o-mini's top_provider.max_completion_tokens in /models is 16,384.
    assert "6 items \u00d7 \u2264 16,384 completion tokens (model max_completion_tokens)" in str(
        refused.value
    )
    assert sent(batch_emu) == 0


def test_an_unpriced_model_cannot_be_capped_and_nothing_is_sent(batch_emu, context):
    with pytest.raises(
        OpenRouterCostLimitError, match=r"cannot be checked.*openai/gpt-5-nonexistent.*/models"
    ):
        run_operator(summarise(model="openai/gpt-5-nonexistent", max_tokens=10, max_cost_usd=1.0), context)

    assert sent(batch_emu) == 0


@pytest.mark.parametrize("engine", ["batch", "concurrent"])
def test_a_cap_that_cannot_be_checked_because_models_is_down_fails_retryably(batch_emu, context, engine):
    # /models answering 503 (after the hook's retries) is a passing outage, not an unknown model: a retry
    # reads the prices again. A permanent "check the model id" error would be wrong advice.
    batch_emu.fail_next("/models", status=503, times=10)

    with pytest.raises(OpenRouterError) as caught:
        run_operator(summarise(engine=engine, max_tokens=10, max_cost_usd=1.0), context)

    assert not isinstance(caught.value, AirflowFailException), caught.value
    assert "max_cost_usd" in str(caught.value) and "/models" in str(caught.value)
    assert "model id" not in str(caught.value) and "retry" in str(caught.value).lower()
    assert sent(batch_emu) == 0


def test_a_finished_run_cleared_while_models_is_down_sends_nothing_and_is_not_refused(batch_emu, context):
    first = run_operator(summarise(engine="concurrent", max_tokens=10, max_cost_usd=1.0), context)
    batch_emu.clear_requests()
    batch_emu.fail_next("/models", status=503, times=10)

    context["ti"].try_number = 2  # a clear: every item has its row, nothing is left to price
    again = run_operator(summarise(engine="concurrent", max_tokens=10, max_cost_usd=1.0), context)

    assert again["counts"] == first["counts"] and sent(batch_emu) == 0


def test_a_cap_that_cannot_be_checked_because_of_the_key_names_the_key_not_the_model(
    batch_emu, context, monkeypatch
):
    conn = json.loads(batch_emu.connection_json(max_retries=1))
    conn["password"] = "sk-or-v1-" + "ab12" * 8 + "\u00fc" + "cd34" * 8  # a key pasted with a non-ASCII char
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", json.dumps(conn))

    with pytest.raises(OpenRouterError) as caught:
        run_operator(summarise(max_tokens=10, max_cost_usd=1.0), context)

    assert isinstance(caught.value, AirflowFailException) and "API key" in str(caught.value)
    assert "model id" not in str(caught.value) and conn["password"] not in str(caught.value)
    assert sent(batch_emu) == 0


def test_an_unpriced_model_without_a_cap_is_sent_and_the_manifest_says_the_price_is_unknown(
    batch_emu, context
):
    with pytest.raises(OpenRouterError, match="not a valid model ID"):  # the emulator's answer to it
        run_operator(summarise(engine="concurrent", model="openai/gpt-5-nonexistent", max_tokens=10), context)

    manifest = context["ti"].xcoms["return_value"]
    assert manifest["estimated_cost_usd"] is None and manifest["list_price_usd"] is None
    assert "unknown price: openai/gpt-5-nonexistent is not listed in /models" in manifest["estimate_basis"]


@pytest.mark.parametrize("engine", ["batch", "concurrent"])
def test_a_dry_run_renders_checks_and_estimates_but_sends_and_writes_nothing(batch_emu, context, engine):
    manifest = run_operator(summarise(engine=engine, max_tokens=40, dry_run=True), context)

    assert manifest["status"] == "dry_run" and manifest["total"] == 6
    assert manifest["estimated_cost_usd"] == pytest.approx(
        upper_bound(range(6), 40, 0.5 if engine == "batch" else 1)
    )
    assert [(r.method, r.route) for r in batch_emu.requests_to("/**")] == [("GET", "/models")]
    results = Path(manifest["output_uri"].removeprefix("file://"))
    assert not results.parent.exists()  # no results file, part files or batch record
    assert "return_value" not in context["ti"].xcoms and "batch_ids" not in context["ti"].xcoms


def test_a_dry_run_over_the_cap_fails_as_the_real_run_would(batch_emu, context):
    with pytest.raises(OpenRouterCostLimitError):
        run_operator(summarise(max_tokens=4096, max_cost_usd=0.0001, dry_run=True), context)

    assert sent(batch_emu) == 0


def test_a_dry_run_fails_on_an_item_that_cannot_be_rendered(batch_emu, context):
    from airflow_openrouter.prompts import PromptRenderError

    items = [{"text": "a"}, {"text": "b"}, {"body": "no text field"}]
    with pytest.raises(PromptRenderError, match="Item 2"):
        run_operator(summarise(items=items, prompt="{{ item.text }}", dry_run=True), context)
    assert sent(batch_emu) == 0


# --- the budget survives retries and clears --------------------------------------------------------


def test_a_concurrent_retry_counts_what_earlier_tries_were_billed(batch_emu, context, monkeypatch):
    from airflow_openrouter.batch.checkpoint import PartWriter

    write = PartWriter.write
    written: list[Any] = []

    def crash_after_three(self: PartWriter, row: Any) -> None:
        write(self, row)
        written.append(row)
        if len(written) == 3:
            raise KeyboardInterrupt("the worker dies")

    monkeypatch.setattr(PartWriter, "write", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_operator(summarise(engine="concurrent", max_tokens=40, max_concurrency=1), context)
    monkeypatch.setattr(PartWriter, "write", write)
    billed = sum(r["usage"]["cost"] for r in written)
    rest = upper_bound(sorted(set(range(6)) - {r["index"] for r in written}), 40, 1.0)

    context["ti"].try_number = 2
    with pytest.raises(OpenRouterCostLimitError) as refused:  # the rest alone fits, not with try 1's bill
        run_operator(summarise(engine="concurrent", max_tokens=40, max_cost_usd=billed + rest / 2), context)
    assert "billed by earlier tries of this task run" in str(refused.value)
    assert refused.value.estimate_usd == pytest.approx(billed + rest)
    assert len(batch_emu.requests_to("/chat/completions", method="POST")) == 3

    context["ti"].try_number = 3
    manifest = run_operator(
        summarise(engine="concurrent", max_tokens=40, max_cost_usd=billed + rest), context
    )
    assert manifest["counts"]["succeeded"] == 6
    assert len(batch_emu.requests_to("/chat/completions", method="POST")) == 6


def test_a_batch_retry_counts_what_earlier_tries_were_billed(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=["1", "4"])  # transient item errors: a retry resends them
    with pytest.raises(OpenRouterError, match="resubmits those items"):
        run_operator(summarise(max_tokens=40, deferrable=False, max_row_attempts=1), context)
    billed = sum(json.loads(record_file(context).read_text())["billed"].values())
    assert billed == pytest.approx(batch_emu.billed_usd) and billed > 0
    resend = upper_bound([1, 4], 40, 0.5)

    context["ti"].try_number = 2
    with pytest.raises(OpenRouterCostLimitError, match="billed by earlier tries"):
        run_operator(
            summarise(max_tokens=40, deferrable=False, max_cost_usd=billed + resend / 2, max_row_attempts=1),
            context,
        )
    assert len(batch_posts(batch_emu)) == 1

    context["ti"].try_number = 3
    manifest = run_operator(
        summarise(max_tokens=40, deferrable=False, max_cost_usd=billed + resend, max_row_attempts=1), context
    )
    assert manifest["counts"]["succeeded"] == 6
    assert [len(p["requests"]) for p in batch_posts(batch_emu)] == [6, 2]


def test_a_batch_still_running_counts_its_own_estimate_against_a_later_try(batch_emu, context):
    from airflow_openrouter._compat import TaskDeferred

    with pytest.raises(TaskDeferred):
        summarise(max_tokens=40).execute(context)  # submitted; the worker dies while deferred
    record = json.loads(record_file(context).read_text())
    (batch,) = record["batches"]
    assert batch["estimated_usd"] == pytest.approx(upper_bound(range(6), 40, 0.5))
    assert record["estimate"]["estimated_cost_usd"] == pytest.approx(batch["estimated_usd"])


def test_changed_inputs_carry_what_the_task_run_already_committed(batch_emu, context):
    from airflow_openrouter._compat import TaskDeferred

    with pytest.raises(TaskDeferred):
        summarise(max_tokens=40).execute(context)
    committed = upper_bound(range(6), 40, 0.5)

    context["ti"].try_number = 2  # a clear with other inputs: the first batch keeps running, and is billed
    with pytest.raises(OpenRouterCostLimitError) as refused:
        summarise(max_tokens=40, items=docs(5), max_cost_usd=committed * 1.5).execute(context)
    assert refused.value.estimate_usd == pytest.approx(committed + upper_bound(range(5), 40, 0.5))
    assert len(batch_posts(batch_emu)) == 1


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("max_cost_usd", -1),
        ("max_cost_usd", "5"),
        ("dry_run", "yes"),
        ("result_cache", 3),
        ("result_cache_ttl", -5),
    ],
)
def test_bad_cost_arguments_fail_when_the_dag_is_parsed(argument, value):
    from airflow_openrouter.exceptions import OpenRouterConfigError

    with pytest.raises(OpenRouterConfigError, match=f"Task 'summarise': {argument} must be"):
        summarise(**{argument: value})
