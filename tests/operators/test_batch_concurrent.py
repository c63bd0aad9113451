"""OpenRouterBatchOperator(engine="concurrent") against the emulator: limits measured from the emulator's
journal, resuming after a crash without repeating finished items, and the cost cap."""

# The emulator fixtures are imported from tests.batch.support (tests/operators/conftest.py belongs to
# the chat operator's tests), so ruff sees every test argument as a redefinition.
# ruff: noqa: F811
from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_openrouter._compat import AirflowFailException
from airflow_openrouter.batch.checkpoint import PartWriter
from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterBadRequestError,
    OpenRouterError,
    OpenRouterNotFoundError,
)
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    FakeTaskInstance,
    batch_emu,
    batch_emulator,
    read_rows,
    task_context,
)

LATENCY_S = 0.15


def classify(n: int, **kwargs: Any) -> OpenRouterBatchOperator:
    options: dict[str, Any] = {
        "task_id": "classify",
        "items": [{"text": f"ticket {i}"} for i in range(n)],
        "prompt": "Classify: {{ item.text }}",
        "model": MODEL,
        "engine": "concurrent",
        **kwargs,
    }
    return OpenRouterBatchOperator(**options)


def chat_posts(emulator: Any) -> list[Any]:
    return emulator.requests_to("/chat/completions", method="POST")


def prompts_sent(emulator: Any) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in chat_posts(emulator)]


@pytest.fixture
def context(request: pytest.FixtureRequest) -> dict[str, Any]:
    return task_context(request)


def test_concurrency_and_rate_limits_hold_on_the_wire(batch_emu, context):
    batch_emu.set_latency(LATENCY_S * 1000)

    manifest = classify(12, max_concurrency=3, requests_per_minute=600).execute(context)

    assert manifest["counts"]["succeeded"] == 12 and manifest["engine"] == "concurrent"
    arrivals = sorted(r.at for r in chat_posts(batch_emu))
    # In flight at once: requests that arrived within one latency of each other.
    in_flight = max(sum(1 for t in arrivals if a - LATENCY_S * 0.9 < t <= a) for a in arrivals)
    assert in_flight <= 3
    # 600 per minute: starts at least 0.1 s apart on average.
    assert arrivals[-1] - arrivals[0] >= 11 * 0.1 * 0.9


def test_a_retry_after_a_crash_skips_the_items_already_answered(batch_emu, context, monkeypatch):
    write = PartWriter.write
    written: list[str] = []

    def crash_after_five(self: PartWriter, row: Any) -> None:
        if len(written) == 5:
            raise RuntimeError("worker lost")
        write(self, row)
        written.append(row["custom_id"])

    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="worker lost"):
        patched.setattr(PartWriter, "write", crash_after_five)
        classify(10, max_concurrency=2).execute(context)
    first_try = len(chat_posts(batch_emu))

    context["ti"].try_number = 2
    manifest = classify(10, max_concurrency=2).execute(context)

    retried = prompts_sent(batch_emu)[first_try:]
    assert not {f"Classify: ticket {i}" for i in map(int, written)} & set(retried)
    assert len(retried) == 10 - len(written)
    rows = read_rows(manifest["output_uri"])
    assert len(rows) == 10 and {r["status"] for r in rows.values()} == {"succeeded"}
    assert manifest["cost_usd"] == pytest.approx(sum(r["usage"]["cost"] for r in rows.values()))


def test_a_failed_item_is_tried_again_by_the_retry(batch_emu, context):
    batch_emu.fail_next(route="/chat/completions", status=400, times=1)
    with pytest.raises(
        AirflowFailException, match=r"1 of 4 items did not succeed.*Every failure is permanent"
    ):
        classify(4, max_concurrency=1).execute(context)

    context["ti"].try_number = 2
    manifest = classify(4, max_concurrency=1).execute(context)

    assert len(chat_posts(batch_emu)) == 5
    assert manifest["counts"]["succeeded"] == 4


