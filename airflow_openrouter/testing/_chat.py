"""Chat-completion response bodies: the non-streaming ChatResult, SSE chunks and generation stats."""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._content import Completion, generate, prompt_tokens
from ._errors import error_type_for
from ._generations import Caller, generation_record
from ._validation import ChatRequest

PROCESSING_COMMENT = ": OPENROUTER PROCESSING\n\n"
DONE_EVENT = "data: [DONE]\n\n"
_ID_ALPHABET = string.ascii_letters + string.digits
_TOKEN_PIECES = re.compile(r"\S+\s*|\s+")


def generation_id(created: int) -> str:
    # 20 random alphanumerics from one urandom read (secrets.choice per character cost 50 us a request).
    return f"gen-{created}-{''.join(_ID_ALPHABET[byte % 62] for byte in secrets.token_bytes(20))}"


@dataclass(frozen=True)
class ChatOutcome:
    """One generation: the request, its completion and what it cost."""

    id: str
    created: int
    request: ChatRequest
    completion: Completion
    prompt_tokens: int
    prompt_cost: float
    completion_cost: float
    served_by: str | None = None  # the provider, when not the model's sync one (a batch's assigned provider)

    @property
    def cost(self) -> float:
        return round(self.prompt_cost + self.completion_cost, 12)

    def cost_of_stream(self, pieces_sent: int) -> float:
        """What a stream cut after ``pieces_sent`` content chunks is billed: the prompt, and the share of
        the completion generated before the client went (providers stop generating on disconnect)."""
        total = len(self.content_pieces())
        share = min(1.0, pieces_sent / total) if total else 1.0
        return round(self.prompt_cost + self.completion_cost * share, 12)

    @property
    def completion_tokens(self) -> int:
        return self.completion.completion_tokens

    @property
    def provider(self) -> str:
        return self.served_by or self.request.model.provider

    def usage(self) -> dict[str, Any]:
        completion_tokens = self.completion.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "cost": self.cost,
            "is_byok": False,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "audio_tokens": 0,
                "video_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": None,
                "rejected_prediction_tokens": None,
            },
            "cost_details": {
                "upstream_inference_cost": None,
                "upstream_inference_prompt_cost": self.prompt_cost,
                "upstream_inference_completions_cost": self.completion_cost,
            },
            "server_tool_use_details": None,
        }

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.request.model.id,
            "provider": self.provider,
            # OpenAI models report a fingerprint, the others null -- clients must accept both.
            "system_fingerprint": "fp_emulator" if self.provider == "OpenAI" else None,
            "service_tier": None,
        }

    def result(self) -> dict[str, Any]:
        """The non-streaming ``ChatResult``."""
        completion = self.completion
        message: dict[str, Any] = {
            "role": "assistant",
            "content": completion.content,
            "refusal": None,
            "reasoning": None,
        }
        if completion.tool_calls:
            message["tool_calls"] = completion.tool_calls
        choice = {
            "index": 0,
            "finish_reason": completion.finish_reason,
            "native_finish_reason": completion.finish_reason,
            "logprobs": None if self.request.top_logprobs is None else self._logprobs(self.content_pieces()),
            "message": message,
        }
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage()}

    # -- streaming -------------------------------------------------------------------------------

    def _chunk_envelope(self) -> dict[str, Any]:
        envelope = self._envelope("chat.completion.chunk")
        # ChatStreamChunk types system_fingerprint as a plain string: omit it rather than send null.
        if envelope["system_fingerprint"] is None:
            del envelope["system_fingerprint"]
        return envelope

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
        }
        return {**self._chunk_envelope(), "choices": [choice]}

    def _logprobs(self, pieces: list[str]) -> dict[str, Any] | None:
        """``choices[].logprobs`` for ``logprobs: true``: one entry per token, deterministic values."""
        alternatives = self.request.top_logprobs
        if alternatives is None:
            return None
        return {"content": [_token_logprob(piece, alternatives) for piece in pieces], "refusal": None}

    def content_pieces(self) -> list[str]:
        """The content split into word-sized "tokens", one per SSE chunk."""
        return _TOKEN_PIECES.findall(self.completion.content or "")

    def stream_chunks(self, cut_after: int | None = None) -> Iterator[dict[str, Any]]:
        """Role chunk, content chunks, finish chunk, usage chunk (empty ``choices``).

        With ``cut_after`` the stream stops after that many content chunks, before any finish or
        usage chunk, as when the upstream connection breaks.
        """
        yield self._chunk({"role": "assistant", "content": ""})
        for piece in self.content_pieces()[:cut_after]:
            chunk = self._chunk({"content": piece})
            if self.request.top_logprobs is not None:
                chunk["choices"][0]["logprobs"] = self._logprobs([piece])
            yield chunk
        if cut_after is not None:
            return
        if self.completion.tool_calls:
            calls = [{"index": i, **call} for i, call in enumerate(self.completion.tool_calls)]
            yield self._chunk({"tool_calls": calls})
        yield self._chunk({"content": ""}, self.completion.finish_reason)
        yield {**self._chunk_envelope(), "choices": [], "usage": self.usage()}

    def error_chunk(self, status: int, message: str) -> dict[str, Any]:
        """The in-band error event OpenRouter sends when a provider fails mid-stream."""
        chunk = self._chunk({"content": ""}, "error")
        chunk["error"] = {
            "code": status,
            "message": message,
            "metadata": {"error_type": error_type_for(status)},
        }
        return chunk

    def generation_record(self, *, streamed: bool, latency_ms: float, caller: Caller) -> dict[str, Any]:
        """The ``data`` of ``GET /generation?id=``."""
        return generation_record(
            generation_id=self.id,
            created=self.created,
            model=self.request.model.id,
            provider=self.provider,
            api_type="completions",
            caller=caller,
            latency_ms=latency_ms,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion.completion_tokens,
            cost=self.cost,
            streamed=streamed,
            finish_reason=self.completion.finish_reason,
            num_media_prompt=len(self.request.media_parts()),
            upstream_id=f"chatcmpl-{self.id[-20:]}",
        )


def _token_logprob(token: str, alternatives: int) -> dict[str, Any]:
    digest = hashlib.sha256(token.encode()).digest()
    chosen = -round(digest[0] / 255 * 0.5, 6)  # the emitted token is the likeliest: logprob in [-0.5, 0]
    top = [{"token": token, "logprob": chosen, "bytes": list(token.encode())}]
    for rank in range(1, alternatives):
        other = f"{token.strip() or token}{'_' * rank}"
        top.append(
            {
                "token": other,
                "logprob": round(chosen - rank - digest[rank % 32] / 255, 6),
                "bytes": list(other.encode()),
            }
        )
    return {
        "token": token,
        "logprob": chosen,
        "bytes": list(token.encode()),
        "top_logprobs": top[:alternatives],
    }


def run_chat(
    request: ChatRequest,
    *,
    created: int,
    outcome_id: str | None = None,
    batch: bool = False,
    violate_schema: bool = False,
    provider: str | None = None,
) -> ChatOutcome:
    """Generate the completion for a validated request and price it (at the batch price if ``batch``)."""
    completion = generate(request, violate_schema=violate_schema)
    tokens = prompt_tokens(request)
    prompt_cost, completion_cost = request.model.cost(tokens, completion.completion_tokens, batch=batch)
    return ChatOutcome(
        id=outcome_id or generation_id(created),
        created=created,
        request=request,
        completion=completion,
        prompt_tokens=tokens,
        prompt_cost=prompt_cost,
        completion_cost=completion_cost,
        served_by=provider,
    )
