"""Every API call the hook makes, described once as a :class:`Call`: what to send, how to read the answer,
and what a retry would cost.

The hook's sync method and its async twin hand the same ``Call`` to the sync or the async transport;
nothing here does I/O. A call's body is encoded once, however often it is sent. The optional parameters
of each endpoint are declared once, as a ``TypedDict`` that both twins take as ``**options``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

from airflow_openrouter._text import excerpt
from airflow_openrouter._transport.errors import in_band_error
from airflow_openrouter._transport.wire import encode_json
from airflow_openrouter.types import (
    Batch,
    BatchDeleted,
    BatchList,
    BatchResultsPage,
    ChatCompletion,
    EmbeddingsResponse,
    Generation,
    KeyInfo,
    Model,
    Usage,
)

__all__ = [
    "CALL_LOG_LEVEL",
    "CHAT_ENDPOINT",
    "EMBEDDINGS_ENDPOINT",
    "Call",
    "CreateBatchOptions",
    "EmbedOptions",
    "ListBatchesOptions",
    "calls_logged_at",
    "chat_body",
    "drop_none",
]

log = logging.getLogger("airflow_openrouter.transport")
T = TypeVar("T")
CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
# Headers of a request with a body, and of a streamed one: pairs, so that a client can keep its full set
# of headers for each (``SyncTransport``) instead of merging them into its own for every request.
Headers = tuple[tuple[str, str], ...]
_JSON_HEADERS: Headers = (("Content-Type", "application/json"),)
_STREAM_HEADERS: Headers = (*_JSON_HEADERS, ("Accept", "text/event-stream"))
#: The level of the per-call line of calls made in this context: INFO (one chat call per task matters to
#: a reader); bulk engines and batch polls set DEBUG in the tasks they own, where one line per call
#: would be thousands of lines (see :func:`calls_logged_at`).
CALL_LOG_LEVEL: contextvars.ContextVar[int] = contextvars.ContextVar(
    "openrouter_call_log_level", default=logging.INFO
)


@contextlib.contextmanager
def calls_logged_at(level: int) -> Iterator[None]:
    """Log the per-call line of the calls made inside the block at *level* (synchronous code; an
    asyncio task sets :data:`CALL_LOG_LEVEL` itself, in its own context)."""
    token = CALL_LOG_LEVEL.set(level)
    try:
        yield
    finally:
        CALL_LOG_LEVEL.reset(token)


@dataclass
class Call(Generic[T]):
    """One API call: what to send, how to read a successful answer, and whether it may be repeated.

    :param idempotent: sending it twice has the effect of sending it once (false for a batch creation).
    :param billed: the server charges for it once it processes it (a non-streamed chat completion), so
        a request that was sent but got no answer is not sent again.
    :param stream: the answer is read as server-sent events (:meth:`SyncTransport.stream`).
    :param log_level: level of the line logged for each answer (INFO; DEBUG for bulk callers, where one
        line per item would be noise, and costs a fifth of the CPU of a call).
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Mapping[str, Any] | None = None
    params: Any = None
    idempotent: bool = True
    billed: bool = False
    stream: bool = False
    model: str | None = None  # for the log line only
    # The level of this call's line; None: the level of the calling context (:data:`CALL_LOG_LEVEL`).
    log_level: int | None = None

    @functools.cached_property
    def content(self) -> bytes | None:
        """The body as sent (encoded once: a retry sends the same bytes)."""
        return None if self.body is None else encode_json(self.body)

    @property
    def headers(self) -> Headers:
        """Headers of this request on top of the client's own (the key, the user agent, attribution)."""
        if self.stream:
            return _STREAM_HEADERS
        return _JSON_HEADERS if self.body is not None else ()

    def log_answer(self, status: int, started: float, result: Any) -> None:
        """The one line per answered call (INFO, or :data:`CALL_LOG_LEVEL`): route, status, time, model,
        generation, tokens, cost."""
        level = CALL_LOG_LEVEL.get() if self.log_level is None else self.log_level
        if not log.isEnabledFor(level):
            return
        parts = [f"OpenRouter {self.method} {self.path} -> {status} in {time.perf_counter() - started:.3f}s"]
        model = getattr(result, "model", None) or self.model
        if model:
            parts.append(f"model={model}")
        if isinstance(result, ChatCompletion) and result.id:
            parts.append(f"generation={result.id}")
        usage = getattr(result, "usage", None)
        if isinstance(usage, Usage):
            parts.append(f"tokens={usage.prompt_tokens}+{usage.completion_tokens}")
            if usage.cost is not None:
                parts.append(f"cost=${usage.cost:.6f}")
        log.log(level, " ".join(parts))
        if log.isEnabledFor(logging.DEBUG):
            # Prompts and completions may hold personal data: only at DEBUG, never at INFO.
            body = excerpt(self.content.decode("utf-8", "replace"), 2000) if self.content else "-"
            log.debug("OpenRouter request body: %s", body)
            log.debug(
                "OpenRouter answer: %s", excerpt(getattr(result, "content", None) or repr(result), 2000)
            )


