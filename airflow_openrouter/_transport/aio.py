"""The async client's HTTP layer: one aiohttp session, and aiohttp's failures said in httpx's terms.

Why aiohttp and not ``httpx.AsyncClient``: for the concurrent engine's small requests, httpx and httpcore
cost several times the CPU of aiohttp per request (a pure-Python HTTP parser, anyio's streams, a
connection pool whose bookkeeping grows with the connections, cookies and URL merging per request), so
the engine would be CPU-bound long before the API is (``make bench``, concurrent rows). The sync client
stays httpx. What the two share is above them: the :class:`Call`, the :class:`RetryPolicy`, the error
mapper, the :class:`Answer`.

* The per-attempt deadline (``request_deadline``) is aiohttp's ``total`` timeout, which covers
  connecting, sending and reading the answer, or the whole stream; ``sock_read`` is the read timeout (the
  longest silence between two reads), ``sock_connect`` the connect timeout.
* Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY``, ...), read once for the base URL when
  the session is made, as for the sync client: aiohttp's own ``trust_env`` would read them, and
  ``~/.netrc``, in a thread for every request.
* :func:`transport_error` says an aiohttp failure as the httpx exception that means the same, so that
  one mapper (:func:`~airflow_openrouter._transport.errors.error_from_transport`) decides for both clients
  whether the request was sent: a failure to connect was not (anything may be sent again); a dropped
  connection, a read timeout or a broken answer was (a billed call is not sent again).
* aiohttp's own silent resend of an idempotent request over a dropped keep-alive connection is turned
  off: the RetryPolicy is the one that retries, and says so in the log.
* No cookies are kept (the API sets none that matter), which saves their bookkeeping per answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from yarl import URL

from airflow_openrouter._transport.calls import Call
from airflow_openrouter._transport.settings import ClientSettings
from airflow_openrouter._transport.wire import Answer, LineSplitter, Urls, environment_proxy

__all__ = [
    "MAX_CONNECTIONS",
    "AiohttpClient",
    "AiohttpStream",
    "Proxy",
    "environment_proxy",
    "transport_error",
]

#: Connections open at once, at most: more than the concurrent engine's largest ``max_concurrency``.
MAX_CONNECTIONS = 1024
# Seconds an idle connection is kept, as httpx does: servers close idle connections after a while, and
# reusing one just as it closes fails a request that was never processed but cannot be told apart.
KEEPALIVE_S = 5.0

Proxy = tuple[URL | None, aiohttp.BasicAuth | None]
_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)


def proxy_for(base_url: str) -> Proxy:
    """The proxy for ``base_url`` (:func:`environment_proxy`), its credentials apart, as aiohttp takes
    them. Blocking on some systems (the proxy settings of macOS): call it off the event loop."""
    url = environment_proxy(base_url)
    if url is None:
        return None, None
    proxy = URL(url)
    if proxy.user is None:
        return proxy, None
    return proxy.with_user(None), aiohttp.BasicAuth(proxy.user, proxy.password or "")


def transport_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception meaning what ``exc``, raised by aiohttp while sending or reading, means."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text)
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientHttpProxyError)):
        # Refused, unreachable, DNS, TLS, or the proxy would not open a tunnel: nothing was sent.
        return httpx.ConnectError(text)
    if isinstance(exc, asyncio.TimeoutError):
        # The read timeout, or the total one (the request deadline): the request was sent.
        return httpx.ReadTimeout(text)
    if isinstance(exc, (aiohttp.NonHttpUrlClientError, aiohttp.InvalidURL)):
        return httpx.UnsupportedProtocol(text)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(text)  # closed before answering, or not HTTP
    if isinstance(exc, ValueError):
        return httpx.LocalProtocolError(text)  # aiohttp refused to write a header (a newline in it)
    return httpx.ReadError(text)  # the connection broke while sending or reading


class AiohttpClient:
    """One ``aiohttp.ClientSession`` (its own pool of connections) for one event loop.

    Create it on its loop, with the CA bundle and the proxy already read (they block).
    """

    def __init__(self, settings: ClientSettings, ssl_context: ssl.SSLContext, proxy: Proxy) -> None:
        self._urls = Urls(settings.base_url, URL)
        self._proxy, self._proxy_auth = proxy
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=ssl_context, limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S
            ),
            headers=settings.headers(),
            timeout=aiohttp.ClientTimeout(
                total=settings.deadline,
                connect=settings.timeout,  # waiting for a free connection, then connecting
                sock_connect=settings.connect_timeout,
                sock_read=settings.timeout,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        # Off since aiohttp 3.11 only through this attribute (tests/transport/test_failures.py notices if
        # a later aiohttp resends again).
        if hasattr(self.session, "_retry_connection"):
            self.session._retry_connection = False

    async def _open(self, call: Call[Any]) -> aiohttp.ClientResponse:
        try:
            return await self.session.request(
                call.method,
                self._urls(call.path),
                params=call.params,
                data=call.content,
                headers=call.headers,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
                allow_redirects=False,  # as httpx: a redirect is an answer, not followed
            )
        except (*_FAILURES, ValueError) as exc:
            raise transport_error(exc) from None

    async def send(self, call: Call[Any]) -> Answer:
        """Send ``call`` and read its whole answer; raises an ``httpx.TransportError`` when that fails."""
        return await _read(await self._open(call))

    async def open_stream(self, call: Call[Any]) -> AiohttpStream | Answer:
        """Send ``call`` and return its stream once the headers are in; an error status is read whole
        and returned as an :class:`Answer`."""
        response = await self._open(call)
        return AiohttpStream(response) if response.status < 400 else await _read(response)

    async def aclose(self) -> None:
        await self.session.close()


async def _read(response: aiohttp.ClientResponse) -> Answer:
    try:
        content = await response.read()
    except _FAILURES as exc:
        raise transport_error(exc) from None
    finally:
        response.release()
    return Answer(response.status, response.headers, content)


class AiohttpStream:
    """An answer being streamed, with what the SSE reader (:class:`AsyncChatStream`) uses of an
    ``httpx.Response``: ``status_code``, ``aiter_lines()`` (failures as httpx exceptions), ``aclose()``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = response.headers

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The lines of the body, without their ends (:class:`LineSplitter`)."""
        splitter = LineSplitter()
        chunks = self._response.content.iter_any()
        while True:
            try:
                chunk = await anext(chunks, None)
            except _FAILURES as exc:
                raise transport_error(exc) from None
            if chunk is None:
                break
            for line in splitter.feed(chunk):
                yield line
        for line in splitter.close():
            yield line

    async def aclose(self) -> None:
        """Drop the connection, unless the whole body was read (then it went back to the pool): the
        server stops generating, and billing, on providers that support cancellation."""
        self._response.close()
