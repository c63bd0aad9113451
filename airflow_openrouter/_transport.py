"""HTTP transport shared by every call of the hook: one request builder, one retry policy, one error mapper.

The sync and async clients differ only in ``send`` / ``await send`` and ``sleep`` / ``await sleep``;
everything that decides something (what to send, whether an answer is an error, whether and how long to
wait before trying again, what to log) lives in plain functions and objects used by both.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import functools
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from airflow_openrouter import __version__
from airflow_openrouter.exceptions import (
    TRANSIENT_STATUSES,
    OpenRouterAPIError,
    OpenRouterAuthenticationError,
    OpenRouterBadRequestError,
    OpenRouterConflictError,
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterNotFoundError,
    OpenRouterPaymentRequiredError,
    OpenRouterPermissionDeniedError,
    OpenRouterRateLimitError,
    OpenRouterServerError,
    OpenRouterTimeoutError,
)
from airflow_openrouter.types import ChatCompletion, Usage

log = logging.getLogger("airflow_openrouter.transport")

T = TypeVar("T")

RETRYABLE_STATUSES = TRANSIENT_STATUSES


# --- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """Everything the transport needs from a connection. ``api_key`` is kept out of ``repr``."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    default_model: str | None = None
    site_url: str | None = None
    app_name: str | None = None
    timeout: float = 120.0
    connect_timeout: float = 10.0
    max_retries: int = 4

    def headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": f"airflow-openrouter/{__version__}",
        }
        if self.site_url:
            headers["HTTP-Referer"] = self.site_url
        if self.app_name:
            # X-Title is the legacy name; OpenRouter still reads it, so older dashboards keep working.
            headers["X-OpenRouter-Title"] = self.app_name
            headers["X-Title"] = self.app_name
        return headers

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout, pool=self.timeout)


# The sync client serves one task at a time; a few kept-alive connections are plenty.
SYNC_POOL_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)
# The async client: 8 pools x 16 connections, enough for the concurrent engine (see ShardedPoolTransport).
ASYNC_POOL_SHARDS = 8
ASYNC_CONNECTIONS_PER_SHARD = 16
_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")
# Async answers larger than this are decoded and validated in a worker thread, off the event loop.
OFF_LOOP_BODY_BYTES = 256 * 1024


# --- one API call ----------------------------------------------------------------------------------


@dataclass
class Call(Generic[T]):
    """One API call: what to send, how to read a successful answer, and whether it may be repeated."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Mapping[str, Any] | None = None
    params: Any = None
    idempotent: bool = True
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


def drop_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


# --- errors ----------------------------------------------------------------------------------------

_ERROR_CLASSES: dict[int, type[OpenRouterAPIError]] = {
    400: OpenRouterBadRequestError,
    401: OpenRouterAuthenticationError,
    402: OpenRouterPaymentRequiredError,
    403: OpenRouterPermissionDeniedError,
    404: OpenRouterNotFoundError,
    409: OpenRouterConflictError,
    413: OpenRouterBadRequestError,
    422: OpenRouterBadRequestError,
    429: OpenRouterRateLimitError,
}


def api_error(
    status: int | None,
    message: str,
    *,
    conn_id: str,
    code: int | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    generation_id: str | None = None,
    retry_after: float | None = None,
    billed: bool = False,
) -> OpenRouterAPIError:
    """The typed error for an OpenRouter error, with a message that says what to change."""
    kind = status if isinstance(status, int) else (code if isinstance(code, int) else None)
    if kind in _ERROR_CLASSES:
        cls = _ERROR_CLASSES[kind]
    elif kind is None or kind == 408 or kind >= 500:
        cls = OpenRouterServerError
    else:
        cls = OpenRouterAPIError
    metadata = dict(metadata or {})
    hint = _hint(cls, conn_id, metadata)
    where = f" (provider {metadata['provider_name']})" if metadata.get("provider_name") else ""
    text = f"OpenRouter error {kind or '?'}{where}: {message or 'no message'}{hint}"
    if generation_id:
        text += f" [generation {generation_id}]"
    return cls(
        text,
        status=status,
        code=code,
        metadata=metadata,
        generation_id=generation_id,
        retry_after=retry_after,
        billed=billed,
    )


def _hint(cls: type[OpenRouterAPIError], conn_id: str, metadata: Mapping[str, Any]) -> str:
    if cls is OpenRouterAuthenticationError:
        return (
            f". Check the API key in the password (API Key) field of connection {conn_id!r}, "
            "or OPENROUTER_API_KEY when the connection has none."
        )
    if cls is OpenRouterPaymentRequiredError:
        return ". Add credits at https://openrouter.ai/settings/credits or raise the key's limit."
    if cls is OpenRouterPermissionDeniedError and metadata.get("reasons"):
        return f". Flagged for: {', '.join(map(str, metadata['reasons']))}."
    return ""


def error_from_response(response: httpx.Response, conn_id: str) -> OpenRouterAPIError:
    """Map a non-2xx answer (read) to the typed error, keeping OpenRouter's code, message and metadata."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code, metadata = error.get("code"), error.get("metadata")
    else:
        message, code, metadata = _excerpt(response.text), None, None
    return api_error(
        response.status_code,
        message,
        conn_id=conn_id,
        code=code,
        metadata=metadata if isinstance(metadata, dict) else None,
        generation_id=response.headers.get("x-generation-id"),
        retry_after=retry_after_seconds(response.headers),
    )


