"""Every API call the hook makes, described once as a :class:`Call`: what to send, how to read the answer,
and what a retry would cost.

The hook's sync method and its async twin hand the same ``Call`` to the sync or the async transport;
nothing here does I/O. The optional parameters of each endpoint are declared once, as a ``TypedDict``
that both twins take as ``**options``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

import httpx

from airflow_openrouter._text import excerpt
from airflow_openrouter._transport.errors import in_band_error
from airflow_openrouter.types import (
    Batch,
    BatchDeleted,
    BatchList,
    BatchResultsPage,
    ChatCompletion,
    Generation,
    KeyInfo,
    Model,
    Usage,
)

__all__ = [
    "CALL_LOG_LEVEL",
    "CHAT_ENDPOINT",
    "Call",
    "CreateBatchOptions",
    "ListBatchesOptions",
    "calls_logged_at",
    "chat_body",
    "drop_none",
]

log = logging.getLogger("airflow_openrouter.transport")
T = TypeVar("T")
CHAT_ENDPOINT = "/v1/chat/completions"
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

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        content = None
        headers = None
        if self.body is not None:
            # json.dumps keeps insertion order, which the Batch API depends on (endpoint and model
            # before requests); compact separators keep large batch bodies small.
            content = json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json"}
        if self.stream:
            headers = {**(headers or {}), "Accept": "text/event-stream"}
        return client.build_request(
            self.method, self.path.lstrip("/"), content=content, params=self.params, headers=headers
        )

    def log_answer(self, status: int, started: float, result: Any) -> None:
        """The one line per answered call (INFO, or :data:`CALL_LOG_LEVEL`): route, status, time, model,
        generation, tokens, cost."""
        level = CALL_LOG_LEVEL.get()
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
            log.debug(
                "OpenRouter request body: %s", excerpt(json.dumps(self.body), 2000) if self.body else "-"
            )
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
