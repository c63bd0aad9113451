"""SSE streaming of chat completions, and the stream faults."""

from __future__ import annotations

import time

import httpx

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import MODEL, sse_events, user

BODY = {"model": MODEL, "messages": user("Summarize the migration plan for the warehouse"), "stream": True}


def _stream(client: httpx.Client, body: dict = BODY) -> tuple[httpx.Response, list[str], list]:
    with client.stream("POST", "/chat/completions", json=body) as response:
        comments, events = sse_events(response)
    return response, comments, events


def test_stream_sends_comments_chunks_usage_then_done(client: httpx.Client) -> None:
    response, comments, events = _stream(client)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert comments and all(c == ": OPENROUTER PROCESSING" for c in comments)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"] == response.headers["X-Generation-Id"]
        for c in chunks
    )
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "stop" and finish["native_finish_reason"] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert sum("usage" in c for c in chunks) == 1


def test_streamed_content_equals_the_non_streamed_content(client: httpx.Client) -> None:
    _, _, events = _stream(client)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"])
    plain = client.post("/chat/completions", json={**BODY, "stream": False}).json()
    assert streamed == plain["choices"][0]["message"]["content"]


def test_streamed_generation_is_recorded_as_streamed(client: httpx.Client) -> None:
    response, _, _ = _stream(client)
    data = client.get("/generation", params={"id": response.headers["X-Generation-Id"]}).json()["data"]
    assert data["streamed"] is True


def test_stream_with_tools_sends_a_tool_call_delta(client: httpx.Client) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    _, _, events = _stream(client, {**BODY, "tools": [tool], "tool_choice": "required"})
    calls = [c for c in events[:-1] if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"


def test_cut_stream_ends_after_some_tokens_without_done(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.cut_stream_next(after_tokens=3)
    _, _, events = _stream(client)
    assert "[DONE]" not in events
    content_chunks = [c for c in events[1:] if c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) == 3
    assert all(c["choices"][0]["finish_reason"] is None for c in events)
    assert _stream(client)[2][-1] == "[DONE]"  # consumed: the next stream is whole


def test_stream_error_sends_an_error_chunk_after_some_tokens(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.stream_error_next(after_tokens=2, code=502)
    response, _, events = _stream(client)
    assert response.status_code == 200 and "[DONE]" not in events
    last = events[-1]
    assert last["error"]["code"] == 502 and last["error"]["metadata"]["error_type"] == "provider_unavailable"
    assert last["choices"][0]["finish_reason"] == "error"
    assert len([c for c in events[:-1] if c["choices"][0]["delta"].get("content")]) == 2


def test_stream_faults_are_not_taken_by_non_streaming_requests(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.cut_stream_next()
    assert client.post("/chat/completions", json={**BODY, "stream": False}).status_code == 200
    assert "[DONE]" not in _stream(client)[2]


def test_token_delay_spaces_the_chunks() -> None:
    with (
        OpenRouterEmulator(token_delay_ms=20) as emu,
        httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}) as client,
    ):
        started = time.monotonic()
        _, _, events = _stream(client, {**BODY, "max_tokens": 8})
        # A lower bound only: n chunks cannot arrive faster than (n - 1) delays.
        assert time.monotonic() - started >= (len(events) - 2) * 0.02
