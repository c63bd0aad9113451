"""The official ``openrouter`` SDK, unchanged, against a running emulator: every endpoint it has a method
for (chat, errors, models, endpoints, key, credits, generation, the batch lifecycle).

The SDK validates each answer with its own pydantic models and raises ``ResponseValidationError`` when a
required field is missing, so these tests fail when the emulator drifts from the SDK. The python SDK has
no method for ``GET /batches/{id}/results``: those pages are fetched with the ``openai`` SDK's generic
request method, and their rows checked with the openrouter SDK's ``Result`` model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openrouter import OpenRouter, components, errors, utils

from airflow_openrouter.testing import OpenRouterEmulator

from . import sdk_oracle
from .helpers import MODEL

PROMPT = [{"role": "user", "content": "Summarize the nightly revenue report"}]
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["title", "score"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
DAY = 24 * 3600


@pytest.fixture
def orc(emu: OpenRouterEmulator) -> Iterator[OpenRouter]:
    with OpenRouter(api_key=emu.api_key, server_url=emu.base_url, timeout_ms=10_000) as sdk:
        yield sdk


def requests(n: int, prefix: str = "doc") -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}-{i}", "body": {"messages": [{"role": "user", "content": f"Summarize {i}"}]}}
        for i in range(n)
    ]


def create(orc: OpenRouter, n: int = 3, model: str = MODEL, **kwargs: Any) -> components.BatchObject:
    return orc.batch.create_batches(
        endpoint="/v1/chat/completions", model=model, requests=requests(n), **kwargs
    )


def until_terminal(emu: OpenRouterEmulator, orc: OpenRouter, batch_id: str) -> list[str]:
    """Poll as a user would (the manual clock moves between polls); the statuses seen, in order."""
    seen: list[str] = []
    for _ in range(20):
        status = orc.batch.get_batches(id=batch_id).status
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in ("completed", "failed", "expired", "cancelled"):
            return seen
        emu.advance(0.4)
    raise AssertionError(f"batch {batch_id} never became terminal: {seen}")


# -- chat ------------------------------------------------------------------------------------------


def test_plain_chat_with_seed_and_usage(orc: OpenRouter) -> None:
    first = orc.chat.send(model=MODEL, messages=PROMPT, seed=3)
    assert (
        first.choices[0].message.content
        == orc.chat.send(model=MODEL, messages=PROMPT, seed=3).choices[0].message.content
    )
    assert (
        first.choices[0].message.content
        != orc.chat.send(model=MODEL, messages=PROMPT, seed=4).choices[0].message.content
    )
    usage = first.usage
    assert usage is not None and usage.cost and usage.is_byok is False
    assert usage.cost_details and usage.cost_details.upstream_inference_prompt_cost > 0
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 0


def test_stream_with_usage(orc: OpenRouter) -> None:
    expected = orc.chat.send(model=MODEL, messages=PROMPT).choices[0].message.content
    with orc.chat.send(
        model=MODEL, messages=PROMPT, stream=True, stream_options={"include_usage": True}
    ) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    usage = chunks[-1].usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.cost_details is not None and usage.prompt_tokens_details is not None


def test_structured_outputs(orc: OpenRouter) -> None:
    strict = orc.chat.send(
        model=MODEL,
        messages=PROMPT,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "strict": True, "schema": SCHEMA},
        },
    )
    answer = json.loads(strict.choices[0].message.content)
    assert set(answer) == {"title", "score"} and isinstance(answer["score"], int)
    loose = orc.chat.send(model=MODEL, messages=PROMPT, response_format={"type": "json_object"})
    assert isinstance(json.loads(loose.choices[0].message.content), dict)


def test_tools_image_parts_and_logprobs(orc: OpenRouter) -> None:
    called = orc.chat.send(
        model=MODEL,
        messages=PROMPT,
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(
        json.loads(call.function.arguments)["city"], str
    )
    pictured = orc.chat.send(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            }
        ],
    )
    assert pictured.usage and pictured.usage.prompt_tokens > 85
    scored = orc.chat.send(model=MODEL, messages=PROMPT, logprobs=True, top_logprobs=3)
    tokens = scored.choices[0].logprobs.content
    assert tokens and all(len(t.top_logprobs) == 3 for t in tokens)
    assert "".join(t.token for t in tokens) == scored.choices[0].message.content


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, errors.BadRequestResponseError),
        (402, errors.PaymentRequiredResponseError),
        (404, errors.NotFoundResponseError),
        (429, errors.TooManyRequestsResponseError),
    ],
)
def test_chat_errors_raise_the_sdk_typed_exception(
    emu: OpenRouterEmulator, orc: OpenRouter, status: int, error: type[errors.OpenRouterError]
) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": PROMPT}
    if status == 400:
        kwargs["temperature"] = 7
    elif status == 402:
        emu.set_credits(0)
    elif status == 404:
        kwargs = {**kwargs, "model": "meta-llama/llama-3.1-8b-instruct", "tools": [TOOL]}
        kwargs["provider"] = {"require_parameters": True}
    else:
        emu.fail_next(status=429, retry_after=3)
    with pytest.raises(error) as caught:
        orc.chat.send(**kwargs)
    assert caught.value.status_code == status
    assert caught.value.data.error.code == status and caught.value.data.error.message  # type: ignore[attr-defined]
    if status == 429:
        assert caught.value.headers["retry-after"] == "3"


def test_unknown_key_raises_unauthorized() -> None:
    with OpenRouterEmulator(api_keys=["sk-or-the-right-one"]) as emu:
        sdk = OpenRouter(api_key="sk-or-a-wrong-one", server_url=emu.base_url)
        with pytest.raises(errors.UnauthorizedResponseError) as caught:
            sdk.chat.send(model=MODEL, messages=PROMPT)
    assert caught.value.status_code == 401


def test_sdk_retries_a_429_after_the_emulators_retry_after(emu: OpenRouterEmulator) -> None:
    retry = utils.RetryConfig("backoff", utils.BackoffStrategy(1, 10, 1.5, 5_000), False, ["429"])
    sdk = OpenRouter(api_key=emu.api_key, server_url=emu.base_url, retry_config=retry)
    emu.fail_next(status=429, retry_after_ms=1)
    assert sdk.chat.send(model=MODEL, messages=PROMPT).choices[0].message.content
    assert [r.method for r in emu.requests_to("/chat/completions")] == ["POST", "POST"]


# -- models, account, generation -------------------------------------------------------------------


def test_models_endpoints_key_credits_and_generation(emu: OpenRouterEmulator, orc: OpenRouter) -> None:
    models = orc.models.list().result.data
    assert MODEL in {m.id for m in models}
    endpoints = orc.endpoints.list(author="openai", slug="gpt-4o-mini").data
    assert endpoints.id == "openai/gpt-4o-mini" and endpoints.endpoints[0].provider_name == "OpenAI"
    generated = orc.chat.send(model=MODEL, messages=PROMPT)
    generation = orc.generations.get_generation(id=generated.id).data
    assert generation.id == generated.id and generation.total_cost == pytest.approx(generated.usage.cost)
    key = orc.api_keys.get_current_key_metadata().data
    assert key.usage == pytest.approx(generated.usage.cost) and key.effective_budget is not None
    assert key.budgets[0].remaining_usd == pytest.approx(key.limit_remaining)
    credits = orc.credits.get_credits().data
    assert credits.total_usage == pytest.approx(key.usage)
    with pytest.raises(errors.NotFoundResponseError):
        orc.endpoints.list(author="nobody", slug="nothing")


def test_key_label_is_masked_like_the_real_api() -> None:
    secret = "sk-or-v1-" + "ab12" * 16  # shaped like a real key, built at run time
    with OpenRouterEmulator(api_keys=[secret]) as emu:
        label = (
            OpenRouter(api_key=secret, server_url=emu.base_url).api_keys.get_current_key_metadata().data.label
        )
    assert label == f"{secret[:12]}...{secret[-3:]}" and secret not in label


# -- the batch lifecycle ---------------------------------------------------------------------------


def test_batch_lifecycle_create_poll_results_delete(emu: OpenRouterEmulator, orc: OpenRouter) -> None:
    batch = create(orc, 5)
    assert batch.status == "validating" and batch.provider == "OpenAI"
    assert batch.expires_at == batch.created_at + DAY and batch.completion_window == "24h"
    assert until_terminal(emu, orc, batch.id) == ["validating", "in_progress", "finalizing", "completed"]
    done = orc.batch.get_batches(id=batch.id)
    assert done.request_counts.completed == 5 and done.usage and done.usage.cost
    assert sorted(r.custom_id for r in done.results or ()) == [f"doc-{i}" for i in range(5)]
    pages = results_pages(emu, batch.id, limit=2)
    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert sorted(row["custom_id"] for page in pages for row in page["data"]) == [
        f"doc-{i}" for i in range(5)
    ]
    deleted = orc.batch.delete(id=batch.id)
    assert deleted.deletion.openrouter == "deleted"
    with pytest.raises(errors.BatchErrorResponse) as gone:
        orc.batch.get_batches(id=batch.id)
    assert gone.value.status_code == 404


def results_pages(emu: OpenRouterEmulator, batch_id: str, limit: int) -> list[dict[str, Any]]:
    """Follow ``next_cursor`` through the openai SDK's generic GET; each page must satisfy the SDK models."""
    client = openai.OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
    pages, params = [], {"limit": limit}
    while True:
        response = client.get(
            f"/batches/{batch_id}/results",
            cast_to=openai._legacy_response.HttpxBinaryResponseContent,
            options={"params": params},
        )
        sdk_oracle.assert_conforms("GET /batches/{id}/results", 200, response.content)
        page = json.loads(response.content)
        pages.append(page)
        if not page["has_more"]:
            return pages
        params = {"limit": limit, "cursor": page["next_cursor"]}


