"""POST /chat/completions (non-streaming) and GET /generation."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Literal

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import MODEL, chat, user


class LineItem(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{3}$")
    quantity: int = Field(ge=1, le=50)
    unit_price: float = Field(gt=0, lt=1000)


class Invoice(BaseModel):
    vendor: str = Field(min_length=3, max_length=40)
    invoice_id: uuid.UUID
    issued: dt.date
    status: Literal["paid", "open", "void"]
    notes: str | None = None
    items: list[LineItem] = Field(min_length=1, max_length=4)


def _json_schema_format(model: type[BaseModel]) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema(), "strict": True},
    }


def test_completion_has_the_openrouter_result_shape(client: httpx.Client) -> None:
    response = chat(client)
    assert response.status_code == 200
    result = response.json()
    assert result["id"].startswith("gen-") and response.headers["X-Generation-Id"] == result["id"]
    assert result["object"] == "chat.completion"
    assert result["model"] == MODEL and result["provider"] == "OpenAI"
    assert "system_fingerprint" in result and isinstance(result["created"], int)
    choice = result["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["native_finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"]
    assert message["refusal"] is None and message["reasoning"] is None
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    for key in ("cost", "is_byok", "prompt_tokens_details", "completion_tokens_details", "cost_details"):
        assert key in usage


def test_text_mentions_words_of_the_last_user_message(client: httpx.Client) -> None:
    content = chat(client, "Summarize the turbine maintenance logbook").json()["choices"][0]["message"][
        "content"
    ]
    assert content.startswith("Summary: ")
    assert {"turbine", "maintenance", "logbook"} & set(content.replace(".", " ").split())


def test_same_request_gives_same_content_and_seed_changes_it(client: httpx.Client) -> None:
    def content(**body: object) -> str:
        return chat(client, "Describe the harbour at dawn", **body).json()["choices"][0]["message"]["content"]

    assert content(seed=1) == content(seed=1)
    assert content(seed=1) != content(seed=2)


def test_max_tokens_truncates_with_finish_reason_length(client: httpx.Client) -> None:
    result = chat(client, max_tokens=5).json()
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 5
    assert len(result["choices"][0]["message"]["content"]) <= 20


def test_max_tokens_sizes_long_outputs(client: httpx.Client) -> None:
    result = chat(client, max_tokens=500).json()
    assert 1500 < len(result["choices"][0]["message"]["content"]) <= 2000
    assert result["usage"]["completion_tokens"] <= 500


def test_stop_sequence_cuts_the_content(client: httpx.Client) -> None:
    full = chat(client).json()["choices"][0]["message"]["content"]
    cut = chat(client, stop=["."]).json()["choices"][0]
    assert cut["message"]["content"] == full.split(".")[0] and cut["finish_reason"] == "stop"


def test_cost_uses_the_catalogue_price(client: httpx.Client) -> None:
    usage = chat(client).json()["usage"]
    expected = usage["prompt_tokens"] * 10e-6 + usage["completion_tokens"] * 30e-6
    assert usage["cost"] == pytest.approx(expected)
    assert usage["cost_details"]["upstream_inference_prompt_cost"] == pytest.approx(
        usage["prompt_tokens"] * 10e-6
    )


def test_json_schema_output_is_valid_for_a_pydantic_model(client: httpx.Client) -> None:
    for seed in range(5):
        result = chat(
            client,
            "Extract the invoice from Contoso Shipping",
            response_format=_json_schema_format(Invoice),
            seed=seed,
        )
        content = result.json()["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), Invoice.model_json_schema())
        Invoice.model_validate_json(content)


def test_json_schema_strings_are_filled_from_prompt_words(client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    content = chat(client, "Quarterly lighthouse inspection", response_format=response_format).json()
    title = json.loads(content["choices"][0]["message"]["content"])["title"]
    assert {"quarterly", "lighthouse", "inspection"} & set(title.lower().split())


def test_json_object_format_returns_a_json_object(client: httpx.Client) -> None:
    content = chat(client, response_format={"type": "json_object"}).json()["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), dict)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def test_tools_auto_calls_the_tool_the_prompt_mentions(client: httpx.Client) -> None:
    result = chat(client, "What is the weather in Lisbon?", tools=[CLOCK_TOOL, WEATHER_TOOL]).json()
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_TOOL["function"]["parameters"])


def test_tool_choice_names_the_function_to_call(client: httpx.Client) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    result = chat(client, "What is the weather?", tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice).json()
    assert result["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"


def test_auto_answers_in_text_after_a_tool_result(client: httpx.Client) -> None:
    messages = [
        *user("Tell me a story"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    result = client.post(
        "/chat/completions", json={"model": MODEL, "messages": messages, "tools": [CLOCK_TOOL]}
    ).json()
    assert result["choices"][0]["finish_reason"] == "stop" and result["choices"][0]["message"]["content"]


def test_image_and_file_parts_are_accepted_and_counted(client: httpx.Client) -> None:
    text_only = chat(client, "Describe this picture").json()["usage"]["prompt_tokens"]
    parts = [
        {"type": "text", "text": "Describe this picture"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
    ]
    response = client.post(
        "/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": parts}]}
    )
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == text_only + 2 * 85 + 250


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": "nope/missing", "messages": user("hi")}, "nope/missing is not a valid model ID"),
        ({"model": MODEL, "messages": user("hi"), "top_logprobs": 3}, "logprobs"),
        ({"model": MODEL, "messages": user("hi"), "response_format": {"type": "xml"}}, "response_format"),
        (
            {
                "model": MODEL,
                "messages": user("hi"),
                "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
            },
            "name",
        ),
        (
            {
                "model": MODEL,
                "messages": user("hi"),
                "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            },
            "schema",
        ),
        ({"model": MODEL, "messages": user("hi"), "temperature": 3}, "temperature"),
    ],
    ids=[
        "no-messages",
        "empty-messages",
        "unknown-model",
        "top-logprobs",
        "format-type",
        "schema-name",
        "schema-body",
        "temperature",
    ],
)
def test_invalid_requests_get_400_with_the_error_envelope(
    client: httpx.Client, body: dict, message: str
) -> None:
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and message in error["message"]


def test_require_parameters_with_an_incapable_model_is_404(client: httpx.Client) -> None:
    body = {"model": "meta-llama/llama-3.1-8b-instruct", "provider": {"require_parameters": True}}
    response = chat(client, response_format=_json_schema_format(Invoice), **body)
    assert response.status_code == 404
    assert (
        response.json()["error"]["message"] == "No endpoints found that can handle the requested parameters."
    )
    tools_response = chat(client, tools=[WEATHER_TOOL], **body)
    assert tools_response.status_code == 404


def test_model_without_structured_outputs_silently_returns_text(client: httpx.Client) -> None:
    result = chat(
        client, model="meta-llama/llama-3.1-8b-instruct", response_format=_json_schema_format(Invoice)
    ).json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(result["choices"][0]["message"]["content"])


def test_unknown_parameters_are_ignored_and_model_defaults(client: httpx.Client) -> None:
    response = client.post(
        "/chat/completions", json={"messages": user("hi there"), "frobnicate": True, "transforms": []}
    )
    assert response.status_code == 200 and response.json()["model"] == "openai/gpt-4o-mini"


def test_no_credits_left_gives_402_until_topped_up(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.set_credits(0)
    response = chat(client)
    assert response.status_code == 402
    assert response.json()["error"]["message"].startswith("Insufficient credits")
    emu.add_credits(1)
    assert chat(client).status_code == 200


def test_generation_endpoint_reports_the_generation(client: httpx.Client) -> None:
    result = chat(client).json()
    data = client.get("/generation", params={"id": result["id"]}).json()["data"]
    assert data["id"] == result["id"] and data["model"] == MODEL and data["provider_name"] == "OpenAI"
    assert data["tokens_prompt"] == result["usage"]["prompt_tokens"]
    assert data["tokens_completion"] == result["usage"]["completion_tokens"]
    assert data["total_cost"] == result["usage"]["cost"] and data["streamed"] is False
    assert data["finish_reason"] == "stop" and data["latency"] >= 0 and data["created_at"]


def test_generation_endpoint_404s_for_unknown_ids(client: httpx.Client) -> None:
    response = client.get("/generation", params={"id": "gen-unknown"})
    assert response.status_code == 404 and response.json()["error"]["code"] == 404


def test_logprobs_cover_every_token_with_top_alternatives(client: httpx.Client) -> None:
    result = chat(client, logprobs=True, top_logprobs=3).json()
    content = result["choices"][0]["message"]["content"]
    tokens = result["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == content
    for token in tokens:
        assert token["bytes"] == list(token["token"].encode()) and token["logprob"] <= 0
        assert token["top_logprobs"][0]["token"] == token["token"]
        assert len(token["top_logprobs"]) == 3
        assert sorted(alt["logprob"] for alt in token["top_logprobs"])[::-1] == [
            alt["logprob"] for alt in token["top_logprobs"]
        ]
    # Asking for logprobs does not change the answer; without them the field is null.
    assert chat(client).json()["choices"][0]["message"]["content"] == content
    assert chat(client).json()["choices"][0]["logprobs"] is None


def test_logprobs_are_dropped_for_providers_without_them_and_checked(client: httpx.Client) -> None:
    anthropic = chat(client, model="anthropic/claude-3.5-haiku", logprobs=True).json()
    assert anthropic["choices"][0]["logprobs"] is None
    for bad in (21, -1, "2", True):
        response = chat(client, logprobs=True, top_logprobs=bad)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "top_logprobs must be an integer between 0 and 20"
