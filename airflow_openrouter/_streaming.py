"""Server-sent events of a streamed chat completion, and their assembly into one completion.

Decoding (:class:`SSEDecoder`) and assembly (:class:`StreamAccumulator`) are shared by the sync and the
async stream; each stream class only drives the loop over the HTTP response's lines. The transport opens
a stream (``SyncTransport.stream``); reading it stays bounded by the attempt's ``request_deadline``, which
covers the whole stream, first byte to ``[DONE]``, while the read ``timeout`` is the longest silence
between two chunks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from airflow_openrouter._transport.errors import error_from_transport, in_band_error
from airflow_openrouter._transport.wire import LineSplitter
from airflow_openrouter.exceptions import OpenRouterConnectionError, OpenRouterServerError
from airflow_openrouter.types import ChatCompletion, ChatCompletionChunk, Choice, Message, ToolCall, Usage

if TYPE_CHECKING:
    from airflow_openrouter._transport.calls import Call
    from airflow_openrouter._transport.settings import ClientSettings
    from airflow_openrouter._transport.sockets import Deadline

__all__ = ["AsyncChatStream", "ChatStream"]

DONE = object()


class SSEDecoder:
    """Turns response lines into chunk payloads.

    OpenRouter sends ``: OPENROUTER PROCESSING`` comment lines to keep the connection alive (skipped),
    one ``data:`` line per event, and ``data: [DONE]`` at the end (returned as :data:`DONE`).
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Any:
        """Feed one line; returns a decoded payload, :data:`DONE`, or ``None`` while an event is incomplete."""
        if line.startswith(":"):
            return None
        if line == "":
            return self._flush()
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
            # OpenRouter puts each event on a single data line, so decode without waiting for the blank
            # line: a stream cut right after its last event still yields that event.
            return self._flush()
        return None

    def _flush(self) -> Any:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        if data == "[DONE]":
            return DONE
        return json.loads(data)


