"""Embeddings batches (``endpoint: "/v1/embeddings"``): what the Batch API accepts, result rows carrying the
embeddings list body, and half-price usage that is exactly tokens x price x 0.5. Every JSON answer is
checked with the SDK models (``sdk_oracle``)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import submit

SMALL = "openai/text-embedding-3-small"
TEXTS = ["Quarterly revenue grew", "Churn fell in the north", "A note on sourdough"]


@pytest.fixture
def client(checked_client: httpx.Client) -> httpx.Client:
    """Every JSON answer of this module is checked against the SDK models."""
    return checked_client


def embeddings_batch(bodies: list[dict[str, Any]], model: str = SMALL, **top: Any) -> dict[str, Any]:
    return {
        "endpoint": "/v1/embeddings",
        "model": model,
        **top,
        "requests": [{"custom_id": f"doc-{i}", "body": body} for i, body in enumerate(bodies)],
    }


def completed_rows(emu: OpenRouterEmulator, client: httpx.Client, body: dict[str, Any]) -> tuple[dict, dict]:
    created = submit(client, body)
    assert created.status_code == 202, created.text
    emu.advance(10)
    batch = client.get(f"/batches/{created.json()['id']}").json()
    assert batch["status"] == "completed", batch
    return batch, {row["custom_id"]: row for row in batch["results"]}


def test_rows_carry_the_sync_vectors_at_half_the_sync_price(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    bodies = [{"input": TEXTS[:2]}, {"input": TEXTS[2], "dimensions": 64}, {"input": [[3, 1, 4, 1, 5]]}]
    batch, rows = completed_rows(emu, client, embeddings_batch(bodies))
    assert batch["endpoint"] == "/v1/embeddings" and batch["provider"] == "OpenAI"
    for i, body in enumerate(bodies):
        row = rows[f"doc-{i}"]
        assert row["error"] is None and row["response"]["status_code"] == 200
        result = row["response"]["body"]
        assert result["object"] == "list" and result["id"].startswith("gen-batch-")
        sync = client.post("/embeddings", json={"model": SMALL, **body}).json()
        assert [d["embedding"] for d in result["data"]] == [d["embedding"] for d in sync["data"]]
        assert result["usage"]["prompt_tokens"] == sync["usage"]["prompt_tokens"]
        assert Decimal(repr(result["usage"]["cost"])) * 2 == Decimal(repr(sync["usage"]["cost"]))


def test_batch_usage_is_exactly_the_tokens_at_half_the_published_price(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    bodies = [{"input": f"document number {i} " * (i + 1)} for i in range(40)]
    batch, rows = completed_rows(emu, client, embeddings_batch(bodies))
    tokens = sum(row["response"]["body"]["usage"]["prompt_tokens"] for row in rows.values())
    models = {m["id"]: m for m in client.get("/embeddings/models").json()["data"]}
    price = Decimal(models[SMALL]["pricing"]["prompt"])
    usage = batch["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == tokens and usage["completion_tokens"] == 0
    assert Decimal(repr(usage["cost"])) == tokens * price * Decimal("0.5")
    assert sum(Decimal(repr(r["response"]["body"]["usage"]["cost"])) for r in rows.values()) == Decimal(
        repr(usage["cost"])
    )
    assert emu.billed_usd == usage["cost"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b["requests"][0]["body"].update(input_type="search_document"),
            "body.input_type is not supported",
        ),
        (
            lambda b: b["requests"][1]["body"].update(provider={"only": ["openai"]}),
            "body.provider is not supported",
        ),
        (
            lambda b: b.update(provider={"only": ["openai"]}),
            "provider is not supported for embeddings batches",
        ),
        (
            lambda b: b["requests"][0]["body"].update(input=[{"content": [{"type": "text", "text": "x"}]}]),
            "requests[0] has multimodal input",
        ),
        (lambda b: b.update(model="qwen/qwen3-embedding-8b"), "does not have a :batch endpoint"),
        (lambda b: b.update(model="openai/gpt-4o-mini"), "is not an embedding model"),
        (lambda b: b["requests"][0]["body"].update(model="openai/text-embedding-3-large"), "does not match"),
    ],
    ids=[
        "input_type",
        "body-provider",
        "batch-provider",
        "multimodal",
        "no-batch-variant",
        "chat-model",
        "model-mismatch",
    ],
)
def test_what_the_batch_api_refuses_is_refused_at_submission(
    emu: OpenRouterEmulator, client: httpx.Client, change: Any, message: str
) -> None:
    body = embeddings_batch([{"input": text} for text in TEXTS])
    change(body)
    response = submit(client, body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert client.get("/batches").json()["data"] == []


def test_an_invalid_body_fails_the_whole_batch_after_validation(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    body = embeddings_batch([{"input": "fine"}, {"input": ""}])
    created = submit(client, body)
    assert created.status_code == 202
    emu.advance(10)
    batch = client.get(f"/batches/{created.json()['id']}").json()
    assert batch["status"] == "failed" and batch["results"] is None
    assert "requests[1] (custom_id 'doc-1')" in batch["error"]["message"]
    assert "empty string" in batch["error"]["message"]
    assert emu.billed_usd == 0


def test_unknown_fields_and_a_top_level_metadata_are_dropped_silently(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    body = embeddings_batch(
        [{"input": TEXTS[0], "user": "dag:embed", "extra_field": 1}], metadata={"dag_id": "d"}
    )
    batch, rows = completed_rows(emu, client, body)
    assert "metadata" not in batch and rows["doc-0"]["error"] is None
    (recorded,) = emu.requests_to("/batches", method="POST")
    assert json.loads(json.dumps(recorded.body))["metadata"] == {"dag_id": "d"}
    assert recorded.item_attributions["doc-0"].user == "dag:embed"


def test_failed_items_are_rows_with_an_error_and_are_not_billed(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.batch_item_errors_next(custom_ids=["doc-1"])
    batch, rows = completed_rows(emu, client, embeddings_batch([{"input": t} for t in TEXTS]))
    assert rows["doc-1"]["response"] is None and rows["doc-1"]["error"]["type"] == "server_error"
    billed = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in rows.values() if r["response"])
    assert batch["usage"]["prompt_tokens"] == billed
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
