"""Emulator responses validated against the official OpenAPI spec, the batch supplement, and the
official SDKs' own pydantic models.

The specs in ``spec/`` are verbatim copies of ``shared/reference``; schemas are checked with
Draft 2020-12 and a ``referencing`` registry, so the batch file's cross-file ``$ref``s resolve. The SDK
models are newer than the specs and win where they disagree: every JSON answer any test in this module
receives is also validated, strictly, with the ``openrouter`` (and for chat the ``openai``) SDK's models
(``sdk_oracle``), so a field a new SDK release requires fails here naming the endpoint and the field.
"""

from __future__ import annotations

import json

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from . import sdk_oracle
from .conftest import BATCH_SPEC, OpenApi
from .helpers import MODEL, batch_body, sse_events, submit, user

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
TOOL = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}},
}


@pytest.fixture
def client(checked_client: httpx.Client) -> httpx.Client:
    """Every JSON answer of this module is checked against the SDK models."""
    return checked_client


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"max_tokens": 3},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}},
        {"tools": [TOOL], "tool_choice": "required"},
        {"model": "anthropic/claude-3.5-haiku"},
        {"response_format": {"type": "json_object"}, "seed": 7},
        {"logprobs": True, "top_logprobs": 2},
        {"model": "mistralai/mistral-7b-instruct:free"},
    ],
    ids=["text", "length", "json-schema", "tool-call", "null-fingerprint", "json-object", "logprobs", "free"],
)
def test_chat_result_conforms(client: httpx.Client, openapi: OpenApi, extra: dict) -> None:
    response = client.post(
        "/chat/completions", json={"model": MODEL, "messages": user("hello there"), **extra}
    )
    openapi.assert_valid("ChatResult", response.json())


@pytest.mark.parametrize("model", [MODEL, "anthropic/claude-3.5-haiku"])
def test_stream_chunks_conform(
    emu: OpenRouterEmulator, client: httpx.Client, openapi: OpenApi, model: str
) -> None:
    body = {"model": model, "messages": user("hello there"), "stream": True}
    with client.stream("POST", "/chat/completions", json=body) as response:
        _, events = sse_events(response)
    emu.stream_error_next(after_tokens=1)
    with client.stream(
        "POST", "/chat/completions", json={**body, "tools": [TOOL], "tool_choice": "required"}
    ) as response:
        events += sse_events(response)[1]
    for chunk in events:
        if chunk != "[DONE]":
            openapi.assert_valid("ChatStreamChunk", chunk)
    sdk_oracle.check_stream_events(events)
    usage = [chunk["usage"] for chunk in events if isinstance(chunk, dict) and chunk.get("usage")]
    assert usage and usage[-1]["cost_details"]["upstream_inference_prompt_cost"] >= 0


@pytest.mark.parametrize(
    ("schema", "request_args"),
    [
        ("BadRequestResponse", {"json": {"model": MODEL}}),
        ("UnauthorizedResponse", {"json": {}, "headers": {"Authorization": ""}}),
        (
            "NotFoundResponse",
            {
                "json": {
                    "model": "meta-llama/llama-3.1-8b-instruct",
                    "messages": user("x"),
                    "tools": [TOOL],
                    "provider": {"require_parameters": True},
                }
            },
        ),
    ],
)
def test_error_responses_conform(
    client: httpx.Client, openapi: OpenApi, schema: str, request_args: dict
) -> None:
    openapi.assert_valid(schema, client.post("/chat/completions", **request_args).json())


def test_payment_required_and_rate_limit_errors_conform(
    emu: OpenRouterEmulator, client: httpx.Client, openapi: OpenApi
) -> None:
    emu.fail_next(status=429)
    openapi.assert_valid(
        "TooManyRequestsResponse", client.post("/chat/completions", json={"messages": user("x")}).json()
    )
    emu.set_credits(0)
    openapi.assert_valid(
        "PaymentRequiredResponse", client.post("/chat/completions", json={"messages": user("x")}).json()
    )


