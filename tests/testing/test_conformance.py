"""Emulator responses validated against the official OpenAPI spec and the batch supplement.

The specs in ``spec/`` are verbatim copies of ``shared/reference``; schemas are checked with
Draft 2020-12 and a ``referencing`` registry, so the batch file's cross-file ``$ref``s resolve.
"""

from __future__ import annotations

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from .conftest import BATCH_SPEC, OpenApi
from .helpers import MODEL, batch_body, sse_events, submit, user

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
TOOL = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}},
}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"max_tokens": 3},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}},
        {"tools": [TOOL], "tool_choice": "required"},
        {"model": "anthropic/claude-3.5-haiku"},
    ],
    ids=["text", "length", "json-schema", "tool-call", "null-fingerprint"],
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


def test_the_validator_is_not_vacuous(client: httpx.Client, openapi: OpenApi) -> None:
    result = client.post("/chat/completions", json={"messages": user("x")}).json()
    del result["choices"]
    assert openapi.errors("ChatResult", result)
    batch = submit(client, batch_body()).json()
    batch["status"] = "done"
    assert openapi.errors("BatchObject", batch, spec=BATCH_SPEC)