class StreamAccumulator:
    """Collects chunks into the :class:`ChatCompletion` a non-streaming call would have returned."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.first: ChatCompletionChunk | None = None
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.native_finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False

    def add(self, payload: dict[str, Any]) -> ChatCompletionChunk:
        """Record one chunk; an in-band error raises the typed error (nothing was retried)."""
        chunk = ChatCompletionChunk.model_validate(payload)
        self.first = self.first or chunk
        if chunk.error is not None:
            # Tokens streamed before the error were generated and billed: a retry would pay again.
            billed = bool(self.content or self.tool_calls)
            raise in_band_error(chunk.error.model_dump(), self.conn_id, chunk.id or None, billed=billed)
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                self.content.append(delta.content)
            if delta.reasoning:
                self.reasoning.append(delta.reasoning)
            for part in delta.tool_calls or ():
                self._merge_tool_call(part)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
                self.native_finish_reason = choice.native_finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        return chunk

    def _merge_tool_call(self, part: dict[str, Any]) -> None:
        # Tool calls arrive in pieces keyed by index: the first has the id and name, later ones
        # append to the arguments string.
        call = self.tool_calls.setdefault(part.get("index", 0), {"id": None, "name": None, "arguments": ""})
        function = part.get("function") or {}
        call["id"] = part.get("id") or call["id"]
        call["name"] = function.get("name") or call["name"]
        call["arguments"] += function.get("arguments") or ""

    def completion(self) -> ChatCompletion:
        first = self.first or ChatCompletionChunk()
        tool_calls = [
            ToolCall.model_validate(
                {"id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            )
            for _, c in sorted(self.tool_calls.items())
        ]
        message = Message(
            content="".join(self.content) if self.content or not tool_calls else None,
            reasoning="".join(self.reasoning) or None,
            tool_calls=tool_calls or None,
        )
        choice = Choice(
            message=message, finish_reason=self.finish_reason, native_finish_reason=self.native_finish_reason
        )
        return ChatCompletion(
            id=first.id,
            created=first.created,
            model=first.model,
            provider=first.provider,
            choices=[choice],
            usage=self.usage,
        )


class _BaseStream:
    def __init__(
        self,
        response: Any,  # httpx.Response (sync) or _transport.aio.AiohttpStream (async)
        settings: ClientSettings,
        call: Call[Any],
        deadline: Deadline,
    ) -> None:
        self._response = response
        self._settings = settings
        self._call = call
        self._deadline = deadline
        self._accumulator = StreamAccumulator(settings.conn_id)
        self._decoder = SSEDecoder()
        self._closed = threading.Event()
        self._started = time.perf_counter()

    def completion(self) -> ChatCompletion:
        """The completion assembled from every chunk seen so far (the whole answer once iterated)."""
        return self._accumulator.completion()

    @property
    def generation_id(self) -> str | None:
        first = self._accumulator.first
        return first.id if first else None

    def _on_line(self, line: str) -> ChatCompletionChunk | None:
        try:
            payload = self._decoder.feed(line)
            if payload is None:
                return None
            if payload is DONE:
                self._accumulator.done = True
                self._call.log_answer(self._response.status_code, self._started, self.completion())
                return None
            return self._accumulator.add(payload)
        except ValueError:  # not JSON, or not a chunk (pydantic's ValidationError is a ValueError)
            raise OpenRouterServerError(
                f"The stream from {self._settings.base_url} sent an event that is not a chat chunk "
                f"(generation {self.generation_id or 'unknown'}).",
                generation_id=self.generation_id,
            ) from None

    def _on_end(self) -> None:
        if self._accumulator.done:
            return
        if self._closed.is_set():
            raise OpenRouterConnectionError("The stream was closed by the client; the answer is incomplete.")
        raise OpenRouterConnectionError(
            f"The stream from {self._settings.base_url} ended before [DONE] "
            f"(generation {self.generation_id or 'unknown'}); the answer is incomplete."
        )

    def _on_transport_error(self, exc: httpx.TransportError) -> Exception:
        if self._closed.is_set():
            return OpenRouterConnectionError("The stream was closed by the client.")
        return error_from_transport(exc, self._call, self._settings, self._deadline)


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """The lines of a streamed body, split as the async client splits them (:class:`LineSplitter`),
    not as httpx's ``iter_lines`` would (at any character ``str.splitlines`` takes for a line end)."""
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.close()


class ChatStream(_BaseStream):
    """A streamed chat completion: iterate for :class:`ChatCompletionChunk`; ``close()`` aborts it.

    ``close()`` may be called from another thread (an operator's ``on_kill``); the HTTP connection is
    dropped, which stops generation (and billing) on providers that support cancellation.
    """

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        lines = _lines(self._response.iter_bytes())
        try:
            while True:
                with self._deadline:  # the deadline bounds every read of the stream, not only its start
                    line = next(lines, None)
                if line is None:
                    break
                chunk = self._on_line(line)
                if chunk is not None:
                    yield chunk
                if self._accumulator.done:
                    break
            self._on_end()
        except httpx.TransportError as exc:
            raise self._on_transport_error(exc) from None
        except (httpx.StreamClosed, httpx.StreamConsumed, RuntimeError) as exc:
            if not self._closed.is_set():
                raise
            raise OpenRouterConnectionError("The stream was closed by the client.") from exc
        finally:
            self._response.close()

    def close(self) -> None:
        self._closed.set()
        self._response.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncChatStream(_BaseStream):
    """Async twin of :class:`ChatStream`."""

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        lines = self._response.aiter_lines()
        try:
            while True:
                with self._deadline:
                    line = await anext(lines, None)
                if line is None:
                    break
                chunk = self._on_line(line)
                if chunk is not None:
                    yield chunk
                if self._accumulator.done:
                    break
            self._on_end()
        except httpx.TransportError as exc:
            raise self._on_transport_error(exc) from None
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        self._closed.set()
        await self._response.aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
