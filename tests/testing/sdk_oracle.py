"""The official SDKs' own pydantic models as the oracle for every emulator answer.

Each endpoint the emulator serves maps to the models the ``openrouter`` SDK (and, for chat, the ``openai``
SDK) parse its answer with. Bodies are validated from their raw JSON in pydantic's *strict* mode: a
missing required field, a mistyped one (``"3"`` for an int) or an enum value the SDK does not know fails,
even where the SDK itself would coerce it or keep it as an "unrecognized" string. Failures name the
endpoint, the SDK and version, the model and the field, so a new SDK release (``make test`` upgrades both)
that requires a field the emulator does not send fails with e.g.::

    GET /batches/{id} (HTTP 200) does not satisfy the official SDK models:
      openrouter 1.3.84 components.BatchObject: expires_at: Field required

The python ``openrouter`` SDK has no model for ``GET /batches/{id}/results`` pages (it has no method for
that endpoint); their rows are checked with the SDK's batch ``Result`` model inside a page envelope
written here.

Embeddings answers are checked with both SDKs' models. The ``openai`` model types a vector as a list of
floats: a ``base64`` answer is decoded first exactly as that SDK's parser decodes it (little-endian
float32), so a vector that SDK would read wrongly (wrong byte count, not base64) fails too.
"""

from __future__ import annotations

import array
import base64
import binascii
import importlib.metadata
import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

import httpx
import pydantic
from openai.types import CreateEmbeddingResponse
from openai.types import chat as openai_chat
from openrouter import components, errors, operations
from openrouter.components import batchobject

from airflow_openrouter.testing._routes import relative_route, route_matches

SDK_VERSIONS = {name: importlib.metadata.version(name) for name in ("openrouter", "openai")}


class BatchResultsPage(pydantic.BaseModel):
    """``GET /batches/{id}/results``: the documented envelope around the SDK's own ``Result`` rows."""

    model_config = pydantic.ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[batchobject.Result]
    has_more: bool
    next_cursor: str | None


Oracle = tuple[str, type[Any]]  # (SDK distribution name, model)


def _openrouter(model: type[Any]) -> Oracle:
    return ("openrouter", model)


# Successful answers, by endpoint ("METHOD route pattern"; the stream's data events have their own entry).
SUCCESS: dict[str, tuple[Oracle, ...]] = {
    "POST /chat/completions": (
        _openrouter(components.ChatResult),
        ("openai", openai_chat.ChatCompletion),
    ),
    "POST /chat/completions (stream chunk)": (
        _openrouter(components.ChatStreamChunk),
        ("openai", openai_chat.ChatCompletionChunk),
    ),
    # OpenRouter's in-band error event ends a stream with finish_reason "error", which the OpenAI
    # schema does not know (the openai SDK passes it through without validating): openrouter only.
    "POST /chat/completions (stream error event)": (_openrouter(components.ChatStreamChunk),),
    "POST /embeddings": (
        _openrouter(operations.CreateEmbeddingsResponseBody),
        ("openai", CreateEmbeddingResponse),
    ),
    "GET /embeddings/models": (_openrouter(components.ModelsListResponse),),
    "GET /generation": (_openrouter(components.GenerationResponse),),
    "GET /models": (_openrouter(components.ModelsListResponse),),
    "GET /models/{author}/{slug}/endpoints": (_openrouter(operations.ListEndpointsResponse),),
    "GET /key": (_openrouter(operations.GetCurrentKeyResponse),),
    "GET /credits": (_openrouter(operations.GetCreditsResponse),),
    "POST /batches": (_openrouter(components.BatchObject),),
    "GET /batches": (_openrouter(components.BatchListResponse),),
    "GET /batches/{id}": (_openrouter(components.BatchObject),),
    "DELETE /batches/{id}": (_openrouter(components.BatchDeletedObject),),
    "GET /batches/{id}/results": (_openrouter(BatchResultsPage),),
}

# Error bodies of the non-batch routes, by status (the SDK raises the matching typed error with this data).
ERRORS: dict[int, type[Any]] = {
    400: errors.BadRequestResponseErrorData,
    401: errors.UnauthorizedResponseErrorData,
    402: errors.PaymentRequiredResponseErrorData,
    403: errors.ForbiddenResponseErrorData,
    404: errors.NotFoundResponseErrorData,
    408: errors.RequestTimeoutResponseErrorData,
    409: errors.ConflictResponseErrorData,
    413: errors.PayloadTooLargeResponseErrorData,
    422: errors.UnprocessableEntityResponseErrorData,
    429: errors.TooManyRequestsResponseErrorData,
    500: errors.InternalServerResponseErrorData,
    502: errors.BadGatewayResponseErrorData,
    503: errors.ServiceUnavailableResponseErrorData,
    504: errors.GatewayTimeoutResponseErrorData,
    524: errors.EdgeNetworkTimeoutResponseErrorData,
    529: errors.ProviderOverloadedResponseErrorData,
}


