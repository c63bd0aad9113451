"""OpenRouterHook: the ``openrouter`` connection, and every HTTP call the provider makes.

Each API method is described once, as a :class:`~airflow_openrouter._transport.Call` built by a
``_..._call`` method; the public sync method and its async twin (prefixed ``a``) only hand that call to
the sync or the async transport. Retries, timeouts, error mapping and logging live in the transport.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from airflow.sdk import BaseHook

from airflow_openrouter import DEFAULT_BASE_URL
from airflow_openrouter._compat import AirflowNotFoundException, get_connection_async, mask_secret_async
from airflow_openrouter._streaming import AsyncChatStream, ChatStream
from airflow_openrouter._transport import (
    AsyncTransport,
    Call,
    ClientSettings,
    RetryPolicy,
    SyncTransport,
    drop_none,
    in_band_error,
)
from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterError,
    OpenRouterNotFoundError,
)
from airflow_openrouter.types import (
    Batch,
    BatchDeleted,
    BatchList,
    BatchResult,
    BatchResultsPage,
    ChatCompletion,
    Generation,
    KeyInfo,
    Model,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

API_KEY_ENV_VAR = "OPENROUTER_API_KEY"
CHAT_ENDPOINT = "/v1/chat/completions"
RESULTS_PAGE_SIZE = 500

# Connection extras: name -> (type, default). The UI stores them by bare name; the legacy
# ``extra__openrouter__<name>`` form is read too.
_EXTRAS: dict[str, tuple[type, Any]] = {
    "default_model": (str, None),
    "site_url": (str, None),
    "app_name": (str, None),
    "timeout": (float, 120.0),
    "connect_timeout": (float, 10.0),
    "max_retries": (int, 4),
}


class OpenRouterHook(BaseHook):
    """Talks to OpenRouter with the API key of an ``openrouter`` connection.

    :param openrouter_conn_id: the connection. Its password is the API key (when empty, or when the
        connection does not exist, ``OPENROUTER_API_KEY`` from the environment is used, and the log says
        so); host is the base URL (default ``https://openrouter.ai/api/v1``); extras: ``default_model``,
        ``site_url``, ``app_name``, ``timeout``, ``connect_timeout``, ``max_retries``.
    :param timeout: read timeout in seconds, overriding the connection's.
    :param max_retries: retries of retryable failures, overriding the connection's.
    :param retry_policy: a whole :class:`RetryPolicy` (backoff, total wait, injectable sleep).
    :param transport: / :param async_transport: httpx transports, for tests of cases no server can produce.
    """

    conn_name_attr = "openrouter_conn_id"
    default_conn_name = "openrouter_default"
    conn_type = "openrouter"
    hook_name = "OpenRouter"

    def __init__(
        self,
        openrouter_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.openrouter_conn_id = openrouter_conn_id
        self._timeout = timeout
        self._max_retries = max_retries
        self._retry_policy = retry_policy
        self._transport = transport
        self._async_transport = async_transport
        self._settings: ClientSettings | None = None
        self._sync: SyncTransport | None = None
        # One AsyncClient per event loop: an httpx.AsyncClient must not cross loops.
        self._async: dict[asyncio.AbstractEventLoop, AsyncTransport] = {}

    # --- connection ------------------------------------------------------------------------------

    @property
    def settings(self) -> ClientSettings:
        """The connection, resolved once per hook (sync lookup)."""
        if self._settings is None:
            try:
                conn: Connection | None = self.get_connection(self.openrouter_conn_id)
            except AirflowNotFoundException:
                conn = None
            settings = self._settings_from(conn, conn.extra_dejson if conn else {})
            from airflow.sdk.log import mask_secret

            mask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    async def asettings(self) -> ClientSettings:
        """The connection, resolved once per hook without blocking the event loop."""
        if self._settings is None:
            conn: Connection | None
            try:
                conn, extra = await get_connection_async(self, self.openrouter_conn_id)
            except AirflowNotFoundException:
                conn, extra = None, {}
            settings = self._settings_from(conn, extra)
            await mask_secret_async(settings.api_key)
            self._settings = settings
        return self._settings

    def get_conn(self) -> ClientSettings:
        return self.settings

    @property
    def default_model(self) -> str | None:
        return self.settings.default_model

    def _settings_from(self, conn: Connection | None, extra: Mapping[str, Any]) -> ClientSettings:
        conn_id = self.openrouter_conn_id
        values = {
            name: _extra(extra, name, kind, default, conn_id) for name, (kind, default) in _EXTRAS.items()
        }
        if self._timeout is not None:
            values["timeout"] = self._timeout
        if self._max_retries is not None:
            values["max_retries"] = self._max_retries
        return ClientSettings(
            conn_id=conn_id, base_url=_base_url(conn), api_key=self._api_key(conn), **values
        )

    def _api_key(self, conn: Connection | None) -> str:
        conn_id = self.openrouter_conn_id
        if conn is not None and conn.password:
            self.log.info("Using the API key of connection %r.", conn_id)
            return conn.password
        if key := os.environ.get(API_KEY_ENV_VAR):
            why = "has no API key" if conn is not None else "does not exist"
            self.log.info("Connection %r %s; using %s from the environment.", conn_id, why, API_KEY_ENV_VAR)
            return key
        raise OpenRouterAuthenticationError(
            f"No OpenRouter API key: set the password (API Key) of connection {conn_id!r}, "
            f"or the {API_KEY_ENV_VAR} environment variable.",
            status=None,
        )

    # --- transports ------------------------------------------------------------------------------

    def _policy(self, settings: ClientSettings) -> RetryPolicy:
        return self._retry_policy or RetryPolicy(max_retries=settings.max_retries)

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
            new = await AsyncTransport.create(settings, self._policy(settings), self._async_transport)
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
        stream: type[ChatStream | AsyncChatStream] | None = None,
    ) -> Call[Any]:
        if model is None and settings.default_model is None:
            self.log.info(
                "No model given and connection %r has no default_model: OpenRouter uses the account's "
                "default model.",
                settings.conn_id,
            )
        body = chat_body(
            messages, model or settings.default_model, {**params, "stream": True} if stream else params
        )
        call: Call[Any] = Call(
            "POST", "/chat/completions", parse=self._parse_completion, body=body, model=body.get("model")
        )
        if stream is not None:
            call.stream = True
            call.parse = functools.partial(stream, settings=settings, call=call)
        return call

    def _parse_completion(self, data: Any) -> ChatCompletion:
        completion = ChatCompletion.model_validate(data)
        if not completion.choices:
            raise in_band_error(
                {"code": 502, "message": "the response has no choices"},
                self.openrouter_conn_id,
                completion.id or None,
            )
        choice = completion.choices[0]
        if choice.error is not None or choice.finish_reason == "error":
            error = choice.error.model_dump() if choice.error else {"message": "finish_reason is 'error'"}
            # Output generated before the error was billed: a retry would pay for it again.
            billed = bool(completion.usage and completion.usage.completion_tokens)
            raise in_band_error(error, self.openrouter_conn_id, completion.id or None, billed=billed)
        return completion

    def chat_completion(
        self, *, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> ChatCompletion:
        """``POST /chat/completions``. ``params`` are body fields (``seed``, ``max_tokens``,
        ``response_format``, ``tools``, ``provider``, ``models``, ``reasoning``, ``plugins``, ...);
        ``extra_body`` is merged into the body as is, for fields newer than this provider."""
        transport = self._sync_transport()
        return transport.request(self._chat_call(transport.settings, messages, model, params))

    async def achat_completion(
        self, *, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> ChatCompletion:
        transport = await self._async_transport_for_loop()
        return await transport.request(self._chat_call(transport.settings, messages, model, params))

    def stream_chat_completion(
        self, *, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> ChatStream:
        """Stream a chat completion (SSE). Iterate the result for chunks; ``.completion()`` afterwards
        gives the same :class:`ChatCompletion` as :meth:`chat_completion`. Retried only before the
        first byte; an error mid-stream raises the typed error. ``close()`` aborts it."""
        transport = self._sync_transport()
        return transport.request(self._chat_call(transport.settings, messages, model, params, ChatStream))

    async def astream_chat_completion(
        self, *, messages: Sequence[Mapping[str, Any]], model: str | None = None, **params: Any
    ) -> AsyncChatStream:
        """Async twin of :meth:`stream_chat_completion`; use it as ``async with`` (or ``aclose()`` it)
        when you may stop iterating early, so the connection goes back to the pool."""
        transport = await self._async_transport_for_loop()
        call = self._chat_call(transport.settings, messages, model, params, AsyncChatStream)
        return await transport.request(call)

    # --- batches ---------------------------------------------------------------------------------

    def _create_batch_call(
        self,
        model: str,
        requests: Sequence[Mapping[str, Any]],
        endpoint: str,
        provider: Mapping[str, Any] | None,
        callback_url: str | None,
        completion_window: str | None,
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

    def create_batch(
        self,
        *,
        model: str,
        requests: Sequence[Mapping[str, Any]],
        endpoint: str = CHAT_ENDPOINT,
        provider: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        completion_window: str | None = None,
    ) -> Batch:
        """``POST /batches``: ``requests`` are ``{"custom_id": ..., "body": {...}}``. Not idempotent, so
        retried only on 429 and on failures before the request was sent."""
        transport = self._sync_transport()
        return transport.request(
            self._create_batch_call(model, requests, endpoint, provider, callback_url, completion_window)
        )

    async def acreate_batch(
        self,
        *,
        model: str,
        requests: Sequence[Mapping[str, Any]],
        endpoint: str = CHAT_ENDPOINT,
        provider: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        completion_window: str | None = None,
    ) -> Batch:
        transport = await self._async_transport_for_loop()
        return await transport.request(
            self._create_batch_call(model, requests, endpoint, provider, callback_url, completion_window)
        )

    @staticmethod
    def _get_batch_call(batch_id: str) -> Call[Batch]:
        return Call("GET", f"/batches/{batch_id}", parse=Batch.model_validate)

    def get_batch(self, batch_id: str) -> Batch:
        return self._sync_transport().request(self._get_batch_call(batch_id))

    async def aget_batch(self, batch_id: str) -> Batch:
        transport = await self._async_transport_for_loop()
        return await transport.request(self._get_batch_call(batch_id))

    @staticmethod
    def _list_batches_call(
        limit: int | None,
        after: str | None,
        status: str | Iterable[str] | None,
        created_after: str | int | None,
        created_before: str | int | None,
    ) -> Call[BatchList]:
        params: list[tuple[str, str]] = [
            (k, str(v))
            for k, v in (
                ("limit", limit),
                ("after", after),
                ("created_after", created_after),
                ("created_before", created_before),
            )
            if v is not None
        ]
        statuses = [status] if isinstance(status, str) else list(status or ())
        params += [("status", s) for s in statuses]
        return Call("GET", "/batches", parse=BatchList.model_validate, params=params)

    def list_batches(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        status: str | Iterable[str] | None = None,
        created_after: str | int | None = None,
        created_before: str | int | None = None,
    ) -> BatchList:
        """One page of the workspace's batches, newest first (next page: ``after=page.last_id``)."""
        call = self._list_batches_call(limit, after, status, created_after, created_before)
        return self._sync_transport().request(call)

    async def alist_batches(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        status: str | Iterable[str] | None = None,
        created_after: str | int | None = None,
        created_before: str | int | None = None,
    ) -> BatchList:
        call = self._list_batches_call(limit, after, status, created_after, created_before)
        transport = await self._async_transport_for_loop()
        return await transport.request(call)

    @staticmethod
    def _delete_batch_call(batch_id: str) -> Call[BatchDeleted]:
        return Call("DELETE", f"/batches/{batch_id}", parse=BatchDeleted.model_validate)

    def delete_batch(self, batch_id: str) -> BatchDeleted:
        """Delete a finished batch and its stored results (409 while it runs; this is not a cancel)."""
        return self._sync_transport().request(self._delete_batch_call(batch_id))

    async def adelete_batch(self, batch_id: str) -> BatchDeleted:
        transport = await self._async_transport_for_loop()
        return await transport.request(self._delete_batch_call(batch_id))

    @staticmethod
    def _results_page_call(batch_id: str, cursor: str | None, page_size: int) -> Call[BatchResultsPage]:
        params = drop_none({"limit": page_size, "cursor": cursor})
        return Call(
            "GET", f"/batches/{batch_id}/results", parse=BatchResultsPage.model_validate, params=params
        )

    def iter_batch_results(
        self, batch_id: str, *, page_size: int = RESULTS_PAGE_SIZE
    ) -> Iterator[BatchResult]:
        """Every result row of a finished batch, page by page (memory stays flat). Uses
        ``GET /batches/{id}/results`` and falls back to the inline ``results`` of ``GET /batches/{id}``
        where the paginated endpoint is not served."""
        transport = self._sync_transport()
        cursor: str | None = None
        while True:
            try:
                page = transport.request(self._results_page_call(batch_id, cursor, page_size))
            except OpenRouterNotFoundError:
                if cursor is not None:
                    raise
                yield from self._inline_results(self.get_batch(batch_id))
                return
            yield from page.data
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    async def aiter_batch_results(
        self, batch_id: str, *, page_size: int = RESULTS_PAGE_SIZE
    ) -> AsyncIterator[BatchResult]:
        transport = await self._async_transport_for_loop()
        cursor: str | None = None
        while True:
            try:
                page = await transport.request(self._results_page_call(batch_id, cursor, page_size))
            except OpenRouterNotFoundError:
                if cursor is not None:
                    raise
                for row in self._inline_results(await self.aget_batch(batch_id)):
                    yield row
                return
            for row in page.data:
                yield row
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    def _inline_results(self, batch: Batch) -> list[BatchResult]:
        self.log.info(
            "GET /batches/%s/results is not served here; reading the batch's inline results.", batch.id
        )
        return batch.results or []

    # --- account, catalogue, generations ---------------------------------------------------------

    @staticmethod
    def _generation_call(generation_id: str) -> Call[Generation]:
        return Call(
            "GET",
            "/generation",
            parse=lambda d: Generation.model_validate(d["data"]),
            params={"id": generation_id},
        )

    def get_generation(self, generation_id: str) -> Generation:
        """Stats of one generation (tokens, billed cost, latency). May 404 for a few seconds after it ends."""
        return self._sync_transport().request(self._generation_call(generation_id))

    async def aget_generation(self, generation_id: str) -> Generation:
        transport = await self._async_transport_for_loop()
        return await transport.request(self._generation_call(generation_id))

    @staticmethod
    def _models_call() -> Call[list[Model]]:
        return Call("GET", "/models", parse=lambda d: [Model.model_validate(m) for m in d["data"]])

    def list_models(self) -> list[Model]:
        return self._sync_transport().request(self._models_call())

    async def alist_models(self) -> list[Model]:
        transport = await self._async_transport_for_loop()
        return await transport.request(self._models_call())

    @staticmethod
    def _key_call() -> Call[KeyInfo]:
        return Call("GET", "/key", parse=lambda d: KeyInfo.model_validate(d["data"]))

    def get_key(self) -> KeyInfo:
        """The API key's label, limit and usage (``GET /key``; free)."""
        return self._sync_transport().request(self._key_call())

    async def aget_key(self) -> KeyInfo:
        transport = await self._async_transport_for_loop()
        return await transport.request(self._key_call())

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the free ``GET /key``; used by the UI's Test button."""
        try:
            key = self.get_key()
        except OpenRouterError as exc:
            return False, str(exc)
        remaining = "no limit" if key.limit_remaining is None else f"${key.limit_remaining:,.2f} remaining"
        return (
            True,
            f"Connected to {self.settings.base_url} with key {key.label or '(unlabelled)'}: {remaining}.",
        )


def chat_body(
    messages: Sequence[Mapping[str, Any]], model: str | None, params: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body of a chat completion: ``None`` values dropped, ``extra_body`` merged last."""
    params = dict(params)
    extra_body = params.pop("extra_body", None) or {}
    return {**drop_none({"model": model, **params}), "messages": list(messages), **extra_body}


def _extra(extra: Mapping[str, Any], name: str, kind: type, default: Any, conn_id: str) -> Any:
    value = extra.get(name, extra.get(f"extra__openrouter__{name}"))
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise OpenRouterError(
            f"Connection {conn_id!r}: extra field {name!r} must be a {kind.__name__}, got {value!r}."
        ) from None


def _base_url(conn: Connection | None) -> str:
    """The API base URL: the connection's host as typed in the UI (a full URL), or built from the parts a
    URI-style connection (``openrouter://:KEY@host:port/api%2Fv1``) splits it into."""
    if conn is None or not conn.host:
        return DEFAULT_BASE_URL
    if "://" in conn.host:
        return conn.host.rstrip("/")
    local = conn.host in ("localhost", "127.0.0.1", "::1")
    url = f"{'http' if local else 'https'}://{conn.host}"
    if conn.port:
        url += f":{conn.port}"
    if conn.schema:
        url += "/" + conn.schema.strip("/")
    return url
