"""The ``data`` of ``GET /generation?id=``: one record shape for chat and embeddings generations.

Attribution comes back as the real API returns it: the request's ``user`` as ``external_user``, its
``session_id`` (or ``x-session-id`` header) as ``session_id``, the ``HTTP-Referer`` header as
``http_referer`` and the ``User-Agent`` header as ``user_agent``. There is no metadata field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._account import iso_timestamp
from ._attribution import Attribution


@dataclass(frozen=True)
class Caller:
    """What a request says about who sent it: its attribution and two headers."""

    attribution: Attribution
    user_agent: str | None = None
    http_referer: str | None = None

    @classmethod
    def of(cls, attribution: Attribution, headers: Mapping[str, str]) -> Caller:
        return cls(
            attribution=attribution.with_session_header(headers),
            user_agent=headers.get("user-agent"),
            http_referer=headers.get("http-referer"),
        )


def generation_record(
    *,
    generation_id: str,
    created: int,
    model: str,
    provider: str,
    api_type: str,
    caller: Caller,
    latency_ms: float,
    prompt_tokens: int,
    completion_tokens: int,
    cost: float,
    streamed: bool = False,
    finish_reason: str | None = None,
    num_media_prompt: int = 0,
    upstream_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": generation_id,
        "upstream_id": upstream_id,
        "request_id": f"req-{generation_id[4:]}",
        "session_id": caller.attribution.session_id,
        "model": model,
        "provider_name": provider,
        "created_at": iso_timestamp(created),
        "streamed": streamed,
        "cancelled": False,
        "finish_reason": finish_reason,
        "native_finish_reason": finish_reason,
        "tokens_prompt": prompt_tokens,
        "tokens_completion": completion_tokens,
        "native_tokens_prompt": prompt_tokens,
        "native_tokens_completion": completion_tokens,
        "native_tokens_reasoning": 0,
        "native_tokens_cached": 0,
        "native_tokens_completion_images": 0,
        "num_media_prompt": num_media_prompt,
        "num_input_audio_prompt": 0,
        "num_media_completion": 0,
        "num_search_results": 0,
        "num_fetches": 0,
        "web_search_engine": None,
        "total_cost": cost,
        "usage": cost,
        "upstream_inference_cost": None,
        "cache_discount": None,
        "is_byok": False,
        "latency": round(latency_ms, 3),
        "generation_time": round(latency_ms, 3),
        "moderation_latency": None,
        "api_type": api_type,
        "app_id": None,
        "origin": "",
        "http_referer": caller.http_referer,
        "user_agent": caller.user_agent,
        "external_user": caller.attribution.user,
        "preset_id": None,
        "router": None,
        "provider_responses": None,
        "service_tier": None,
        "data_region": "global",
        "workspace_id": None,
    }