def endpoint_of(method: str, path: str) -> str:
    """``("GET", "/api/beta/batches/batch_1")`` -> ``"GET /batches/{id}"``."""
    route = relative_route(path)
    matches = [e for e in SUCCESS if e.split(" ")[0] == method and route_matches(e.split(" ")[1], route)]
    if not matches:
        raise AssertionError(f"no SDK oracle for {method} {route}: add the endpoint to sdk_oracle.SUCCESS")
    return matches[0]


def oracles(endpoint: str, status: int) -> tuple[Oracle, ...]:
    if status < 400:
        return SUCCESS[endpoint]
    if endpoint.split(" ")[1].startswith("/batches"):
        paid = status == 402 and endpoint in ("GET /batches/{id}", "GET /batches/{id}/results")
        return (
            _openrouter(
                errors.BatchPaymentRequiredResponseErrorData if paid else errors.BatchErrorResponseData
            ),
        )
    if status not in ERRORS:
        raise AssertionError(f"the openrouter SDK has no error model for HTTP {status} ({endpoint})")
    return (_openrouter(ERRORS[status]),)


def _openai_decoded_embeddings(raw: str | bytes) -> str | bytes:
    """The body the ``openai`` SDK's parser hands to its model: base64 vectors decoded as float32."""
    body = json.loads(raw)
    for item in body.get("data") or ():
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            try:
                data = base64.b64decode(item["embedding"], validate=True)
                item["embedding"] = array.array("f", data).tolist()
            except (binascii.Error, ValueError) as exc:
                item["embedding"] = f"undecodable base64 ({exc})"  # fails the model, naming the field
    return json.dumps(body)


# How an SDK transforms a raw answer before validating it, where it does (by endpoint and SDK).
PREPARE: dict[tuple[str, str], Callable[[str | bytes], str | bytes]] = {
    ("POST /embeddings", "openai"): _openai_decoded_embeddings,
}


def problems(endpoint: str, status: int, raw: str | bytes) -> list[str]:
    """Every violation of the SDK models for this answer, one line each; empty when it conforms."""
    found = []
    for sdk, model in oracles(endpoint, status):
        prepare = PREPARE.get((endpoint, sdk)) if status < 400 else None
        try:
            pydantic.TypeAdapter(model).validate_json(prepare(raw) if prepare else raw, strict=True)
        except pydantic.ValidationError as exc:
            name = f"{sdk} {SDK_VERSIONS[sdk]} {_model_name(model)}"
            found += [f"{name}: {_field(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
    return found


def assert_conforms(endpoint: str, status: int, raw: str | bytes) -> None:
    found = problems(endpoint, status, raw)
    assert not found, (
        f"{endpoint} (HTTP {status}) does not satisfy the official SDK models:\n  " + "\n  ".join(found[:20])
    )


def check_response(response: httpx.Response) -> None:
    """An httpx response hook: validate every JSON answer of the emulator (SSE is checked per event)."""
    if "application/json" not in response.headers.get("content-type", ""):
        return
    response.read()
    endpoint = endpoint_of(response.request.method, response.request.url.path)
    assert_conforms(endpoint, response.status_code, response.content)


def check_stream_events(events: Iterable[Any]) -> None:
    """Validate the data events of a chat stream (``[DONE]`` and in-band error events included)."""
    for event in events:
        if event != "[DONE]":
            kind = "stream error event" if "error" in event else "stream chunk"
            assert_conforms(f"POST /chat/completions ({kind})", 200, json.dumps(event))


def _model_name(model: type[Any]) -> str:
    module = model.__module__
    for package in ("openrouter.", "openai.types."):
        if module.startswith(package):
            return f"{module[len(package) :].split('.')[0]}.{model.__qualname__}"
    return model.__qualname__


def _field(loc: tuple[Any, ...]) -> str:
    # pydantic lists union branches and type names in loc; keep the field path a reader can find.
    parts = [str(p) for p in loc if isinstance(p, int) or not any(c in str(p) for c in "[]()")]
    return ".".join(parts) or "(body)"