def test_batch_list_pages_through_every_batch(orc: OpenRouter) -> None:
    ids = {create(orc, 1).id for _ in range(5)}
    listed, page = [], orc.batch.list(limit=2)
    while page is not None:
        listed += [b.id for b in page.result.data]
        page = page.next()
    assert len(listed) == 5 and set(listed) == ids


def test_delete_of_a_running_batch_is_a_409(orc: OpenRouter) -> None:
    batch = create(orc)
    with pytest.raises(errors.BatchErrorResponse) as caught:
        orc.batch.delete(id=batch.id)
    assert (
        caught.value.status_code == 409 and "Wait for the batch to finish" in caught.value.data.error.message
    )


def test_finished_batch_over_balance_is_a_402_until_topped_up(
    emu: OpenRouterEmulator, orc: OpenRouter
) -> None:
    batch = create(orc)
    emu.advance(60)
    emu.batch_payment_required_until_credits()
    with pytest.raises(errors.BatchPaymentRequiredResponseError) as caught:
        orc.batch.get_batches(id=batch.id)
    assert caught.value.status_code == 402
    assert caught.value.data.status == "completed" and caught.value.data.results is None
    emu.add_credits(5)
    assert len(orc.batch.get_batches(id=batch.id).results or ()) == 3


def test_create_with_provider_preferences_and_over_balance(emu: OpenRouterEmulator, orc: OpenRouter) -> None:
    # The SDK's model has only the two keys batches accept (it would drop any other before sending).
    accepted = create(orc, provider={"only": ["openai"], "allow_fallbacks": False})
    assert accepted.status == "validating"
    assert emu.requests_to("/batches", method="POST")[-1].body["provider"] == {
        "only": ["openai"],
        "allow_fallbacks": False,
    }
    emu.set_credits(0)
    with pytest.raises(errors.BatchErrorResponse) as broke:
        create(orc)
    assert (
        broke.value.status_code == 402
        and broke.value.data.error.message == "Insufficient balance for this batch."
    )