def test_the_running_cost_cap_stops_new_requests_when_the_estimate_was_too_low(
    batch_emu, context, monkeypatch
):
    one = classify(1).execute({"ti": type(context["ti"])(run_id="cost-probe")})["cost_usd"]
    batch_emu.clear_requests()
    # The upper bound before sending would refuse this run. A real tokenizer can count more tokens than
    # the estimate: the billed cost, checked as answers arrive, still stops the run at the cap.
    from airflow_openrouter.cost import estimate
    from airflow_openrouter.cost.tokens import Bound

    monkeypatch.setattr(estimate, "completion_bound", lambda *a, **k: Bound(1, "max_tokens"))

    manifest = classify(20, max_concurrency=1, max_cost_usd=one * 3.5, max_failed_fraction=1.0).execute(
        context
    )

    assert len(chat_posts(batch_emu)) < 20
    assert manifest["cost_usd"] <= one * 3.5 + one * 2  # in flight when the cap was reached may finish
    rows = read_rows(manifest["output_uri"])
    capped = [r for r in rows.values() if r["status"] == "failed"]
    assert capped and all("max_cost_usd" in r["error"] for r in capped)
    assert manifest["counts"]["succeeded"] + len(capped) == 20


def test_a_run_stopped_by_the_running_cost_cap_says_to_raise_the_cap_and_a_clear_sends_only_the_rest(
    batch_emu, context, monkeypatch, tmp_path
):
    from airflow_openrouter.cost import estimate
    from airflow_openrouter.cost.tokens import Bound

    cache = f"file://{tmp_path}/cache"
    one = classify(1).execute({"ti": type(context["ti"])(run_id="cost-probe")})["cost_usd"]
    batch_emu.clear_requests()
    monkeypatch.setattr(estimate, "completion_bound", lambda *a, **k: Bound(1, "max_tokens"))

    with pytest.raises(AirflowFailException) as stopped:
        classify(20, max_concurrency=1, max_cost_usd=one * 3.5, result_cache=cache).execute(context)

    message = str(stopped.value)
    assert "raise max_cost_usd" in message and "not started: cost cap" in message
    # The inputs are fine, and max_failed_fraction would only hide the unanswered items: no such advice.
    assert "fix the inputs" not in message and "max_failed_fraction" not in message.split("allows.")[1]
    manifest = context["ti"].xcoms["return_value"]
    paid = manifest["counts"]["succeeded"]
    assert 0 < paid < 20 and len(chat_posts(batch_emu)) == paid
    # The advice is true: a clear with a higher cap sends only the items the cap kept back ...
    context["ti"].try_number = 2
    manifest = classify(20, max_concurrency=1, max_cost_usd=one * 100, result_cache=cache).execute(context)
    assert manifest["counts"]["succeeded"] == 20 and len(chat_posts(batch_emu)) == 20
    # ... and the answers paid before the cap stopped the run were cached too.
    batch_emu.clear_requests()
    again = classify(20, result_cache=cache).execute({"ti": type(context["ti"])(run_id="next-night")})
    assert again["cached"] == 20 and chat_posts(batch_emu) == []


def test_two_runs_writing_to_one_jsonl_file_do_not_skip_each_others_items(batch_emu, tmp_path):
    output = f"file://{tmp_path}/tickets.jsonl"
    for run_id in ("monday", "tuesday"):
        classify(3, output_path=output).execute({"ti": FakeTaskInstance(run_id=run_id)})

    assert len(chat_posts(batch_emu)) == 6  # the second run answered its items itself


# --- failures: transient, permanent, systemic ------------------------------------------------------


