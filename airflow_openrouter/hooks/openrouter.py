"""OpenRouterHook: the ``openrouter`` connection, and every HTTP call the provider makes.

Each API method is described once, as a :class:`Call` built in :mod:`airflow_openrouter._transport.calls`;
the public sync method and its async twin (prefixed ``a``) only hand that call to the sync or the async
transport. Retries, timeouts, error mapping and logging live in the transport.

The connection is looked up the way Airflow's hooks do (environment variable, secrets backend, and the
metadata database through the API server inside a task). Outside a task (a notebook, a script) Airflow
does not read the metadata database itself, so the hook does, and says so. ``OPENROUTER_API_KEY`` stands
in for a missing key only for the default connection or a connection without a password.

Public names of this module: the hook, and the transport types it takes or returns (:class:`RetryPolicy`,
:class:`ClientSettings`, :class:`ChatStream`, :class:`AsyncChatStream`, and the endpoint option types).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from airflow.sdk import BaseHook
from typing_extensions import Unpack

from airflow_openrouter import DEFAULT_CONN_ID
from airflow_openrouter._compat import AirflowNotFoundException, get_connection_async, mask_secret_async
from airflow_openrouter._streaming import AsyncChatStream, ChatStream
from airflow_openrouter._text import redact, safe_label
from airflow_openrouter._transport import calls
from airflow_openrouter._transport.calls import (
    CHAT_ENDPOINT,
    EMBEDDINGS_ENDPOINT,
    Call,
    CreateBatchOptions,
    EmbedOptions,
    ListBatchesOptions,
)

# chat_body: not public; batch/items.py imports it from here.
from airflow_openrouter._transport.calls import chat_body as chat_body
from airflow_openrouter._transport.clients import AsyncTransport, SyncTransport
from airflow_openrouter._transport.connection import build_settings, connection_outside_task
from airflow_openrouter._transport.pagination import ResultsPager
from airflow_openrouter._transport.retry import RetryPolicy
from airflow_openrouter._transport.settings import API_KEY_ENV_VAR, ClientSettings
from airflow_openrouter.exceptions import OpenRouterError, OpenRouterNotFoundError
from airflow_openrouter.types import (
    Batch,
    BatchDeleted,
    BatchList,
    BatchResult,
    ChatCompletion,
    EmbeddingsResponse,
    Generation,
    KeyInfo,
    Model,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = [
    "API_KEY_ENV_VAR",
    "CHAT_ENDPOINT",
    "EMBEDDINGS_ENDPOINT",
    "AsyncChatStream",
    "ChatStream",
    "ClientSettings",
    "CreateBatchOptions",
    "EmbedOptions",
    "ListBatchesOptions",
    "OpenRouterHook",
    "RetryPolicy",
]
T = TypeVar("T")
RESULTS_PAGE_SIZE = 500


class OpenRouterHook(BaseHook):
    """Talks to OpenRouter with the API key of an ``openrouter`` connection.

    :param openrouter_conn_id: the connection. Its password is the API key (surrounding whitespace is
        stripped); when it is empty, or when the *default* connection does not exist,
        ``OPENROUTER_API_KEY`` from the environment is used, and the log says so. Host is the base URL
        (default ``https://openrouter.ai/api/v1``); extras: ``default_model``, ``site_url``,
        ``app_name``, ``timeout``, ``connect_timeout``, ``max_retries``, ``request_deadline`` (defaults:
        :class:`ClientSettings`).
    :param timeout: read timeout in seconds, overriding the connection's.
    :param request_deadline: seconds one attempt may take in all, overriding the connection's.
    :param max_retries: retries of retryable failures, overriding the connection's.
    :param sleep: / :param async_sleep: how the retry loop waits (for tests, or to end a wait early).
    :param retry_policy: a whole :class:`RetryPolicy` (backoff, total wait), instead of the default one.
    :param transport: an httpx transport for the sync client, for tests of cases no server can produce.
    """

    conn_name_attr = "openrouter_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "openrouter"
    hook_name = "OpenRouter"

    def __init__(
        self,
        openrouter_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        request_deadline: float | None = None,
        max_retries: int | None = None,
        sleep: Callable[[float], None] | None = None,
        async_sleep: Callable[[float], Awaitable[None]] | None = None,
        retry_policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.openrouter_conn_id = openrouter_conn_id
        self._overrides = {
            "timeout": timeout,
            "request_deadline": request_deadline,
            "max_retries": max_retries,
        }
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._retry_policy = retry_policy
        self._transport = transport
        self._settings: ClientSettings | None = None
        self._lookups: dict[asyncio.AbstractEventLoop, asyncio.Task[ClientSettings]] = {}
        self._sync: SyncTransport | None = None
        # One async client per event loop: an aiohttp session must not cross loops.
        self._async: dict[asyncio.AbstractEventLoop, AsyncTransport] = {}

    @classmethod
    def from_credentials(
        cls, api_key: str | None, base_url: str | None = None, *, label: str = "credentials", **kwargs: Any
    ) -> OpenRouterHook:
        """A hook for an API key and a base URL handed over directly instead of a connection id: for
        integrations that get only a connection's password and host (common-ai's batch adapters).

        The key and URL follow the connection's rules (whitespace stripped; ``OPENROUTER_API_KEY`` when
        the key is empty, and the log says so; the default base URL when *base_url* is empty); the
        extras keep their defaults. *label* names the credentials in logs and errors where a connection
        id would. The key is not masked here: the lookup that read it (Airflow's ``get_connection``)
        masks it. ``kwargs`` are the constructor's (``timeout=``, ``max_retries=``, ``transport=``, ...).
        """
        hook = cls(label, **kwargs)
        credentials = SimpleNamespace(password=api_key, host=base_url, port=None, schema=None)
        hook._settings = build_settings(label, credentials, {}, overrides=hook._overrides, log=hook.log)
        return hook

    # --- connection ------------------------------------------------------------------------------

    @property
    def settings(self) -> ClientSettings:
        """The connection, resolved once per hook (sync lookup)."""
        if self._settings is None:
            try:
                conn: Connection | None = self.get_connection(self.openrouter_conn_id)
            except AirflowNotFoundException:
                conn = self._outside_task_lookup()
            settings = self._settings_from(conn, conn.extra_dejson if conn else {})
            from airflow.sdk.log import mask_secret

            mask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    async def asettings(self) -> ClientSettings:
        """The connection, resolved once per hook without blocking the event loop. Coroutines that ask
        at once (a ``gather`` of calls on a fresh hook) share one lookup, instead of each asking the API
        server for the connection and logging which key it uses."""
        if self._settings is not None:
            return self._settings
        loop = asyncio.get_running_loop()
        lookup = self._lookups.get(loop)
        if lookup is None:
            lookup = self._lookups[loop] = loop.create_task(self._look_up_settings())
            lookup.add_done_callback(lambda task: self._lookup_done(loop, task))
        # Shielded: a caller cancelled while waiting must not cancel the lookup the others wait for.
        return await asyncio.shield(lookup)

    async def _look_up_settings(self) -> ClientSettings:
        conn: Connection | None
        try:
            conn, extra = await get_connection_async(self, self.openrouter_conn_id)
        except AirflowNotFoundException:
            conn = await asyncio.to_thread(self._outside_task_lookup)
            extra = conn.extra_dejson if conn else {}
        settings = self._settings_from(conn, extra)
        await mask_secret_async(settings.api_key)
        self._settings = settings
        return settings

    def _lookup_done(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[ClientSettings]) -> None:
        # A failed lookup is tried again by the next caller; its error reached every waiter (or, if all
        # of them were cancelled, no one: marked as seen, so asyncio does not log it as lost).
        self._lookups.pop(loop, None)
        if not task.cancelled():
            task.exception()

    def _outside_task_lookup(self) -> Connection | None:
        return connection_outside_task(self.openrouter_conn_id, self.default_conn_name, self.log)

    def get_conn(self) -> ClientSettings:
        return self.settings

    @property
    def default_model(self) -> str | None:
        return self.settings.default_model

    def _settings_from(self, conn: Connection | None, extra: Mapping[str, Any]) -> ClientSettings:
        return build_settings(self.openrouter_conn_id, conn, extra, overrides=self._overrides, log=self.log)

    # --- transports ------------------------------------------------------------------------------

    def _policy(self, settings: ClientSettings) -> RetryPolicy:
        policy = self._retry_policy or RetryPolicy(max_retries=settings.max_retries)
        if self._sleep is not None:
            policy = dataclasses.replace(policy, sleep=self._sleep)
        if self._async_sleep is not None:
            policy = dataclasses.replace(policy, async_sleep=self._async_sleep)
        return policy

    def _sync_transport(self) -> SyncTransport:
        if self._sync is None:
            settings = self.settings
            self._sync = SyncTransport(settings, self._policy(settings), self._transport)
        return self._sync

    async def _async_transport_for_loop(self) -> AsyncTransport:
        loop = asyncio.get_running_loop()
        transport = self._async.get(loop)
        if transport is None:
            settings = await self.asettings()
            new = await AsyncTransport.create(settings, self._policy(settings))
            # Many coroutines may get here at once on a fresh hook: the first to finish wins, so the
            # loop keeps a single pooled client.
            transport = self._async.get(loop)
            if transport is None:
                transport = self._async[loop] = new
                self._forget_closed_loops()
            else:
                await new.aclose()
        return transport

    def _forget_closed_loops(self) -> None:
        # A client cannot outlive its loop, and its connections keep the loop referenced, so entries of
        # finished loops (one per asyncio.run) are dropped here rather than by garbage collection.
        for loop in [loop for loop in self._async if loop.is_closed()]:
            del self._async[loop]

    def _send(self, call: Call[T]) -> T:
        return self._sync_transport().request(call)

    async def _asend(self, call: Call[T]) -> T:
        return await (await self._async_transport_for_loop()).request(call)

    def abort(self) -> None:
        """Abort the sync request in flight, from another thread or a signal handler (``on_kill``);
        it and any later sync call on this hook raise :class:`OpenRouterConnectionError`."""
        if self._sync is not None:
            self._sync.abort()

    def close(self) -> None:
        """Close the pooled sync client (async clients: :meth:`aclose`, on their loop)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self._forget_closed_loops()

    async def aclose(self) -> None:
        """Close this event loop's pooled async client."""
        transport = self._async.pop(asyncio.get_running_loop(), None)
        if transport is not None:
            await transport.aclose()

    def __enter__(self) -> OpenRouterHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> OpenRouterHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- chat completions ------------------------------------------------------------------------

    def _chat_call(
        self,
        settings: ClientSettings,
        messages: Sequence[Mapping[str, Any]],
        model: str | None,
        params: Mapping[str, Any],
        stream: bool = False,
        log_level: int | None = None,
    ) -> Call[ChatCompletion]:
        if model is None and settings.default_model is None:
            self.log.info(
                "No model given and connection %r has no default_model: OpenRouter uses the account's "
                "default model.",
                settings.conn_id,
            )
        return calls.chat_call(
            messages,
            model or settings.default_model,
            params,
            conn_id=settings.conn_id,
            stream=stream,
            log_level=log_level,
        )

    def chat_completion(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        log_level: int | None = None,
        **params: Any,
    ) -> ChatCompletion:
        """``POST /chat/completions``. ``params`` are body fields (``seed``, ``max_tokens``,
        ``response_format``, ``tools``, ``provider``, ``models``, ``reasoning``, ``plugins``, ...);
        ``extra_body`` is merged into the body as is, for fields newer than this provider.

        ``log_level``: of the one line logged per answer (route, status, time, model, generation,
        tokens, cost); by default INFO, or the level the calling context set (the bulk engines and batch
        polls log their calls at DEBUG, and their progress instead).

        Not sent again once the request was sent without an answer (a read timeout, a dropped
        connection): the generation may have been billed. Use :meth:`stream_chat_completion` for long
        generations: its ``timeout`` is an idle timeout between chunks."""
        return self._send(self._chat_call(self.settings, messages, model, params, log_level=log_level))

    async def achat_completion(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        log_level: int | None = None,
        **params: Any,
    ) -> ChatCompletion:
        settings = self._settings or await self.asettings()
        return await self._asend(self._chat_call(settings, messages, model, params, log_level=log_level))

    def stream_chat_completion(
        self, *, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> ChatStream:
        """Stream a chat completion (SSE). Iterate the result for chunks; ``.completion()`` afterwards
        gives the same :class:`ChatCompletion` as :meth:`chat_completion`. Retried only before the
        first byte; an error mid-stream raises the typed error. ``close()`` aborts it. The connection's
        ``request_deadline`` bounds the whole stream."""
        transport = self._sync_transport()
        return transport.stream(self._chat_call(transport.settings, messages, model, params, stream=True))

    async def astream_chat_completion(
        self, *, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> AsyncChatStream:
        """Async twin of :meth:`stream_chat_completion`; use it as ``async with`` (or ``aclose()`` it)
        when you may stop iterating early, so the connection goes back to the pool."""
        transport = await self._async_transport_for_loop()
        return await transport.stream(
            self._chat_call(transport.settings, messages, model, params, stream=True)
        )

    # --- embeddings ------------------------------------------------------------------------------

    def embed(
        self,
        *,
        model: str,
        input: str | Sequence[str] | Sequence[Sequence[int]],
        **options: Unpack[EmbedOptions],
    ) -> EmbeddingsResponse:
        """``POST /embeddings``: one vector per input (a string, a list of strings, or token arrays; up
        to 2,048 inputs a request). ``response.vectors()`` gives them as float32 arrays in input order.

        Vectors travel as base64 float32 unless ``encoding_format="float"``: a quarter of the bytes of
        JSON numbers, decoded to the same values. An answer without exactly one vector per input
        raises. Not sent again once the request was sent without an answer (it may have been billed)."""
        return self._send(calls.embeddings_call(model, input, options, conn_id=self.settings.conn_id))

    async def aembed(
        self,
        *,
        model: str,
        input: str | Sequence[str] | Sequence[Sequence[int]],
        **options: Unpack[EmbedOptions],
    ) -> EmbeddingsResponse:
        settings = await self.asettings()
        return await self._asend(calls.embeddings_call(model, input, options, conn_id=settings.conn_id))

    def list_embedding_models(self) -> list[Model]:
        """The embedding models (``GET /embeddings/models``; ``list_models()`` lists text models)."""
        return self._send(calls.embedding_models_call())

    async def alist_embedding_models(self) -> list[Model]:
        return await self._asend(calls.embedding_models_call())

    # --- batches ---------------------------------------------------------------------------------

    def create_batch(
        self, *, model: str, requests: Sequence[Mapping[str, Any]], **options: Unpack[CreateBatchOptions]
    ) -> Batch:
        """``POST /batches``: ``requests`` are ``{"custom_id": ..., "body": {...}}``. Not idempotent, so
        retried only on 429 and on failures before the request was sent."""
        return self._send(calls.create_batch_call(model, requests, **options))

    async def acreate_batch(
        self, *, model: str, requests: Sequence[Mapping[str, Any]], **options: Unpack[CreateBatchOptions]
    ) -> Batch:
        return await self._asend(calls.create_batch_call(model, requests, **options))

    def get_batch(self, batch_id: str) -> Batch:
        return self._send(calls.get_batch_call(batch_id))

    async def aget_batch(self, batch_id: str) -> Batch:
        return await self._asend(calls.get_batch_call(batch_id))

    def list_batches(self, **options: Unpack[ListBatchesOptions]) -> BatchList:
        """One page of the workspace's batches, newest first (next page: ``after=page.last_id``)."""
        return self._send(calls.list_batches_call(**options))

    async def alist_batches(self, **options: Unpack[ListBatchesOptions]) -> BatchList:
        return await self._asend(calls.list_batches_call(**options))

    def delete_batch(self, batch_id: str) -> BatchDeleted:
        """Delete a finished batch and its stored results (409 while it runs; this is not a cancel)."""
        return self._send(calls.delete_batch_call(batch_id))

    async def adelete_batch(self, batch_id: str) -> BatchDeleted:
        return await self._asend(calls.delete_batch_call(batch_id))

    def iter_batch_results(
        self, batch_id: str, *, page_size: int = RESULTS_PAGE_SIZE, expected_rows: int | None = None
    ) -> Iterator[BatchResult]:
        """Every result row of a finished batch, page by page (memory stays flat). Uses
        ``GET /batches/{id}/results`` and falls back to the inline ``results`` of ``GET /batches/{id}``
        where the paginated endpoint is not served.

        :param expected_rows: the batch's ``request_counts.total`` when known: more rows than that, a
            repeated cursor or ``has_more`` without a cursor raise :class:`OpenRouterPaginationError`.
        """
        pager = ResultsPager(batch_id, page_size, expected_rows)
        while (call := pager.next_call()) is not None:
            try:
                rows = pager.accept(self._send(call))
            except OpenRouterNotFoundError as exc:
                pager.check_fallback(exc)
                rows = pager.inline_rows(self.get_batch(batch_id))
            yield from rows

    async def aiter_batch_results(
        self, batch_id: str, *, page_size: int = RESULTS_PAGE_SIZE, expected_rows: int | None = None
    ) -> AsyncIterator[BatchResult]:
        pager = ResultsPager(batch_id, page_size, expected_rows)
        while (call := pager.next_call()) is not None:
            try:
                rows = pager.accept(await self._asend(call))
            except OpenRouterNotFoundError as exc:
                pager.check_fallback(exc)
                rows = pager.inline_rows(await self.aget_batch(batch_id))
            for row in rows:
                yield row

    # --- account, catalogue, generations ---------------------------------------------------------

    def get_generation(self, generation_id: str) -> Generation:
        """Stats of one generation (tokens, billed cost, latency). May 404 for a few seconds after it ends."""
        return self._send(calls.generation_call(generation_id))

    async def aget_generation(self, generation_id: str) -> Generation:
        return await self._asend(calls.generation_call(generation_id))

    def list_models(self) -> list[Model]:
        return self._send(calls.models_call())

    async def alist_models(self) -> list[Model]:
        return await self._asend(calls.models_call())

    def get_key(self) -> KeyInfo:
        """The API key's label, limit and usage (``GET /key``; free)."""
        return self._send(calls.key_call())

    async def aget_key(self) -> KeyInfo:
        return await self._asend(calls.key_call())

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the free ``GET /key``; used by the UI's Test button. The key's label is
        shown only when it does not give the key away (else a masked form of the key)."""
        try:
            key = self.get_key()
        except OpenRouterError as exc:
            return False, redact(str(exc), self._settings.api_key if self._settings else None)
        settings = self.settings
        remaining = "no limit" if key.limit_remaining is None else f"${key.limit_remaining:,.2f} remaining"
        label = safe_label(key.label, settings.api_key)
        return True, f"Connected to {settings.base_url} with key {label}: {remaining}."