def drop_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


# --- chat completions ------------------------------------------------------------------------------


def chat_body(
    messages: Sequence[Mapping[str, Any]], model: str | None, params: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body of a chat completion: ``None`` values dropped, ``extra_body`` merged last."""
    params = dict(params)
    extra_body = params.pop("extra_body", None) or {}
    return {**drop_none({"model": model, **params}), "messages": list(messages), **extra_body}


def chat_call(
    messages: Sequence[Mapping[str, Any]],
    model: str | None,
    params: Mapping[str, Any],
    *,
    conn_id: str,
    stream: bool = False,
    log_level: int | None = None,
) -> Call[ChatCompletion]:
    """``POST /chat/completions``. A streamed one is not ``billed`` in the retry sense: dropping its
    connection stops the generation (and the billing) on providers that support cancellation, and it is
    only ever retried before its first byte."""
    body = chat_body(messages, model, {**params, "stream": True} if stream else params)
    return Call(
        "POST",
        "/chat/completions",
        parse=functools.partial(parse_completion, conn_id=conn_id),
        body=body,
        billed=not stream,
        stream=stream,
        model=body.get("model"),
        log_level=log_level,
    )


def parse_completion(data: Any, *, conn_id: str) -> ChatCompletion:
    """A chat completion; no choices, or a choice that ended in an error, raises the typed error."""
    completion = ChatCompletion.model_validate(data)
    if not completion.choices:
        raise in_band_error(
            {"code": 502, "message": "the response has no choices"}, conn_id, completion.id or None
        )
    choice = completion.choices[0]
    if choice.error is not None or choice.finish_reason == "error":
        error = choice.error.model_dump() if choice.error else {"message": "finish_reason is 'error'"}
        # Output generated before the error was billed: a retry would pay for it again.
        billed = bool(completion.usage and completion.usage.completion_tokens)
        raise in_band_error(error, conn_id, completion.id or None, billed=billed)
    return completion


# --- embeddings ------------------------------------------------------------------------------------


class EmbedOptions(TypedDict, total=False):
    """Optional parameters of ``POST /embeddings``."""

    dimensions: int | None  # shortened vectors, for the models that support it
    encoding_format: str | None  # "base64" (default here: a quarter of the bytes) or "float"
    input_type: str | None  # e.g. "search_query" / "search_document", for the models that take it
    user: str | None
    provider: Mapping[str, Any] | None
    extra_body: Mapping[str, Any] | None  # more body fields, merged as they are


def embeddings_body(
    model: str | None, inputs: str | Sequence[str] | Sequence[Sequence[int]], options: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body of an embeddings request: ``None`` values dropped, ``extra_body`` merged last.
    Vectors travel as base64 unless ``encoding_format="float"`` is asked for."""
    options = dict(options)
    extra_body = options.pop("extra_body", None) or {}
    options.setdefault("encoding_format", None)
    options["encoding_format"] = options["encoding_format"] or "base64"
    return {**drop_none({"model": model, "input": inputs, **options}), **extra_body}


def embeddings_call(
    model: str,
    inputs: str | Sequence[str] | Sequence[Sequence[int]],
    options: Mapping[str, Any],
    *,
    conn_id: str,
) -> Call[EmbeddingsResponse]:
    """``POST /embeddings``: ``billed`` like a chat completion (an answer lost after the request left
    may have been charged, so it is not sent again)."""
    body = embeddings_body(model, inputs, options)
    expected = 1 if isinstance(inputs, str) or _is_token_array(inputs) else len(inputs)
    return Call(
        "POST",
        "/embeddings",
        parse=functools.partial(parse_embeddings, expected=expected, conn_id=conn_id),
        body=body,
        billed=True,
        model=model,
    )


def _is_token_array(inputs: Sequence[Any]) -> bool:
    return bool(inputs) and all(isinstance(t, int) and not isinstance(t, bool) for t in inputs)


def parse_embeddings(data: Any, *, expected: int, conn_id: str) -> EmbeddingsResponse:
    """The embeddings; an in-band error, or not one vector per input, raises the typed error (a vector
    matched to the wrong input would be worse than none)."""
    if isinstance(data, Mapping) and data.get("error") and not data.get("data"):
        error = data["error"] if isinstance(data["error"], Mapping) else {"message": str(data["error"])}
        raise in_band_error(dict(error), conn_id, data.get("id"))
    response = EmbeddingsResponse.model_validate(data)
    if sorted(item.index for item in response.data) != list(range(expected)) or not all(
        item.embedding for item in response.data
    ):
        # A 200 is charged: not sent again by the hook (a task retry may, knowing it pays again).
        raise in_band_error(
            {
                "code": 502,
                "message": f"the answer has {sum(bool(d.embedding) for d in response.data)} embeddings for "
                f"{expected} inputs",
            },
            conn_id,
            response.id,
            billed=True,
        )
    return response


def embedding_models_call() -> Call[list[Model]]:
    return Call(
        "GET", "/embeddings/models", parse=_data(lambda models: [Model.model_validate(m) for m in models])
    )


# --- batches ---------------------------------------------------------------------------------------


class CreateBatchOptions(TypedDict, total=False):
    """Optional parameters of ``POST /batches``."""

    endpoint: str  # default CHAT_ENDPOINT
    provider: Mapping[str, Any] | None  # only ``only`` and ``allow_fallbacks`` are accepted
    callback_url: str | None
    completion_window: str | None


class ListBatchesOptions(TypedDict, total=False):
    """Optional parameters of ``GET /batches``."""

    limit: int | None
    after: str | None  # the previous page's ``last_id``
    status: str | Iterable[str] | None
    created_after: str | int | None
    created_before: str | int | None


def create_batch_call(
    model: str,
    requests: Sequence[Mapping[str, Any]],
    *,
    endpoint: str = CHAT_ENDPOINT,
    provider: Mapping[str, Any] | None = None,
    callback_url: str | None = None,
    completion_window: str | None = None,
) -> Call[Batch]:
    # The Batch API parses the body as a stream: endpoint and model must come before requests.
    body = {
        "endpoint": endpoint,
        "model": model,
        **drop_none(
            {"callback_url": callback_url, "completion_window": completion_window, "provider": provider}
        ),
        "requests": list(requests),
    }
    return Call("POST", "/batches", parse=Batch.model_validate, body=body, idempotent=False, model=model)


def get_batch_call(batch_id: str) -> Call[Batch]:
    return Call("GET", f"/batches/{batch_id}", parse=Batch.model_validate)


def list_batches_call(
    *,
    limit: int | None = None,
    after: str | None = None,
    status: str | Iterable[str] | None = None,
    created_after: str | int | None = None,
    created_before: str | int | None = None,
) -> Call[BatchList]:
    named = {"limit": limit, "after": after, "created_after": created_after, "created_before": created_before}
    params = [(k, str(v)) for k, v in named.items() if v is not None]
    params += [("status", s) for s in ([status] if isinstance(status, str) else list(status or ()))]
    return Call("GET", "/batches", parse=BatchList.model_validate, params=params)


def delete_batch_call(batch_id: str) -> Call[BatchDeleted]:
    return Call("DELETE", f"/batches/{batch_id}", parse=BatchDeleted.model_validate)


def results_page_call(batch_id: str, cursor: str | None, page_size: int) -> Call[BatchResultsPage]:
    params = drop_none({"limit": page_size, "cursor": cursor})
    return Call("GET", f"/batches/{batch_id}/results", parse=BatchResultsPage.model_validate, params=params)


# --- account, catalogue, generations ---------------------------------------------------------------


def _data(model: Callable[[Any], T]) -> Callable[[Any], T]:
    return lambda payload: model(payload["data"])


def generation_call(generation_id: str) -> Call[Generation]:
    return Call("GET", "/generation", parse=_data(Generation.model_validate), params={"id": generation_id})


def models_call() -> Call[list[Model]]:
    return Call("GET", "/models", parse=_data(lambda models: [Model.model_validate(m) for m in models]))


def key_call() -> Call[KeyInfo]:
    return Call("GET", "/key", parse=_data(KeyInfo.model_validate))