def test_models_key_credits_generation_conform(client: httpx.Client, openapi: OpenApi) -> None:
    openapi.assert_valid("ModelsListResponse", client.get("/models").json())
    openapi.assert_valid(
        "#/paths/~1key/get/responses/200/content/application~1json/schema", client.get("/key").json()
    )
    openapi.assert_valid(
        "#/paths/~1credits/get/responses/200/content/application~1json/schema", client.get("/credits").json()
    )
    endpoints = client.get("/models/openai/gpt-4o-mini/endpoints").json()
    openapi.assert_valid(
        "#/paths/~1models~1{author}~1{slug}~1endpoints/get/responses/200/content/application~1json/schema",
        endpoints,
    )
    generation_id = client.post("/chat/completions", json={"messages": user("x")}).json()["id"]
    openapi.assert_valid("GenerationResponse", client.get("/generation", params={"id": generation_id}).json())


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_answers_conform(client: httpx.Client, openapi: OpenApi, encoding: str) -> None:
    body = {"model": "openai/text-embedding-3-small", "input": ["a", "b"], "encoding_format": encoding}
    answer = client.post("/embeddings", json=body).json()
    openapi.assert_valid("#/paths/~1embeddings/post/responses/200/content/application~1json/schema", answer)
    openapi.assert_valid("ModelsListResponse", client.get("/embeddings/models").json())
    openapi.assert_valid("GenerationResponse", client.get("/generation", params={"id": answer["id"]}).json())
    openapi.assert_valid(
        "BadRequestResponse", client.post("/embeddings", json={**body, "dimensions": 99_999}).json()
    )


def test_embeddings_batch_rows_conform(
    emu: OpenRouterEmulator, client: httpx.Client, openapi: OpenApi
) -> None:
    body = {
        "endpoint": "/v1/embeddings",
        "model": "openai/text-embedding-3-small",
        "requests": [{"custom_id": f"e-{i}", "body": {"input": f"text {i}"}} for i in range(3)],
    }
    created = submit(client, body).json()
    emu.advance(10)
    openapi.assert_valid("BatchObject", client.get(f"/batches/{created['id']}").json(), spec=BATCH_SPEC)
    page = client.get(f"/batches/{created['id']}/results", params={"limit": 2}).json()
    openapi.assert_valid("BatchResultsPageResponse", page, spec=BATCH_SPEC)


def test_a_base64_vector_the_openai_sdk_cannot_decode_fails_the_oracle() -> None:
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": "AAAA=", "index": 0}],  # 3 bytes: not float32s
        "model": "m",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    found = sdk_oracle.problems("POST /embeddings", 200, json.dumps(answer))
    assert found and all(line.startswith("openai ") for line in found)
    assert "data.0.embedding" in found[0]


def test_batch_objects_conform(emu: OpenRouterEmulator, client: httpx.Client, openapi: OpenApi) -> None:
    def check(schema: str, instance: object) -> None:
        openapi.assert_valid(schema, instance, spec=BATCH_SPEC)

    emu.batch_item_errors_next(custom_ids=["req-0"])
    created = submit(client, batch_body(4)).json()
    check("BatchObject", created)
    check("BatchErrorResponse", client.delete(f"/batches/{created['id']}").json())
    emu.advance(1.5)
    check("BatchObject", client.get(f"/batches/{created['id']}").json())
    emu.advance(10)
    check("BatchObject", client.get(f"/batches/{created['id']}").json())
    check("BatchListResponse", client.get("/batches").json())
    check(
        "BatchResultsPageResponse",
        client.get(f"/batches/{created['id']}/results", params={"limit": 2}).json(),
    )
    emu.batch_payment_required_until_credits()
    check("BatchPaymentRequiredResponse", client.get(f"/batches/{created['id']}").json())
    emu.add_credits(1)
    check("BatchDeletedObject", client.delete(f"/batches/{created['id']}").json())
    check("BatchErrorResponse", client.get(f"/batches/{created['id']}").json())
    emu.batch_outcome_next("failed")
    failed = submit(client, batch_body()).json()
    emu.advance(10)
    check("BatchObject", client.get(f"/batches/{failed['id']}").json())
    check("BatchErrorResponse", submit(client, {"requests": []}).json())