def in_band_error(
    error: Mapping[str, Any], conn_id: str, generation_id: str | None, *, billed: bool = False
) -> OpenRouterAPIError:
    """The typed error for an ``error`` object inside a 200 body or an SSE chunk.

    ``billed``: output was already generated (and charged) before the error, so a retry would pay again.
    """
    code = error.get("code")
    status = code if isinstance(code, int) else 502
    return api_error(
        status,
        str(error.get("message") or ""),
        conn_id=conn_id,
        code=code,
        metadata=error.get("metadata") if isinstance(error.get("metadata"), dict) else None,
        generation_id=generation_id,
        billed=billed,
    )


def error_from_transport(
    exc: httpx.TransportError, call: Call[Any], settings: ClientSettings
) -> OpenRouterError:
    target = f"{call.method} {settings.base_url}{call.path}"
    # Connect failures happen before a byte of the request is sent: safe to retry even a batch creation.
    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, httpx.ConnectTimeout):
            which, limit, setting = "connect", settings.connect_timeout, "connect_timeout"
        elif isinstance(exc, httpx.PoolTimeout):
            which, limit, setting = "connection pool", settings.timeout, "timeout"
        else:
            which = "write" if isinstance(exc, httpx.WriteTimeout) else "read"
            limit, setting = settings.timeout, "timeout"
        return OpenRouterTimeoutError(
            f"{target} hit the {which} timeout ({limit:g} s). Raise {setting!r} on connection "
            f"{settings.conn_id!r} if the model needs longer.",
            request_sent=sent,
        )
    return OpenRouterConnectionError(
        f"{target} failed: {type(exc).__name__}: {exc or 'connection closed'}", request_sent=sent
    )


