"""A scripted HTTP server on loopback, for faults the emulator cannot produce (a server dripping bytes,
pages that loop, a server that closes every connection), and the hook pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_openrouter.hooks.openrouter import OpenRouterHook

MESSAGES = [{"role": "user", "content": "Hi"}]


class Exchange(BaseHTTPRequestHandler):
    """One request; the test's ``script`` writes the answer (raw bytes allowed, through ``wfile``)."""

    protocol_version = "HTTP/1.1"
    server: ScriptedHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self.server.script(self)

    do_GET = do_POST = do_DELETE = _handle

    def send_json(self, payload: Any, status: int = 200, close: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def close_without_answering(self) -> None:
        """Read the request, then close the connection without a byte of answer."""
        self.close_connection = True

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as the whole answer, whatever it is, and close the connection."""
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    def drip(self, data: bytes, every: float) -> None:
        """Write ``data`` one byte at a time, ``every`` seconds apart, until done or stopped."""
        for byte in data:
            if self.server.stopped.wait(every):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()


class ScriptedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Exchange)
        self.script: Callable[[Exchange], None] = lambda exchange: exchange.send_json({})
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self.stopped = threading.Event()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1"


@pytest.fixture
def server():
    httpd = ScriptedHTTPServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.stopped.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server_hook(server: ScriptedHTTPServer, monkeypatch: pytest.MonkeyPatch):
    """Make a hook on the scripted server: ``server_hook(timeout=..., request_deadline=..., ...)`` (the
    connection's extras). Its retries do not wait; ``waits=[...]`` records each wait they would have
    made; ``base_url=`` points it elsewhere."""

    def make(
        *, waits: list[float] | None = None, base_url: str | None = None, **extra: Any
    ) -> OpenRouterHook:
        conn = {
            "conn_type": "openrouter",
            "host": base_url or server.base_url,
            "password": "sk-or-scripted",
            "extra": extra,
        }
        monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", json.dumps(conn))
        recorded = waits if waits is not None else []

        async def async_sleep(seconds: float) -> None:
            recorded.append(seconds)

        return OpenRouterHook(sleep=recorded.append, async_sleep=async_sleep)

    return make


def call_hook(hook: OpenRouterHook, what: str, mode: str):
    """Run one hook call the way ``mode`` says (sync or async) and return what it returned."""
    if mode == "sync":
        if what == "stream":
            return list(hook.stream_chat_completion(model="m", messages=MESSAGES))
        return hook.chat_completion(model="m", messages=MESSAGES) if what == "chat" else hook.get_key()

    async def run():
        async with hook:
            if what == "stream":
                stream = await hook.astream_chat_completion(model="m", messages=MESSAGES)
                async with stream:
                    return [chunk async for chunk in stream]
            if what == "chat":
                return await hook.achat_completion(model="m", messages=MESSAGES)
            return await hook.aget_key()

    return asyncio.run(run())
