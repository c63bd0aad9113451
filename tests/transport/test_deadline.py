"""``request_deadline`` bounds every attempt, whatever the server drips; the sync client forgets the
connections a server closed. Against a scripted server: the emulator never drips."""

from __future__ import annotations

import time

import pytest

from airflow_openrouter.exceptions import OpenRouterConfigError, OpenRouterTimeoutError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from tests.transport.conftest import MESSAGES, Exchange, call_hook

DEADLINE = 1.0
# How much later than the deadline a call may end on a loaded machine. A drip below lasts for ever
# (or for minutes), so ending at all within this says the deadline cut it.
SLACK = 4.0


def drip_body(exchange: Exchange) -> None:
    exchange.send_response(200)
    exchange.send_header("Content-Type", "application/json")
    exchange.send_header("Content-Length", "100000")
    exchange.end_headers()
    exchange.drip(b'{"data": {"label": "' + b"x" * 99_000, every=0.1)


def drip_headers(exchange: Exchange) -> None:
    exchange.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    exchange.drip(b"X-Slow: " + b"a" * 10_000, every=0.1)


def drip_keep_alive_comments(exchange: Exchange) -> None:
    exchange.send_response(200)
    exchange.send_header("Content-Type", "text/event-stream")
    exchange.send_header("Connection", "close")
    exchange.end_headers()
    exchange.drip(b": OPENROUTER PROCESSING\n\n" * 10_000, every=0.02)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("script", "what"),
    [(drip_body, "key"), (drip_headers, "key"), (drip_body, "chat"), (drip_keep_alive_comments, "stream")],
    ids=["body-of-a-read", "headers-of-a-read", "body-of-a-chat-completion", "stream-of-comments"],
)
def test_a_server_dripping_bytes_is_cut_at_the_request_deadline(server, server_hook, script, what, mode):
    server.script = script
    hook = server_hook(timeout=0.5, request_deadline=DEADLINE, max_retries=0)

    started = time.monotonic()
    with pytest.raises(OpenRouterTimeoutError) as info:
        call_hook(hook, what, mode)
    elapsed = time.monotonic() - started

    assert elapsed < DEADLINE + SLACK, f"the call took {elapsed:.1f}s, its deadline is {DEADLINE}s"
    message = str(info.value)
    assert f"request deadline ({DEADLINE:g} s)" in message
    assert "Raise 'request_deadline' on connection 'openrouter_default'" in message
    assert ("the stream was still arriving" in message) == (what == "stream")


def test_each_retry_of_a_read_gets_its_own_deadline_and_the_chat_completion_none(server, server_hook):
    server.script = drip_body
    hook = server_hook(timeout=0.5, request_deadline=0.5, max_retries=2)

    with pytest.raises(OpenRouterTimeoutError):
        hook.get_key()
    assert server.requests == [("GET", "/api/v1/key")] * 3

    server.requests.clear()
    with pytest.raises(OpenRouterTimeoutError, match="may have run and been billed"):
        hook.chat_completion(model="m", messages=MESSAGES)
    assert server.requests == [("POST", "/api/v1/chat/completions")], "a billed call is not sent again"


def test_a_stream_that_keeps_talking_stays_alive_while_chunks_come_within_the_timeout(server, server_hook):
    """The read timeout of a stream is an idle timeout: 20 chunks 0.1 s apart pass a 0.5 s timeout."""

    def slow_chunks(exchange: Exchange) -> None:
        exchange.send_response(200)
        exchange.send_header("Content-Type", "text/event-stream")
        exchange.send_header("Connection", "close")
        exchange.end_headers()
        chunk = b'data: {"id":"gen-1","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        for _ in range(20):
            if exchange.server.stopped.wait(0.1):
                return
            exchange.wfile.write(chunk)
            exchange.wfile.flush()
        exchange.wfile.write(b"data: [DONE]\n\n")

    server.script = slow_chunks
    hook = server_hook(timeout=0.5, max_retries=0)
    chunks = list(hook.stream_chat_completion(model="m", messages=MESSAGES))
    assert "".join(c.choices[0].delta.content for c in chunks) == "a" * 20


def test_request_deadline_defaults_to_ten_times_the_timeout(server, server_hook):
    assert server_hook(timeout=3).settings.deadline == 30
    assert server_hook(timeout=3, request_deadline=7).settings.deadline == 7
    assert OpenRouterHook(request_deadline=2).settings.request_deadline == 2


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan"])
def test_a_bad_request_deadline_names_the_connection_and_the_field(server_hook, value):
    with pytest.raises(OpenRouterConfigError, match=r"'openrouter_default': extra field 'request_deadline'"):
        _ = server_hook(request_deadline=value).settings


def test_the_sync_client_forgets_the_connections_a_server_closed(server, server_hook):
    server.script = lambda exchange: exchange.send_json({"data": {"label": "k"}}, close=True)
    hook = server_hook()

    for _ in range(3000):
        hook.get_key()

    assert server.connections >= 3000, "every call had a connection of its own"
    assert len(hook._sync.connections) <= 1
