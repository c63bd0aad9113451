"""The response types: the fields the official SDK's models have, tolerant of missing and unknown ones."""

from __future__ import annotations

import pytest

from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.types import Batch, BatchStatus, Usage


def test_usage_of_a_chat_answer_exposes_cache_reasoning_byok_and_upstream_costs(openrouter_emulator):
    usage = (
        OpenRouterHook()
        .chat_completion(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        .usage
    )

    assert usage.cached_tokens == 0 and usage.reasoning_tokens == 0 and usage.is_byok is False
    costs = usage.cost_details
    assert costs.upstream_inference_prompt_cost + costs.upstream_inference_completions_cost == pytest.approx(
        usage.cost
    )


def test_usage_reads_the_details_the_sdk_models_and_tolerates_their_absence():
    usage = Usage.model_validate(
        {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "total_tokens": 140,
            "cost": 0.002,
            "is_byok": True,
            "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 10, "new_field": 1},
            "completion_tokens_details": {"reasoning_tokens": 12},
            "cost_details": {
                "upstream_inference_cost": 0.0019,
                "upstream_inference_prompt_cost": 0.001,
                "upstream_inference_completions_cost": 0.0009,
            },
            "server_tool_use_details": {"web_search_requests": 1},
        }
    )
    assert (usage.cached_tokens, usage.reasoning_tokens, usage.is_byok) == (64, 12, True)
    assert usage.upstream_inference_cost == 0.0019 and usage.prompt_tokens_details.cache_write_tokens == 10
    assert usage.model_dump()["server_tool_use_details"] == {"web_search_requests": 1}, "unknown fields kept"

    bare = Usage.model_validate({"prompt_tokens": 1, "prompt_tokens_details": None, "cost_details": None})
    assert (bare.cached_tokens, bare.reasoning_tokens, bare.upstream_inference_cost, bare.is_byok) == (
        0,
        0,
        None,
        None,
    )


def test_a_batch_carries_expires_at_provider_and_completion_window():
    batch = Batch.model_validate(
        {
            "id": "batch_1",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "model": "google/gemini-2.5-flash",
            "provider": "Google Vertex",
            "completion_window": "24h",
            "status": "in_progress",
            "created_at": 1_700_000_000,
            "expires_at": 1_700_000_000 + 96 * 3600,
            "finalized_at": None,
            "request_counts": {"total": 3, "completed": 1, "failed": 0},
            "usage": None,
            "results": None,
            "error": None,
        }
    )
    assert (batch.provider, batch.completion_window, batch.expires_at) == (
        "Google Vertex",
        "24h",
        1_700_345_600,
    )

    minimal = Batch.model_validate({"id": "batch_2", "status": "validating"})
    assert minimal.provider is None and minimal.expires_at is None and minimal.completion_window is None
    assert "cancelling" in BatchStatus.__args__
