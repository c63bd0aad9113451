"""The two clients plus the retry loop: sync (httpx) for workers, async (aiohttp) for triggers and the
concurrent engine.

They differ only in ``send`` / ``await send`` and ``sleep`` / ``await sleep``. What they decide comes
from elsewhere: what to send and how to read it (:class:`Call`), whether and when to retry
(:class:`RetryPolicy`), what an error is (:mod:`.errors`), how long an attempt may take (:class:`Deadline`,
``request_deadline``). Both hand the error mapper an :class:`Answer` and httpx's exceptions (the async
client's aiohttp layer, :mod:`.aio`, says its failures in those terms). Two entry points: :meth:`request`
returns the parsed answer, :meth:`stream` a :class:`ChatStream` opened (and retried) up to its first byte.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_openrouter._streaming import AsyncChatStream, ChatStream
from airflow_openrouter._text import redact
from airflow_openrouter._transport.calls import Call, Headers
from airflow_openrouter._transport.errors import (
    decoded_body,
    error_from_response,
    error_from_transport,
    unexpected_shape,
)
from airflow_openrouter._transport.retry import RetryPolicy
from airflow_openrouter._transport.settings import ClientSettings
from airflow_openrouter._transport.sockets import Deadline, OpenConnections, bound_sockets
from airflow_openrouter._transport.wire import Answer, Urls, environment_proxy
from airflow_openrouter.exceptions import OpenRouterConnectionError, OpenRouterError

if TYPE_CHECKING:
    from airflow_openrouter._transport.aio import AiohttpClient

__all__ = ["OFF_LOOP_BODY_BYTES", "AsyncTransport", "SyncTransport"]

log = logging.getLogger("airflow_openrouter.transport")
T = TypeVar("T")
R = TypeVar("R")

# The sync client serves one task at a time; a few kept-alive connections are plenty.
SYNC_POOL_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)
# Async answers larger than this are decoded and validated in a worker thread, off the event loop.
OFF_LOOP_BODY_BYTES = 256 * 1024


class _RedactCredentials(logging.Filter):
    """httpcore's DEBUG trace quotes exceptions whole, h11's ``Illegal header value b'Bearer …'`` among
    them: strip credentials from those records (they exist only when DEBUG is on for httpcore)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


for _name in ("httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpx"):
    logging.getLogger(_name).addFilter(_RedactCredentials())


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One CA bundle per process, for both clients: loading it costs ~35 ms, too much to repeat per
    client on an event loop."""
    return httpx.create_ssl_context()


def _finish(call: Call[T], answer: Answer, started: float, settings: ClientSettings) -> T:
    """Turn a received (non-streamed) answer into the call's result, or into a typed error."""
    if answer.is_error:
        raise error_from_response(answer, settings)
    data = decoded_body(answer, settings)
    try:
        result = call.parse(data)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise unexpected_shape(call, answer.status_code, exc, settings) from None
    call.log_answer(answer.status_code, started, result)
    return result


class _Retries:
    """The retries of one call so far: how many, how long waited; logs each one."""

    def __init__(self, policy: RetryPolicy, call: Call[Any]) -> None:
        self.policy = policy
        self.call = call
        self.number = 0
        self.waited = 0.0

    def wait_after(self, error: OpenRouterError) -> float | None:
        """Seconds to wait before sending the call again, or ``None`` to raise ``error``."""
        self.number += 1
        call = self.call
        wait = self.policy.delay(
            self.number, error, self.waited, idempotent=call.idempotent, billed=call.billed
        )
        if wait is not None:
            self.waited += wait
            log.warning(
                "OpenRouter %s %s failed (%s); retry %d in %.2fs",
                call.method,
                call.path,
                error,
                self.number,
                wait,
            )
        return wait