def test_vertex_batches_expire_after_96_hours_and_cancelling_is_reachable(
    emu: OpenRouterEmulator, orc: OpenRouter
) -> None:
    vertex = create(orc, model="google/gemini-2.5-flash")
    assert vertex.provider == "Google" and vertex.expires_at == vertex.created_at + 4 * DAY
    emu.batch_outcome_next("cancelled", reason="Cancelled by the provider")
    cancelled = create(orc)
    assert until_terminal(emu, orc, cancelled.id) == ["validating", "in_progress", "cancelling", "cancelled"]
    assert orc.batch.get_batches(id=cancelled.id).error.message == "Cancelled by the provider"


def test_batch_with_no_hard_expiry_has_null_expires_at() -> None:
    with OpenRouterEmulator(manual_clock=True, batch_expiry_hours={"OpenAI": None}) as emu:
        sdk = OpenRouter(api_key=emu.api_key, server_url=emu.base_url)
        batch = create(sdk)
        assert batch.expires_at is None
        assert sdk.batch.get_batches(id=batch.id).expires_at is None


# -- embeddings --------------------------------------------------------------------------------------

EMBEDDING_MODEL = "openai/text-embedding-3-small"


def test_embeddings_generate_and_list_models(emu: OpenRouterEmulator, orc: OpenRouter) -> None:
    result = orc.embeddings.generate(
        model=EMBEDDING_MODEL, input=["northern revenue", "sourdough bread"], dimensions=128, session_id="s-1"
    )
    assert not isinstance(result, str)
    assert [len(d.embedding) for d in result.data] == [128, 128] and result.id
    assert result.usage is not None and result.usage.cost and result.usage.cost_details is not None
    generation = orc.generations.get_generation(id=result.id).data
    assert generation.api_type == "embeddings" and generation.session_id == "s-1"
    assert generation.total_cost == result.usage.cost
    as_base64 = orc.embeddings.generate(
        model=EMBEDDING_MODEL, input="northern revenue", encoding_format="base64"
    )
    assert not isinstance(as_base64, str) and isinstance(as_base64.data[0].embedding, str)
    listed = orc.embeddings.list_models()
    assert listed is not None
    ids = {m.id for m in listed.result.data}
    assert {EMBEDDING_MODEL, "openai/text-embedding-3-large", "qwen/qwen3-embedding-8b"} <= ids
    assert all(m.architecture.output_modalities == ["embeddings"] for m in listed.result.data)
    assert listed.next() is None  # one page holds the catalogue


