"""Row recovery (max_row_attempts, recovery_engine, fallback_models) on both engines, against the emulator:
what the journal received, and what the rows and the manifest say."""

# The emulator fixtures are imported from tests.batch.support: ruff sees the test arguments as redefinitions.
# ruff: noqa: F811
from __future__ import annotations

from typing import Any

import pytest

from airflow_openrouter._compat import AirflowFailException
from airflow_openrouter.exceptions import OpenRouterError
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    Summary,
    batch_emu,
    batch_emulator,
    context,
    read_rows,
)

FALLBACK = "anthropic/claude-3.5-haiku"
REPAIR_PROMPT = "Your previous reply does not match the required JSON format"


def extract(n: int, **kwargs: Any) -> OpenRouterBatchOperator:
    options: dict[str, Any] = {
        "task_id": "extract",
        "items": [{"id": f"doc-{i}", "text": f"Document {i} says hello."} for i in range(n)],
        "prompt": "Summarise: {{ item.text }}",
        "id_field": "id",
        "model": MODEL,
        "response_format": Summary,
        "engine": "concurrent",
        "max_concurrency": 32,
        **kwargs,
    }
    return OpenRouterBatchOperator(**options)


def chat_posts(emulator: Any) -> list[Any]:
    return emulator.requests_to("/chat/completions", method="POST")


@pytest.fixture
def no_http_retries(batch_emu, monkeypatch):
    """Failed requests surface at once (no retry inside the hook): recovery is what sends them again."""
    for name, value in batch_emu.connection_env(max_retries=0).items():
        monkeypatch.setenv(name, value)
    return batch_emu


# --- the concurrent engine -------------------------------------------------------------------------


def test_concurrent_recovery_resends_failed_rows_and_repairs_invalid_ones(no_http_retries, context):
    emulator = no_http_retries
    emulator.fail_next(route="/chat/completions", status=503, times=50)
    emulator.invalid_output_next(times=30)

    manifest = extract(1000).execute(context)

    rows = read_rows(manifest["output_uri"])
    assert manifest["status"] == "completed" and manifest["counts"]["succeeded"] == 1000
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    recovered = {c: r for c, r in rows.items() if r["attempts"] == 2}
    assert len(recovered) == 80 and len(chat_posts(emulator)) == 1080  # one pass, exactly those rows
    earlier = [r["history"][0] for r in recovered.values()]
    assert sorted(e["status"] for e in earlier).count("failed") == 50
    assert [e["cause"] for e in earlier].count("invalid output") == 30
    assert all(r["history"] == [] and r["attempts"] == 1 for c, r in rows.items() if c not in recovered)
    # The invalid replies went back with their validation errors, in the original conversation.
    repairs = [p.body for p in chat_posts(emulator)[1000:] if len(p.body["messages"]) > 1]
    assert len(repairs) == 30
    for body in repairs:
        user, reply, errors = body["messages"]
        assert user["content"].startswith("Summarise: Document") and reply["role"] == "assistant"
        assert errors["content"].startswith(REPAIR_PROMPT)
    recovery = manifest["recovery"]
    assert recovery["rows"] == 80 and recovery["recovered"] == 80 and recovery["max_row_attempts"] == 2
    assert recovery["passes"][0]["attempt"] == 2
    billed = sum(r["usage"]["cost"] for r in rows.values()) + sum(e["cost"] for e in earlier)
    assert manifest["cost_usd"] == pytest.approx(billed) == pytest.approx(emulator.billed_usd)
    second = sum(r["usage"]["cost"] for r in recovered.values())
    assert recovery["cost_usd"] == pytest.approx(second) and second > 0


def test_concurrent_max_row_attempts_1_keeps_failed_and_invalid_rows(no_http_retries, context):
    no_http_retries.fail_next(route="/chat/completions", status=503, times=2)
    no_http_retries.invalid_output_next(times=1)

    with pytest.raises(OpenRouterError, match="3 of 10 items did not succeed"):
        extract(10, max_row_attempts=1, max_concurrency=1).execute(context)

    assert len(chat_posts(no_http_retries)) == 10
    manifest = context["ti"].xcoms["return_value"]
    assert manifest["counts"]["failed"] == 2 and manifest["counts"]["invalid_output"] == 1
    assert manifest["recovery"]["rows"] == 0


def test_concurrent_recovery_does_not_retry_a_permanent_error(no_http_retries, context):
    no_http_retries.fail_next(route="/chat/completions", status=400, times=1)

    with pytest.raises(AirflowFailException, match="1 of 5 items did not succeed"):
        extract(5, max_concurrency=1).execute(context)

    assert len(chat_posts(no_http_retries)) == 5
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["attempts"] == 1 and failed[0]["cause"] == "400 bad_request"


def test_concurrent_fallback_models_move_a_provider_error_to_the_next_model(no_http_retries, context):
    no_http_retries.fail_next(route="/chat/completions", status=502, times=1)

    manifest = extract(4, max_concurrency=1, fallback_models=[FALLBACK]).execute(context)

    assert manifest["status"] == "completed"
    models = [p.body["model"] for p in chat_posts(no_http_retries)]
    assert models == [MODEL] * 4 + [FALLBACK]
    moved = [r for r in read_rows(manifest["output_uri"]).values() if r["attempts"] == 2]
    assert len(moved) == 1 and moved[0]["model"].startswith(FALLBACK)
    assert moved[0]["history"][0]["cause"] == "502 server_error"
