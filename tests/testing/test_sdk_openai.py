"""The official ``openai`` SDK (3.x), unchanged, against a running emulator: chat in every shape the
provider sends, the typed errors, and the models list.

The SDK is only pointed at the emulator (``base_url``); it parses the answers the way it would parse
OpenRouter's, so a body it cannot use fails here. Strict validation of every body with the SDK's
models lives in ``test_conformance`` (``sdk_oracle``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pydantic
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import MODEL

NO_TOOLS_MODEL = "meta-llama/llama-3.1-8b-instruct"
PROMPT = [{"role": "user", "content": "Summarize the nightly revenue report"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


class Invoice(pydantic.BaseModel):
    number: str
    total: float
    paid: bool


@pytest.fixture
def client(emu: OpenRouterEmulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0, timeout=10) as sdk:
        yield sdk


def test_plain_chat_carries_openrouter_usage(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model=MODEL, messages=PROMPT)
    assert result.object == "chat.completion" and result.id.startswith("gen-")
    assert result.choices[0].message.content and result.choices[0].finish_reason == "stop"
    usage = result.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    # OpenRouter's additions reach the user through the SDK's extra fields.
    extra = usage.model_extra or {}
    assert extra["cost"] > 0 and extra["is_byok"] is False
    assert extra["cost_details"]["upstream_inference_prompt_cost"] > 0
    assert (result.model_extra or {})["provider"] == "OpenAI"


def test_seed_makes_the_answer_reproducible(client: openai.OpenAI) -> None:
    def answer(seed: int) -> str | None:
        return (
            client.chat.completions.create(model=MODEL, messages=PROMPT, seed=seed).choices[0].message.content
        )

    assert answer(7) == answer(7)
    assert answer(7) != answer(8)


def test_stream_with_usage_reassembles_the_answer(client: openai.OpenAI) -> None:
    expected = client.chat.completions.create(model=MODEL, messages=PROMPT).choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL, messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert (last.usage.model_extra or {})["cost"] > 0


def test_strict_json_schema_parses_into_the_pydantic_model(client: openai.OpenAI) -> None:
    # The SDK builds the strict schema from the model and parses the answer back into it.
    result = client.chat.completions.parse(model=MODEL, messages=PROMPT, response_format=Invoice)
    invoice = result.choices[0].message.parsed
    assert isinstance(invoice, Invoice)
    sent = client.chat.completions.create(
        model=MODEL,
        messages=PROMPT,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "invoice", "strict": True, "schema": Invoice.model_json_schema()},
        },
    )
    Invoice.model_validate_json(sent.choices[0].message.content or "")


def test_json_object_answers_a_json_object(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=PROMPT, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(result.choices[0].message.content or ""), dict)


def test_named_tool_choice_calls_that_tool_with_valid_arguments(client: openai.OpenAI) -> None:
    other = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    result = client.chat.completions.create(
        model=MODEL,
        messages=PROMPT,
        tools=[other, WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int)


def test_image_url_parts_are_accepted_and_counted(client: openai.OpenAI) -> None:
    text_only = client.chat.completions.create(model=MODEL, messages=PROMPT)
    with_image = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT[0]["content"]},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                ],
            }
        ],
    )
    assert text_only.usage and with_image.usage
    assert with_image.usage.prompt_tokens > text_only.usage.prompt_tokens


def test_logprobs_with_top_alternatives_cover_every_token(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model=MODEL, messages=PROMPT, logprobs=True, top_logprobs=2)
    choice = result.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    for token in choice.logprobs.content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2
        assert token.top_logprobs[0].token == token.token
    stream = client.chat.completions.create(
        model=MODEL, messages=PROMPT, logprobs=True, top_logprobs=1, stream=True
    )
    streamed = [
        t.token
        for c in stream
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or ()
    ]
    assert "".join(streamed) == choice.message.content


@pytest.mark.parametrize(
    ("status", "error", "provoke"),
    [
        (400, openai.BadRequestError, lambda emu: None),
        (402, openai.APIStatusError, lambda emu: emu.set_credits(0)),
        (404, openai.NotFoundError, lambda emu: None),
    ],
    ids=["400-bad-request", "402-no-credits", "404-no-endpoint"],
)
def test_errors_raise_the_sdk_typed_exception(
    emu: OpenRouterEmulator, client: openai.OpenAI, status: int, error: type[Exception], provoke
) -> None:
    provoke(emu)
    kwargs: dict = {"model": MODEL, "messages": PROMPT}
    if status == 400:
        kwargs["messages"] = []
    if status == 404:
        kwargs = {
            "model": NO_TOOLS_MODEL,
            "messages": PROMPT,
            "tools": [WEATHER],
            "extra_body": {"provider": {"require_parameters": True}},
        }
    with pytest.raises(error) as caught:
        client.chat.completions.create(**kwargs)
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    body = caught.value.body  # type: ignore[attr-defined]
    assert isinstance(body, dict) and body["code"] == status and body["message"]


def test_unknown_key_raises_authentication_error() -> None:
    with OpenRouterEmulator(api_keys=["sk-or-the-right-one"]) as emu:
        sdk = openai.OpenAI(base_url=emu.base_url, api_key="sk-or-a-wrong-one", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model=MODEL, messages=PROMPT)
    assert caught.value.status_code == 401


def test_rate_limit_retry_after_is_read_by_the_sdk(emu: OpenRouterEmulator) -> None:
    sdk = openai.OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=2)
    # Past the SDK's ceiling (60 s) a Retry-After stops its retries: so it must have parsed ours.
    emu.fail_next(status=429, retry_after=600)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=PROMPT)
    assert caught.value.status_code == 429 and caught.value.response.headers["retry-after"] == "600"
    assert len(emu.requests_to("/chat/completions")) == 1
    # A short retry-after-ms is honoured, and the retry succeeds.
    emu.clear_requests()
    emu.fail_next(status=429, retry_after_ms=1)
    assert sdk.chat.completions.create(model=MODEL, messages=PROMPT).choices[0].message.content
    assert len(emu.requests_to("/chat/completions")) == 2


def test_models_list_through_the_sdk(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert MODEL in ids and "mistralai/mistral-7b-instruct:free" in ids


# -- embeddings --------------------------------------------------------------------------------------

EMBEDDING_MODEL = "openai/text-embedding-3-small"
TEXTS = ["Quarterly revenue grew in the north", "A recipe for sourdough bread"]


def test_embeddings_default_base64_is_decoded_by_the_sdk_to_the_float_vectors(client: openai.OpenAI) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it as float32: both must agree.
    decoded = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS)
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, encoding_format="float")
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]
    assert [d.index for d in decoded.data] == [0, 1] and len(decoded.data[0].embedding) == 1536
    assert decoded.model == EMBEDDING_MODEL and decoded.object == "list"
    assert decoded.usage.prompt_tokens == decoded.usage.total_tokens > 0
    assert (decoded.usage.model_extra or {})["cost"] > 0  # OpenRouter's addition, as an extra field


def test_embeddings_dimensions_token_arrays_and_user(emu: OpenRouterEmulator, client: openai.OpenAI) -> None:
    short = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[0], dimensions=256, user="dag:embed")
    assert len(short.data[0].embedding) == 256
    (recorded,) = emu.requests_to("/embeddings", method="POST")
    assert recorded.attribution.user == "dag:embed" and recorded.body["dimensions"] == 256
    tokens = client.embeddings.create(model=EMBEDDING_MODEL, input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5


def test_embeddings_errors_raise_the_sdk_typed_exception(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="openai/text-embedding-ada-002", input="x", dimensions=256)
    assert "does not support the 'dimensions' parameter" in str(caught.value)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="x")