def test_embeddings_errors_raise_the_sdk_typed_exception(emu: OpenRouterEmulator, orc: OpenRouter) -> None:
    with pytest.raises(errors.BadRequestResponseError) as caught:
        orc.embeddings.generate(model=MODEL, input="x")
    assert "is not an embedding model" in caught.value.data.error.message
    emu.set_credits(0)
    with pytest.raises(errors.PaymentRequiredResponseError):
        orc.embeddings.generate(model=EMBEDDING_MODEL, input="x")


def test_embeddings_batch_through_the_sdk(emu: OpenRouterEmulator, orc: OpenRouter) -> None:
    batch = orc.batch.create_batches(
        endpoint="/v1/embeddings",
        model=EMBEDDING_MODEL,
        requests=[{"custom_id": f"doc-{i}", "body": {"input": f"document {i}"}} for i in range(3)],
    )
    assert batch.endpoint == "/v1/embeddings" and batch.status == "validating"
    assert until_terminal(emu, orc, batch.id)[-1] == "completed"
    done = orc.batch.get_batches(id=batch.id)
    assert done.usage is not None and done.usage.cost > 0 and done.results is not None
    rows = {row.custom_id: row for row in done.results}
    body = rows["doc-1"].response.body  # type: ignore[union-attr]
    assert isinstance(body, components.BodyList)  # the SDK parsed the row as an embeddings list
    sync = orc.embeddings.generate(model=EMBEDDING_MODEL, input="document 1")
    assert not isinstance(sync, str)
    assert body.data[0].embedding == sync.data[0].embedding  # type: ignore[union-attr]
