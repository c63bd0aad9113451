"""Validation of a ``POST /batches`` body, in the order the real (stream-parsing) ingress applies it.

Checks that fail synchronously answer 400/413/422 before anything is stored. A request whose *body*
is not a valid request of its endpoint does not fail the submission: like OpenRouter, the batch is
accepted (202) and then fails as a whole once validation runs, naming the offending request.

Two endpoints are served: ``/v1/chat/completions`` (text-only messages, no streaming) and
``/v1/embeddings`` (input strings or token arrays only: no multimodal input, no ``input_type``, no
``provider``, neither in a request body nor for the whole batch). Unknown fields of the submission
(e.g. a top-level ``metadata``, which is not a Batch API field) and of a request body are dropped
silently, as the real API does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._catalogue import ModelSpec, lookup_model
from ._embedding_models import EmbeddingModelSpec, lookup_embedding_model
from ._embeddings import EmbeddingRequest, check_batch_line, parse_embedding_request
from ._errors import ApiError
from ._validation import ChatRequest, parse_chat_request

MAX_BATCH_PAYLOAD_BYTES = 200 * 1024 * 1024
MAX_BATCH_REQUESTS = 5_000
MAX_CUSTOM_ID_LENGTH = 64
CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
_SERVED_ENDPOINTS = (CHAT_ENDPOINT, EMBEDDINGS_ENDPOINT)
_KNOWN_ENDPOINTS = (CHAT_ENDPOINT, "/v1/responses", "/v1/messages", EMBEDDINGS_ENDPOINT)
_PROVIDER_KEYS = {"only", "allow_fallbacks"}
_TEXT_ONLY = {"image_url", "file", "input_audio", "video_url", "input_video"}
_ORDERING_MESSAGE = (
    "Batch body must serialize `endpoint` and `model` (and `callback_url`, if any) before `requests`: "
    "the request body is stream-parsed."
)


@dataclass(frozen=True)
class BatchItem:
    custom_id: str
    request: (
        ChatRequest | EmbeddingRequest | None
    )  # None when the body failed validation (Submission.failure)


@dataclass(frozen=True)
class Submission:
    endpoint: str
    model: ModelSpec | EmbeddingModelSpec
    items: list[BatchItem]
    failure: str | None  # why the batch will fail after validation, if a body is invalid


def check_payload_size(size: int) -> None:
    if size > MAX_BATCH_PAYLOAD_BYTES:
        raise ApiError(413, "Batch input exceeds the 200 MB payload limit.")


def parse_submission(raw: bytes, *, max_requests: int = MAX_BATCH_REQUESTS) -> Submission:
    check_payload_size(len(raw))
    try:
        # json.loads keeps object keys in document order, which is all the ordering rule needs.
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Batch body must be a JSON object.")
    _check_key_order(list(body))
    endpoint = body["endpoint"]
    if endpoint not in _KNOWN_ENDPOINTS:
        raise ApiError(400, f"endpoint must be one of {', '.join(_KNOWN_ENDPOINTS)}.")
    if endpoint not in _SERVED_ENDPOINTS:
        raise ApiError(
            400, f"endpoint {endpoint} is unsupported in emulator (only {', '.join(_SERVED_ENDPOINTS)})."
        )
    if not isinstance(body["model"], str) or not body["model"]:
        raise ApiError(400, "model must be a non-empty string.")
    embeddings = endpoint == EMBEDDINGS_ENDPOINT
    model = lookup_embedding_model(body["model"]) if embeddings else lookup_model(body["model"])
    if not model.batch:
        raise ApiError(400, f"Model '{model.id}' does not have a :batch endpoint.")
    if body.get("completion_window", "24h") != "24h":
        raise ApiError(400, "completion_window must be '24h'.")
    if embeddings and "provider" in body:
        raise ApiError(400, "provider is not supported for embeddings batches: leave it out.")
    _check_provider(body.get("provider"))
    requests = body["requests"]
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "requests must be a non-empty array.")
    if len(requests) > max_requests:
        raise ApiError(400, f"A batch can contain at most {max_requests:,} requests (got {len(requests):,}).")
    items, failure = _items(requests, model, embeddings=embeddings)
    return Submission(endpoint=endpoint, model=model, items=items, failure=failure)


def _check_provider(provider: Any) -> None:
    """Batches honour only ``provider.only`` and ``provider.allow_fallbacks``; any other routing key
    (``order``, ``sort``, ``ignore``, ``require_parameters``, ...) is refused, not silently dropped."""
    if provider is None:
        return
    if not isinstance(provider, dict):
        raise ApiError(400, "provider must be an object.")
    unsupported = sorted(set(provider) - _PROVIDER_KEYS)
    if unsupported:
        names = ", ".join(f"provider.{key}" for key in unsupported)
        raise ApiError(
            400,
            f"{names} {'is' if len(unsupported) == 1 else 'are'} not supported for batches: "
            "only provider.only and provider.allow_fallbacks are.",
        )
    only = provider.get("only")
    if only is not None and (not isinstance(only, list) or not all(isinstance(p, str) for p in only)):
        raise ApiError(400, "provider.only must be an array of provider slugs.")
    if provider.get("allow_fallbacks") not in (None, True, False):
        raise ApiError(400, "provider.allow_fallbacks must be a boolean.")


def _check_key_order(keys: list[str]) -> None:
    if "requests" not in keys or "endpoint" not in keys or "model" not in keys:
        raise ApiError(400, _ORDERING_MESSAGE)
    position = keys.index("requests")
    if any(name in keys and keys.index(name) > position for name in ("endpoint", "model", "callback_url")):
        raise ApiError(400, _ORDERING_MESSAGE)


def _items(
    requests: list[Any], model: ModelSpec | EmbeddingModelSpec, *, embeddings: bool
) -> tuple[list[BatchItem], str | None]:
    seen: set[str] = set()
    items: list[BatchItem] = []
    failure: str | None = None
    for i, entry in enumerate(requests):
        custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            raise ApiError(400, f"custom_id is required on requests[{i}].")
        if len(custom_id) > MAX_CUSTOM_ID_LENGTH:
            raise ApiError(422, f"custom_id on requests[{i}] exceeds {MAX_CUSTOM_ID_LENGTH} characters.")
        if custom_id in seen:
            raise ApiError(422, f"Duplicate custom_id '{custom_id}' on requests[{i}].")
        seen.add(custom_id)
        body = entry.get("body")
        if not isinstance(body, dict):
            raise ApiError(400, f"body is required on requests[{i}].")
        _check_item_body(body, i, model, embeddings=embeddings)
        try:
            request: ChatRequest | EmbeddingRequest | None = (
                parse_embedding_request({**body, "model": model.id})
                if embeddings
                else parse_chat_request({**body, "model": model.id})
            )
        except ApiError as exc:
            request, failure = None, failure or f"requests[{i}] (custom_id '{custom_id}'): {exc.message}"
        items.append(BatchItem(custom_id=custom_id, request=request))
    return items, failure


def _check_item_body(
    body: dict[str, Any], index: int, model: ModelSpec | EmbeddingModelSpec, *, embeddings: bool
) -> None:
    if body.get("model") not in (None, model.id):
        raise ApiError(
            400,
            f"requests[{index}].body.model '{body['model']}' does not match the batch model '{model.id}'.",
        )
    if embeddings:
        check_batch_line(body, index)
        return
    if body.get("stream"):
        raise ApiError(400, f"requests[{index}].body.stream is not supported: batch requests cannot stream.")
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") in _TEXT_ONLY:
                raise ApiError(
                    400,
                    f"requests[{index}] contains a '{part['type']}' part: the Batch API accepts text only.",
                )