def decode_json(response: httpx.Response, conn_id: str) -> Any:
    """The JSON body of a 2xx answer; an ``error`` inside it raises the typed error."""
    try:
        data = response.json()
    except ValueError:
        # Typically an HTML page from a proxy or gateway in front of the API.
        raise OpenRouterServerError(
            f"OpenRouter answered {response.status_code} but not with JSON "
            f"({response.headers.get('content-type', 'no content type')}): {_excerpt(response.text)}",
            status=response.status_code,
            generation_id=response.headers.get("x-generation-id"),
        ) from None
    # A batch object also has an "error" field (why it failed) next to its "status": that is data.
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and "status" not in data:
        raise in_band_error(data["error"], conn_id, data.get("id") or response.headers.get("x-generation-id"))
    return data


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (delta seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


# --- retries ---------------------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """When to try a failed call again, and how long to wait first.

    Exponential backoff with full jitter, unless the server said how long to wait (``Retry-After``).
    Gives up after ``max_retries`` retries or once the waits would add up to more than
    ``max_total_wait`` seconds. ``sleep`` / ``async_sleep`` are injectable so tests never wait.
    """

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_total_wait: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def should_retry(self, error: OpenRouterError, *, idempotent: bool) -> bool:
        if isinstance(error, OpenRouterConnectionError):
            return idempotent or not error.request_sent
        if not isinstance(error, OpenRouterAPIError) or error.billed:
            return False
        status = error.status
        if not idempotent:
            # Creating a batch twice would bill twice; a 429 is the server saying it did nothing.
            return status == 429
        if status == 402:
            return error.retry_after is not None
        return status in RETRYABLE_STATUSES

    def delay(
        self, retry_number: int, error: OpenRouterError, waited: float, *, idempotent: bool
    ) -> float | None:
        """Seconds to wait before retry number ``retry_number`` (1-based), or ``None`` to give up."""
        if retry_number > self.max_retries or not self.should_retry(error, idempotent=idempotent):
            return None
        asked = getattr(error, "retry_after", None)
        if asked is not None:
            wait = asked
        else:
            wait = self.rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (retry_number - 1)))
        if waited + wait > self.max_total_wait:
            return None
        return wait


# --- the two clients -------------------------------------------------------------------------------


def log_answer(call: Call[Any], status: int, started: float, result: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    parts = [f"OpenRouter {call.method} {call.path} -> {status} in {time.perf_counter() - started:.3f}s"]
    model = getattr(result, "model", None) or call.model
    if model:
        parts.append(f"model={model}")
    if isinstance(result, ChatCompletion) and result.id:
        parts.append(f"generation={result.id}")
    usage = getattr(result, "usage", None)
    if isinstance(usage, Usage):
        parts.append(f"tokens={usage.prompt_tokens}+{usage.completion_tokens}")
        if usage.cost is not None:
            parts.append(f"cost=${usage.cost:.6f}")
    log.info(" ".join(parts))
    if log.isEnabledFor(logging.DEBUG):
        # Prompts and completions may hold personal data: only at DEBUG, never at INFO.
        log.debug("OpenRouter request body: %s", _excerpt(json.dumps(call.body), 2000) if call.body else "-")
        log.debug("OpenRouter answer: %s", _excerpt(getattr(result, "content", None) or repr(result), 2000))


def _log_retry(call: Call[Any], error: OpenRouterError, retry_number: int, wait: float) -> None:
    log.warning(
        "OpenRouter %s %s failed (%s); retry %d in %.2fs", call.method, call.path, error, retry_number, wait
    )


def _finish(call: Call[T], response: httpx.Response, started: float, conn_id: str) -> T:
    """Turn a received (non-streamed) answer into the call's result, or into a typed error."""
    # The response and its (already read) stream refer to each other, so without this each page of
    # batch results would stay in memory until a full garbage collection.
    response.stream = httpx.ByteStream(b"")
    if response.is_error:
        raise error_from_response(response, conn_id)
    data = decode_json(response, conn_id)
    try:
        result = call.parse(data)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise OpenRouterServerError(
            f"OpenRouter's answer to {call.method} {call.path} has an unexpected shape "
            f"({type(exc).__name__}: {_excerpt(str(exc))})",
            status=response.status_code,
        ) from None
    log_answer(call, response.status_code, started, result)
    return result


_CONNECT_EVENTS = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})


