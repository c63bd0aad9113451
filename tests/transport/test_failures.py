"""Each way a request can fail on the wire means the same to the sync (httpx) and the async (aiohttp)
client: sent or not, retried or not, the same words. Against a scripted server, over real sockets: the
emulator answers properly, these servers do not."""

from __future__ import annotations

import socket
import time

import pytest

from airflow_openrouter.exceptions import (
    OpenRouterConnectionError,
    OpenRouterServerError,
    OpenRouterTimeoutError,
)
from tests.transport.conftest import Exchange, call_hook

MODES = ["sync", "async"]
RETRIES = 2


def cut_mid_body(exchange: Exchange) -> None:
    exchange.send_response(200)
    exchange.send_header("Content-Type", "application/json")
    exchange.send_header("Content-Length", "1000")
    exchange.end_headers()
    exchange.send_raw(b'{"id": "gen-cut", "choices": [')


def not_http(exchange: Exchange) -> None:
    exchange.send_raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


def slow_answer(exchange: Exchange) -> None:
    if not exchange.server.stopped.wait(1.5):
        exchange.send_json({"data": {"label": "late"}})


FAULTS = {
    "closed-without-answering": Exchange.close_without_answering,
    "cut-mid-body": cut_mid_body,
    "not-http": not_http,
    "slower-than-the-timeout": slow_answer,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_chat_completion_sent_without_an_answer_is_never_sent_again(server, server_hook, fault, mode):
    server.script = FAULTS[fault]
    hook = server_hook(timeout=0.3, max_retries=RETRIES)

    with pytest.raises(OpenRouterConnectionError) as info:
        call_hook(hook, "chat", mode)

    assert server.requests == [("POST", "/api/v1/chat/completions")], "sent once, whatever the client"
    assert info.value.request_sent
    assert "may have run and been billed" in str(info.value)
    assert isinstance(info.value, OpenRouterTimeoutError) == (fault == "slower-than-the-timeout")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_read_sent_without_an_answer_is_retried_by_the_policy_alone(server, server_hook, fault, mode):
    """aiohttp would resend an idempotent request over a dropped connection by itself: it must not, or
    a read would be sent more often than the connection's max_retries says (and the log would not say)."""
    server.script = FAULTS[fault]
    hook = server_hook(timeout=0.3, max_retries=RETRIES)

    with pytest.raises(OpenRouterConnectionError) as info:
        call_hook(hook, "key", mode)

    assert server.requests == [("GET", "/api/v1/key")] * (1 + RETRIES)
    assert "billed" not in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_connection_is_retried_even_for_a_chat_completion(server_hook, mode):
    """Nothing was sent, so nothing can have been billed: even the billed call is tried again."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    waits: list[float] = []
    hook = server_hook(waits=waits, base_url=f"http://127.0.0.1:{port}/api/v1", max_retries=RETRIES)

    with pytest.raises(OpenRouterConnectionError) as info:
        call_hook(hook, "chat", mode)

    assert not info.value.request_sent
    assert len(waits) == RETRIES
    assert "ConnectError" in str(info.value) and "billed" not in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_a_redirect_is_an_answer_neither_client_follows(server, server_hook, mode):
    def redirect(exchange: Exchange) -> None:
        exchange.send_response(307)
        exchange.send_header("Location", "/elsewhere/chat/completions")
        exchange.send_header("Content-Length", "0")
        exchange.end_headers()

    server.script = redirect
    hook = server_hook(max_retries=0)

    with pytest.raises(OpenRouterServerError, match="answered 307 but not with JSON"):
        call_hook(hook, "chat", mode)
    assert server.requests == [("POST", "/api/v1/chat/completions")]


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_is_split_into_events_at_line_ends_only(server, server_hook, mode):
    """JSON may carry U+2028, U+2029 and U+0085 unescaped (JavaScript's JSON.stringify does), and
    httpx's iter_lines cuts lines at them. And a chunk may end inside a multi-byte character."""
    text = "one\u2028two\u2029three\x85four — ünïcödé"
    delta = '{"id":"gen-1","choices":[{"index":0,"delta":{"content":"' + text + '"}}]}'
    event = f"data: {delta}\r\n\r\n".encode()
    body = event + b'data: {"id":"gen-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    body += b"data: [DONE]\n\n"

    def in_odd_pieces(exchange: Exchange) -> None:
        exchange.send_response(200)
        exchange.send_header("Content-Type", "text/event-stream")
        exchange.send_header("Connection", "close")
        exchange.end_headers()
        for start in range(0, len(body), 7):  # 7 bytes at a time: splits "—" and "ü" across writes
            exchange.wfile.write(body[start : start + 7])
            exchange.wfile.flush()
            time.sleep(0.001)
        exchange.close_connection = True

    server.script = in_odd_pieces
    chunks = call_hook(server_hook(), "stream", mode)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