def test_errors_of_every_status_conform_to_the_sdk_error_models(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    for status in sorted(sdk_oracle.ERRORS):
        emu.fail_next("/**", status=status)
        assert client.get("/credits").status_code == status
        emu.fail_next("/batches/**", status=status)
        assert client.get("/batches").status_code == status


def test_batch_states_and_expiry_variants_conform(client: httpx.Client) -> None:
    """Every state a batch object can be in, on a 24 h, a 96 h (Vertex) and a null-expiry provider."""
    with OpenRouterEmulator(manual_clock=True, batch_expiry_hours={"OpenAI": None}) as emu:
        hooks = {"response": [sdk_oracle.check_response]}
        auth = {"Authorization": f"Bearer {emu.api_key}"}
        with httpx.Client(base_url=emu.base_url, headers=auth, event_hooks=hooks) as http:
            seen = set()
            for model in (MODEL, "google/gemini-2.5-flash", "anthropic/claude-3.5-haiku"):
                for outcome in (None, "cancelled", "expired", "failed"):
                    if outcome:
                        emu.batch_outcome_next(outcome)
                    batch = submit(http, batch_body(2, model=model)).json()
                    for step in (0.5, 0.7, 0.5, 0.5, 10):
                        emu.advance(step)
                        seen.add(http.get(f"/batches/{batch['id']}").json()["status"])
            expiries = {b["provider"]: b["expires_at"] for b in http.get("/batches?limit=100").json()["data"]}
    assert seen == {
        "validating",
        "in_progress",
        "finalizing",
        "completed",
        "cancelling",
        "cancelled",
        "expired",
        "failed",
    }
    assert expiries["OpenAI"] is None and expiries["Google"] and expiries["Anthropic"]


def test_every_emulator_route_has_an_sdk_oracle() -> None:
    from airflow_openrouter.testing._app import build_app
    from airflow_openrouter.testing._state import EmulatorState

    state = EmulatorState(
        api_keys=None,
        latency_ms=0,
        latency_jitter_ms=0,
        token_delay_ms=0,
        batch_durations=(1, 1, 1),
        manual_clock=True,
    )
    for route in build_app(state).routes:
        for method in sorted(route.methods - {"HEAD"}):  # type: ignore[attr-defined]
            assert sdk_oracle.endpoint_of(method, route.path)  # type: ignore[attr-defined]


def test_the_sdk_oracle_names_the_endpoint_and_the_missing_or_mistyped_field(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    batch = submit(client, batch_body()).json()
    del batch["expires_at"]
    batch["request_counts"]["total"] = "3"
    with pytest.raises(AssertionError) as caught:
        sdk_oracle.assert_conforms("GET /batches/{id}", 200, json.dumps(batch))
    message = str(caught.value)
    assert message.startswith("GET /batches/{id} (HTTP 200) does not satisfy the official SDK models")
    version = sdk_oracle.SDK_VERSIONS["openrouter"]
    assert f"openrouter {version} components.BatchObject: expires_at: Field required" in message
    assert "request_counts.total: Input should be a valid integer" in message
    result = client.post("/chat/completions", json={"messages": user("x")}).json()
    result["choices"][0]["finish_reason"] = "done"
    found = sdk_oracle.problems("POST /chat/completions", 200, json.dumps(result))
    assert any(p.startswith("openai ") and "choices.0.finish_reason" in p for p in found), found
    key = client.get("/key").json()
    del key["data"]["budgets"]
    assert sdk_oracle.problems("GET /key", 200, json.dumps(key)) == [
        f"openrouter {version} operations.GetCurrentKeyResponse: data.budgets: Field required"
    ]


def test_the_validator_is_not_vacuous(client: httpx.Client, openapi: OpenApi) -> None:
    result = client.post("/chat/completions", json={"messages": user("x")}).json()
    del result["choices"]
    assert openapi.errors("ChatResult", result)
    batch = submit(client, batch_body()).json()
    batch["status"] = "done"
    assert openapi.errors("BatchObject", batch, spec=BATCH_SPEC)