def test_transient_failures_fail_retryably_and_the_retry_resends_only_them(batch_emu, context, monkeypatch):
    for name, value in batch_emu.connection_env(max_retries=0).items():
        monkeypatch.setenv(name, value)
    batch_emu.fail_next(route="/chat/completions", status=503, times=3)

    # max_row_attempts=1: no recovery pass inside the task (see test_batch_recovery.py), the retry resends.
    with pytest.raises(OpenRouterError, match="3 of 10 items did not succeed") as failed:
        classify(10, max_concurrency=1, max_row_attempts=1).execute(context)

    message = str(failed.value)
    assert not isinstance(failed.value, AirflowFailException)  # Airflow's retry runs
    assert (
        "3 of them failed in a way that may pass" in message and "a retry sends those items again" in message
    )
    assert "would fail the same way" not in message
    assert message.endswith("Causes: 503 server_error \u00d73.")
    assert context["ti"].xcoms["return_value"]["errors"] == {"503 server_error": 3}

    context["ti"].try_number = 2
    manifest = classify(10, max_concurrency=1, max_row_attempts=1).execute(context)

    assert len(chat_posts(batch_emu)) == 13  # ten, then the three that failed
    assert manifest["status"] == "completed" and manifest["counts"]["succeeded"] == 10


def test_a_wrong_key_stops_the_run_after_the_first_401_and_fails_without_retries(wrong_key, context):
    with pytest.raises(OpenRouterAuthenticationError) as failed:
        classify(200, max_concurrency=4).execute(context)

    assert isinstance(failed.value, AirflowFailException)  # permanent: no retry
    assert len(chat_posts(wrong_key)) <= 4  # the requests already in flight, not 200
    message = str(failed.value)
    assert "comes back for every item, so the run stopped" in message and "max_failed_fraction" not in message
    assert "401 authentication \u00d7" in message and "not started: 401 authentication \u00d7" in message
    manifest = context["ti"].xcoms["return_value"]
    assert manifest["status"] == "failed" and manifest["counts"]["failed"] == 200
    rows = read_rows(manifest["output_uri"])
    not_started = [r for r in rows.values() if r["cause"] == "not started: 401 authentication"]
    assert len(not_started) >= 196 and all(r["error"].startswith("Not started") for r in not_started)
    assert "sk-or-v1-" not in json.dumps(manifest) + json.dumps(list(rows.values()))


@pytest.mark.parametrize(
    ("options", "error", "cause"),
    [
        ({"model": "openai/gpt-4o-mnii"}, OpenRouterBadRequestError, "400 bad_request"),
        (
            {"model": "mistralai/mistral-7b-instruct:free", "response_format": {"type": "object"}},
            OpenRouterNotFoundError,
            "404 not_found",
        ),
    ],
    ids=["unknown model", "no endpoint for structured output"],
)
def test_a_model_error_stops_the_run_at_the_first_occurrence(batch_emu, context, options, error, cause):
    with pytest.raises(error) as failed:
        classify(50, max_concurrency=2, **options).execute(context)

    assert isinstance(failed.value, AirflowFailException)
    assert len(chat_posts(batch_emu)) <= 2
    assert context["ti"].xcoms["return_value"]["errors"][f"not started: {cause}"] >= 48


def test_the_manifest_has_the_same_keys_as_the_batch_engines_and_names_the_provider(batch_emu, context):
    manifest = classify(4).execute(context)

    assert manifest["status"] == "completed" and manifest["provider"] == "OpenAI"
    assert manifest["providers"] == {"OpenAI": 4} and manifest["errors"] == {}
    assert manifest["batch_ids"] == [] and manifest["batch_count"] == 0
    assert set(manifest) == {
        "output_uri", "engine", "status", "model", "provider", "providers", "total", "counts", "errors",
        "batch_ids", "batch_count", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
        "cached_tokens", "reasoning_tokens", "cost_by_status", "list_price_usd",
        "upstream_inference_cost_usd", "byok_rows", "cached", "cost_saved_usd", "estimated_cost_usd",
        "estimate_basis", "started_at", "finished_at", "duration_s", "recovery",
    }  # fmt: skip