class SyncTransport:
    """An httpx transport (its pool of connections) plus the retry loop, for workers.

    Requests are built here and handed to the transport, without an ``httpx.Client``, which would merge
    its URL, headers, cookies and timeout into every request again and read cookies out of every
    answer: URLs and headers are built once, and the API sets no cookie worth keeping (the async client
    keeps none either). The proxy is the one the environment names (:func:`environment_proxy`).

    :meth:`abort` stops a request in flight from another thread or from a signal handler.
    """

    def __init__(
        self,
        settings: ClientSettings,
        policy: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.connections = OpenConnections()
        self.transport = transport or httpx.HTTPTransport(
            verify=_ssl_context(), limits=SYNC_POOL_LIMITS, proxy=environment_proxy(settings.base_url)
        )
        bound_sockets([self.transport], self.connections)
        self._urls = Urls(settings.base_url, httpx.URL)
        self._base_headers = {**settings.headers(), "Accept-Encoding": "gzip, deflate"}
        self._headers: dict[Headers, httpx.Headers] = {}
        timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout, pool=settings.timeout)
        self._timeouts = timeout.as_dict()

    def abort(self) -> None:
        """Fail the request in flight now, and every later one on this transport (signal-handler safe).
        Dropping the connection also stops generation, and billing, on providers that support it."""
        self.connections.shut_down_all()

    def request(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy allows; returns the parsed answer."""
        return self._retrying(call, self._attempt)

    def stream(self, call: Call[Any]) -> ChatStream:
        """Open the stream of ``call``; retried (as the policy allows) only until its first byte."""
        return self._retrying(call, self._open_stream)

    def _retrying(self, call: Call[Any], attempt: Callable[[Call[Any]], R]) -> R:
        retries = _Retries(self.policy, call)
        while True:
            try:
                return attempt(call)
            except OpenRouterError as error:
                wait = None if self.connections.aborted else retries.wait_after(error)
                if wait is None:
                    raise
                self.policy.sleep(wait)

    def _send(self, call: Call[Any]) -> tuple[httpx.Response, Deadline]:
        if self.connections.aborted:
            raise OpenRouterConnectionError("The request to OpenRouter was aborted.", request_sent=False)
        deadline = Deadline(self.settings.deadline)
        request = httpx.Request(
            call.method,
            self._urls(call.path),
            params=call.params,
            headers=self._headers_for(call.headers),
            content=call.content,
            extensions={"timeout": self._timeouts},
        )
        with deadline:
            try:
                response = self.transport.handle_request(request)
                response.request = request
                if not call.stream or response.is_error:
                    try:
                        response.read()
                    finally:
                        response.close()
            except httpx.TransportError as exc:
                raise error_from_transport(exc, call, self.settings, deadline) from None
        return response, deadline

    def _headers_for(self, extra: Headers) -> httpx.Headers:
        headers = self._headers.get(extra)
        if headers is None:
            headers = self._headers[extra] = httpx.Headers({**self._base_headers, **dict(extra)})
        return headers

    def _attempt(self, call: Call[T]) -> T:
        started = time.perf_counter()
        # (Without an httpx.Client no wrapper stream refers back to the response: a read page of batch
        # results is freed as soon as it is dropped, not at the next full garbage collection.)
        response, _ = self._send(call)
        return _finish(call, _answer(response), started, self.settings)

    def _open_stream(self, call: Call[Any]) -> ChatStream:
        response, deadline = self._send(call)
        if response.is_error:
            raise error_from_response(_answer(response), self.settings)
        return ChatStream(response, self.settings, call, deadline)

    def close(self) -> None:
        self.transport.close()


def _answer(response: httpx.Response) -> Answer:
    return Answer(response.status_code, response.headers, response.content)


class AsyncTransport:
    """An aiohttp session (:class:`~airflow_openrouter._transport.aio.AiohttpClient`) plus the retry
    loop, for triggers and the concurrent engine. Bound to the event loop it was created on.

    Build it with :meth:`create`, which reads the CA bundle and the proxy settings off the event loop.
    """

    def __init__(self, settings: ClientSettings, policy: RetryPolicy, client: AiohttpClient) -> None:
        self.settings = settings
        self.policy = policy
        self.client = client
        self._closer: AsyncIterator[None] | None = None

    @classmethod
    async def create(cls, settings: ClientSettings, policy: RetryPolicy) -> AsyncTransport:
        from airflow_openrouter._transport import aio  # aiohttp is imported by async callers only

        def blocking_parts() -> tuple[ssl.SSLContext, aio.Proxy]:
            return _ssl_context(), aio.proxy_for(settings.base_url)

        ssl_context, proxy = await asyncio.to_thread(blocking_parts)
        transport = cls(settings, policy, aio.AiohttpClient(settings, ssl_context, proxy))
        # asyncio.run() closes every suspended async generator before it closes its loop: one parked
        # here closes the session then, for callers that never call aclose() (aiohttp reports a session
        # left to the garbage collector as an error).
        transport._closer = transport._close_with_the_loop()
        await anext(transport._closer)
        return transport

    async def _close_with_the_loop(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    async def request(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy allows; returns the parsed answer."""
        return await self._retrying(call, self._attempt)

    async def stream(self, call: Call[Any]) -> AsyncChatStream:
        """Open the stream of ``call``; retried (as the policy allows) only until its first byte."""
        return await self._retrying(call, self._open_stream)

    async def _retrying(self, call: Call[Any], attempt: Callable[[Call[Any]], Awaitable[R]]) -> R:
        retries = _Retries(self.policy, call)
        while True:
            try:
                return await attempt(call)
            except OpenRouterError as error:
                wait = retries.wait_after(error)
                if wait is None:
                    raise
                await self.policy.async_sleep(wait)

    async def _attempt(self, call: Call[T]) -> T:
        started = time.perf_counter()
        deadline = Deadline(self.settings.deadline)  # aiohttp enforces it; this says whether it passed
        try:
            answer = await self.client.send(call)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, call, self.settings, deadline) from None
        if len(answer.content) > OFF_LOOP_BODY_BYTES:
            # e.g. a completed batch polled by a trigger inlines all its results: decoding megabytes on
            # the triggerer's loop would stall every other trigger.
            return await asyncio.to_thread(_finish, call, answer, started, self.settings)
        return _finish(call, answer, started, self.settings)

    async def _open_stream(self, call: Call[Any]) -> AsyncChatStream:
        deadline = Deadline(self.settings.deadline)
        try:
            opened = await self.client.open_stream(call)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, call, self.settings, deadline) from None
        if isinstance(opened, Answer):
            raise error_from_response(opened, self.settings)
        return AsyncChatStream(opened, self.settings, call, deadline)

    async def aclose(self) -> None:
        await self.client.aclose()