def _shut_down(connection: Any) -> None:
    """Shut down the socket under an httpcore network stream, waking any thread blocked on it."""
    sock = connection.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed (fd -1), or not connected any more
            # socket.socket's own shutdown, also for an SSLSocket: SSLSocket.shutdown() would drop its
            # SSL object under the reading thread's feet.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _uses_proxy() -> bool:
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One CA bundle per process: loading it costs ~35 ms, too much to repeat per client on an event loop."""
    return httpx.create_ssl_context()


class SyncTransport:
    """Pooled ``httpx.Client`` plus the retry loop, for workers.

    :meth:`abort` stops a request in flight from another thread or from a signal handler: closing a
    socket does not wake a thread blocked reading it, shutting it down does. So every connection the
    client opens is remembered (through httpcore's ``trace`` extension) for ``abort`` to shut down.
    """

    def __init__(
        self,
        settings: ClientSettings,
        policy: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self._connections: list[Any] = []
        self._aborted = False
        self.client = httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=settings.headers(),
            timeout=settings.httpx_timeout(),
            limits=SYNC_POOL_LIMITS,
            verify=_ssl_context(),
            transport=transport,
            event_hooks={"request": [self._trace_connections]},
        )

    def abort(self) -> None:
        """Fail the request in flight now, and every later one on this transport.

        Only sets a flag and shuts sockets down: safe in a signal handler on the thread that is sending
        (which may hold the pool's lock, so nothing here takes it). Dropping the connection also stops
        generation, and billing, on providers that support cancellation.
        """
        self._aborted = True
        for connection in list(self._connections):
            _shut_down(connection)

    def _trace_connections(self, request: httpx.Request) -> None:
        request.extensions.setdefault("trace", self._on_trace)

    def _on_trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event in _CONNECT_EVENTS and (connection := info.get("return_value")) is not None:
            self._connections.append(connection)
            if self._aborted:  # abort() ran while this connection was being opened
                _shut_down(connection)

    def _check_not_aborted(self) -> None:
        if self._aborted:
            raise OpenRouterConnectionError("The request to OpenRouter was aborted.", request_sent=False)

    def request(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy allows; returns the parsed answer."""
        retry_number, waited = 0, 0.0
        while True:
            try:
                return self._attempt(call)
            except OpenRouterError as error:
                retry_number += 1
                wait = self.policy.delay(retry_number, error, waited, idempotent=call.idempotent)
                if wait is None or self._aborted:
                    raise
                _log_retry(call, error, retry_number, wait)
                self.policy.sleep(wait)
                waited += wait

    def _attempt(self, call: Call[T]) -> T:
        self._check_not_aborted()
        started = time.perf_counter()
        try:
            response = self.client.send(call.build(self.client), stream=call.stream)
            if call.stream and response.is_error:
                try:
                    response.read()
                finally:
                    response.close()
        except httpx.TransportError as exc:
            raise error_from_transport(exc, call, self.settings) from None
        if call.stream and not response.is_error:
            return call.parse(response)
        return _finish(call, response, started, self.settings.conn_id)

    def close(self) -> None:
        self.client.close()


class AsyncTransport:
    """Pooled ``httpx.AsyncClient`` plus the retry loop, for triggers and the concurrent engine.

    Build it with :meth:`create`, which loads the CA bundle off the event loop.
    """

    def __init__(
        self,
        settings: ClientSettings,
        policy: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        if transport is None and not _uses_proxy():
            # httpx reads proxy settings from the environment only when it builds its own transport.
            transport = ShardedPoolTransport(ASYNC_POOL_SHARDS, ASYNC_CONNECTIONS_PER_SHARD)
        self.client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=settings.headers(),
            timeout=settings.httpx_timeout(),
            verify=_ssl_context(),
            transport=transport,
        )

    @classmethod
    async def create(
        cls, settings: ClientSettings, policy: RetryPolicy, transport: httpx.AsyncBaseTransport | None = None
    ) -> AsyncTransport:
        await asyncio.to_thread(_ssl_context)
        return cls(settings, policy, transport)

    async def request(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy allows; returns the parsed answer."""
        retry_number, waited = 0, 0.0
        while True:
            try:
                return await self._attempt(call)
            except OpenRouterError as error:
                retry_number += 1
                wait = self.policy.delay(retry_number, error, waited, idempotent=call.idempotent)
                if wait is None:
                    raise
                _log_retry(call, error, retry_number, wait)
                await self.policy.async_sleep(wait)
                waited += wait

    async def _attempt(self, call: Call[T]) -> T:
        started = time.perf_counter()
        try:
            response = await self.client.send(call.build(self.client), stream=call.stream)
            if call.stream and response.is_error:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            raise error_from_transport(exc, call, self.settings) from None
        if call.stream and not response.is_error:
            return call.parse(response)
        if len(response.content) > OFF_LOOP_BODY_BYTES:
            # e.g. a completed batch polled by a trigger inlines all its results: decoding megabytes on
            # the triggerer's loop would stall every other trigger.
            return await asyncio.to_thread(_finish, call, response, started, self.settings.conn_id)
        return _finish(call, response, started, self.settings.conn_id)

    async def aclose(self) -> None:
        await self.client.aclose()


class ShardedPoolTransport(httpx.AsyncBaseTransport):
    """Several small httpcore connection pools behind one transport, each request to the least busy.

    httpcore's pool does work proportional to (connections x idle connections) every time a request
    starts or ends; with 64 requests in flight on one pool that bookkeeping cost ~15 ms of CPU per
    request here. Small pools keep it negligible at the concurrency the concurrent engine uses.
    """

    def __init__(self, shards: int, connections_per_shard: int) -> None:
        limits = httpx.Limits(
            max_connections=connections_per_shard, max_keepalive_connections=connections_per_shard
        )
        context = _ssl_context()
        self._pools = [httpx.AsyncHTTPTransport(limits=limits, verify=context) for _ in range(shards)]
        self._in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = min(range(len(self._pools)), key=self._in_flight.__getitem__)
        self._in_flight[shard] += 1
        try:
            response = await self._pools[shard].handle_async_request(request)
        except BaseException:
            self._in_flight[shard] -= 1
            raise
        response.stream = _ReleasingStream(response.stream, self._in_flight, shard)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its shard back when it is closed."""

    def __init__(self, stream: Any, in_flight: list[int], shard: int) -> None:
        self._stream = stream
        self._in_flight = in_flight
        self._shard = shard
        self._released = False

    async def __aiter__(self) -> Any:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._in_flight[self._shard] -= 1
        await self._stream.aclose()
