"""Validation of a chat-completions request body into a typed ``ChatRequest``.

Shared by ``POST /chat/completions`` and batch items, so a batch line is held to the same rules (and
produces the same content) as the synchronous call with the same body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._attribution import Attribution, parse_attribution
from ._catalogue import DEFAULT_MODEL, ModelSpec, lookup_model
from ._errors import ApiError

_ROLES = {"system", "developer", "user", "assistant", "tool"}
_RESPONSE_FORMATS = {"text", "json_object", "json_schema"}
_MEDIA_PARTS = {"image_url", "file", "input_audio", "video_url", "input_video"}
# Only these request fields influence the generated content. Everything else is routing or
# bookkeeping (stream, provider, user, metadata, ...) or post-processing (stop cuts the text
# afterwards) and must not change the answer.
CONTENT_FIELDS = (
    "model",
    "messages",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "frequency_penalty",
    "presence_penalty",
)


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]  # the raw body, with "model" filled in
    model: ModelSpec
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None
    stop: tuple[str, ...]
    response_format: dict[str, Any] | None  # None also when the model silently ignores it
    tools: list[dict[str, Any]]  # empty when absent or ignored by the model
    tool_choice: Any
    # Alternatives reported per token, or None when logprobs were not asked for (or the model's
    # provider does not return them and OpenRouter drops the parameter).
    top_logprobs: int | None = None
    attribution: Attribution = field(default_factory=Attribution)  # user, session_id, metadata

    @property
    def json_schema(self) -> dict[str, Any] | None:
        if self.response_format and self.response_format["type"] == "json_schema":
            return self.response_format["json_schema"]["schema"]
        return None

    def media_parts(self) -> list[dict[str, Any]]:
        return [
            part for message in self.messages for part in _parts(message) if part.get("type") in _MEDIA_PARTS
        ]

    def content_key(self) -> dict[str, Any]:
        return {name: self.body[name] for name in CONTENT_FIELDS if name in self.body}


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate like OpenRouter does (400 for malformed input, 404 when routing cannot satisfy it)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    model = lookup_model(_model_id(body))
    messages = _messages(body.get("messages"))
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None and not body.get("logprobs"):
        raise ApiError(400, "top_logprobs requires logprobs to be true")
    if top_logprobs is not None and (
        isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20
    ):
        raise ApiError(400, "top_logprobs must be an integer between 0 and 20")
    _check_range(body, "temperature", 0, 2)
    _check_range(body, "top_p", 0, 1)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ApiError(400, "max_tokens must be a positive integer")
    response_format = _response_format(body.get("response_format"))
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    wants_schema = response_format is not None and response_format["type"] == "json_schema"
    wants_tools = bool(tools) and tool_choice != "none"
    unsupported = (wants_schema and not model.structured_outputs) or (wants_tools and not model.tools)
    if unsupported and _requires_parameters(body):
        raise ApiError(404, "No endpoints found that can handle the requested parameters.")
    stop = body.get("stop")
    attribution = parse_attribution(body)
    return ChatRequest(
        body={**body, "model": model.id},
        model=model,
        messages=messages,
        stream=bool(body.get("stream")),
        max_tokens=max_tokens,
        stop=(stop,) if isinstance(stop, str) else tuple(s for s in stop or () if isinstance(s, str)),
        # Without provider.require_parameters OpenRouter routes to a provider that silently ignores
        # parameters it does not support, so the client gets plain text back: emulate exactly that.
        response_format=response_format if model.structured_outputs or not wants_schema else None,
        tools=tools if model.tools else [],
        tool_choice=tool_choice,
        top_logprobs=(top_logprobs or 0) if body.get("logprobs") is True and model.logprobs else None,
        attribution=attribution,
    )


def _model_id(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None and isinstance(body.get("models"), list) and body["models"]:
        model = body["models"][0]
    if model is None:
        return DEFAULT_MODEL
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model must be a non-empty string")
    return model


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: a non-empty array of messages is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ApiError(400, f"messages[{i}]: role must be one of {sorted(_ROLES)}")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise ApiError(400, f"messages[{i}].content must be a string or an array of content parts")
    return messages


def _check_range(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number between {low} and {high}")


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in _RESPONSE_FORMATS:
        raise ApiError(400, f"response_format.type must be one of {sorted(_RESPONSE_FORMATS)}")
    if value["type"] == "text":
        return None
    if value["type"] == "json_schema":
        config = value.get("json_schema")
        if not isinstance(config, dict) or not isinstance(config.get("name"), str) or not config["name"]:
            raise ApiError(400, "response_format.json_schema.name is required")
        if len(config["name"]) > 64:
            raise ApiError(400, "response_format.json_schema.name must be at most 64 characters")
        if not isinstance(config.get("schema"), dict):
            raise ApiError(400, "response_format.json_schema.schema must be a JSON Schema object")
    return value


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "tools must be an array")
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function" or not function.get("name"):
            raise ApiError(400, f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}")
    return value


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> Any:
    if value is None or value in ("none", "auto", "required"):
        return value or "auto"
    name = value.get("function", {}).get("name") if isinstance(value, dict) else None
    if name is None:
        raise ApiError(400, "tool_choice must be 'none', 'auto', 'required' or a named function")
    if name not in {t["function"]["name"] for t in tools}:
        raise ApiError(400, f"tool_choice names function '{name}', which is not in tools")
    return value


def _requires_parameters(body: dict[str, Any]) -> bool:
    provider = body.get("provider")
    return isinstance(provider, dict) and bool(provider.get("require_parameters"))
