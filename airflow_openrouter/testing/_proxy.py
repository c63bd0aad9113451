"""A worker process's front: serve the stateless routes here, hand everything else to the main process.

Stateless are chat completions, embeddings and the model lists: their answers depend only on the request
and on the shared cells (latency, clock, credits). Batches, generations, the key and credits live in the
main process, so a worker relays those requests to the main process's private socket unchanged (method,
path, query, headers, body) and relays the answer back as it comes, SSE included. While any HTTP or
chat fault is queued, a worker relays *every* request, so that faults are taken in order, exactly once,
by the main process. When the main process cuts an answer (``drop_connection_next``), the worker cuts
its own the same way; when the client goes away, the relayed request is cancelled too, so a stream is
billed for what it sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from ._errors import error_envelope
from ._routes import relative_route
from ._shared import SharedCells

Scope = dict[str, Any]
# Headers that describe one connection, not the message: never relayed.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade"})
_LOCAL_ROUTES = ("/chat/completions", "/embeddings", "/embeddings/models", "/models")


def served_locally(path: str) -> bool:
    route = relative_route(path)
    return route in _LOCAL_ROUTES or (route.startswith("/models/") and route.endswith("/endpoints"))


class ForwardingApp:
    def __init__(self, app: Any, upstream: str, cells: SharedCells) -> None:
        self._app = app
        self._upstream = upstream
        self._cells = cells
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (served_locally(scope["path"]) and not self._cells.faults_pending):
            await self._app(scope, receive, send)
        else:
            await self._relay(scope, receive, send)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # created inside the server's event loop
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            self._client = httpx.AsyncClient(base_url=self._upstream, timeout=None, limits=limits)
        return self._client

    async def _relay(self, scope: Scope, receive: Any, send: Any) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        client = self._http()
        path = scope["raw_path"].decode() if scope.get("raw_path") else scope["path"]
        query = scope.get("query_string", b"").decode()
        request = client.build_request(
            scope["method"], path + (f"?{query}" if query else ""), content=bytes(body)
        )
        # Exactly the client's headers (httpx's defaults would show up in the main process's journal).
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        if body or scope["method"] in ("POST", "PUT", "PATCH"):
            headers.append((b"content-length", str(len(body)).encode()))
        request.headers = httpx.Headers(headers)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _main_process_gone(send, exc)
            return
        relay = asyncio.ensure_future(_relay_answer(response, send))
        gone = asyncio.ensure_future(_client_gone(receive))
        try:
            await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, gone):
                task.cancel()
            await asyncio.gather(relay, gone, return_exceptions=True)
            await response.aclose()


async def _relay_answer(response: httpx.Response, send: Any) -> None:
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP - {b"content-length"}]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.HTTPError:
        return  # the main process cut its answer: return without completing ours, uvicorn cuts it too
    await send({"type": "http.response.body", "body": b""})


async def _client_gone(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _main_process_gone(send: Any, exc: Exception) -> None:
    message = f"The emulator's main process did not answer a worker ({type(exc).__name__})."
    body = json.dumps(error_envelope(502, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 502, "headers": headers})
    await send({"type": "http.response.body", "body": body})
