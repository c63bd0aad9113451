"""The two clients, one pooled httpx client each plus the retry loop: sync for workers, async for triggers
and the concurrent engine.

They differ only in ``send`` / ``await send`` and ``sleep`` / ``await sleep``. What they decide comes
from elsewhere: what to send and how to read it (:class:`Call`), whether and when to retry
(:class:`RetryPolicy`), what an error is (:mod:`.errors`), how long an attempt may take (:class:`Deadline`,
``request_deadline``). Two entry points: :meth:`request` returns the parsed answer, :meth:`stream` a
:class:`ChatStream` opened (and retried) up to its first byte.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from airflow_openrouter._streaming import AsyncChatStream, ChatStream
from airflow_openrouter._text import redact
from airflow_openrouter._transport.calls import Call
from airflow_openrouter._transport.errors import (
    decode_json,
    error_from_response,
    error_from_transport,
    unexpected_shape,
)
from airflow_openrouter._transport.pool import ShardedPoolTransport
from airflow_openrouter._transport.retry import RetryPolicy
from airflow_openrouter._transport.settings import ClientSettings
from airflow_openrouter._transport.sockets import Deadline, OpenConnections, bound_sockets
from airflow_openrouter.exceptions import OpenRouterConnectionError, OpenRouterError

__all__ = ["OFF_LOOP_BODY_BYTES", "AsyncTransport", "SyncTransport"]

log = logging.getLogger("airflow_openrouter.transport")
T = TypeVar("T")
R = TypeVar("R")

# The sync client serves one task at a time; a few kept-alive connections are plenty.
SYNC_POOL_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)
# The async client: 8 pools x 16 connections, enough for the concurrent engine (see ShardedPoolTransport).
ASYNC_POOL_SHARDS = 8
ASYNC_CONNECTIONS_PER_SHARD = 16
_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")
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
    """One CA bundle per process: loading it costs ~35 ms, too much to repeat per client on an event loop."""
    return httpx.create_ssl_context()


def _uses_proxy() -> bool:
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES)


def _client_options(settings: ClientSettings) -> dict[str, Any]:
    return {
        "base_url": settings.base_url.rstrip("/") + "/",
        "headers": settings.headers(),
        "timeout": httpx.Timeout(settings.timeout, connect=settings.connect_timeout, pool=settings.timeout),
        "verify": _ssl_context(),
    }


def _transports_of(client: httpx.Client | httpx.AsyncClient) -> list[Any]:
    """The transports a client sends through: its own and the proxies' httpx mounted from the environment."""
    transports = [client._transport, *client._mounts.values()]
    return [pool for t in transports for pool in (t.pools if isinstance(t, ShardedPoolTransport) else [t])]


def _finish(call: Call[T], response: httpx.Response, started: float, settings: ClientSettings) -> T:
    """Turn a received (non-streamed) answer into the call's result, or into a typed error."""
    # The response and its (already read) stream refer to each other, so without this each page of
    # batch results would stay in memory until a full garbage collection.
    response.stream = httpx.ByteStream(b"")
    if response.is_error:
        raise error_from_response(response, settings)
    data = decode_json(response, settings)
    try:
        result = call.parse(data)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise unexpected_shape(call, response.status_code, exc, settings) from None
    call.log_answer(response.status_code, started, result)
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
    """Pooled ``httpx.Client`` plus the retry loop, for workers.

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
        self.client = httpx.Client(**_client_options(settings), limits=SYNC_POOL_LIMITS, transport=transport)
        bound_sockets(_transports_of(self.client), self.connections)

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

    def _send(self, call: Call[Any]) -> tuple[httpx.Response, Deadline, float]:
        if self.connections.aborted:
            raise OpenRouterConnectionError("The request to OpenRouter was aborted.", request_sent=False)
        started = time.perf_counter()
        deadline = Deadline(self.settings.deadline)
        with deadline:
            try:
                response = self.client.send(call.build(self.client), stream=call.stream)
                if call.stream and response.is_error:
                    try:
                        response.read()
                    finally:
                        response.close()
            except httpx.TransportError as exc:
                raise error_from_transport(exc, call, self.settings, deadline) from None
        return response, deadline, started

    def _attempt(self, call: Call[T]) -> T:
        response, _, started = self._send(call)
        return _finish(call, response, started, self.settings)

    def _open_stream(self, call: Call[Any]) -> ChatStream:
        response, deadline, _ = self._send(call)
        if response.is_error:
            raise error_from_response(response, self.settings)
        return ChatStream(response, self.settings, call, deadline)

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
            transport = ShardedPoolTransport(ASYNC_POOL_SHARDS, ASYNC_CONNECTIONS_PER_SHARD, _ssl_context())
        self.client = httpx.AsyncClient(**_client_options(settings), transport=transport)
        bound_sockets(_transports_of(self.client))

    @classmethod
    async def create(
        cls, settings: ClientSettings, policy: RetryPolicy, transport: httpx.AsyncBaseTransport | None = None
    ) -> AsyncTransport:
        await asyncio.to_thread(_ssl_context)
        return cls(settings, policy, transport)

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

    async def _send(self, call: Call[Any]) -> tuple[httpx.Response, Deadline, float]:
        started = time.perf_counter()
        deadline = Deadline(self.settings.deadline)
        with deadline:
            try:
                response = await self.client.send(call.build(self.client), stream=call.stream)
                if call.stream and response.is_error:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                raise error_from_transport(exc, call, self.settings, deadline) from None
        return response, deadline, started

    async def _attempt(self, call: Call[T]) -> T:
        response, _, started = await self._send(call)
        if len(response.content) > OFF_LOOP_BODY_BYTES:
            # e.g. a completed batch polled by a trigger inlines all its results: decoding megabytes on
            # the triggerer's loop would stall every other trigger.
            return await asyncio.to_thread(_finish, call, response, started, self.settings)
        return _finish(call, response, started, self.settings)

    async def _open_stream(self, call: Call[Any]) -> AsyncChatStream:
        response, deadline, _ = await self._send(call)
        if response.is_error:
            raise error_from_response(response, self.settings)
        return AsyncChatStream(response, self.settings, call, deadline)

    async def aclose(self) -> None:
        await self.client.aclose()
