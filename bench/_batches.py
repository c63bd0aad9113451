"""Set-up shared by the results-memory and triggerer benchmarks: batches submitted to the emulator.

Run as a worker of its own, so the memory it takes to build thousands of requests never shows in the
process that is measured afterwards.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench._common import connection_env

MODEL = "openai/gpt-4-1106-preview"
MAX_PER_BATCH = 5_000  # OpenRouter's limit of requests per batch


def submit_batches(
    base_url: str, api_key: str, items: int, per_batch: int, max_tokens: int, wait_completed: bool
) -> list[str]:
    """Worker: submit ``items`` requests in batches of ``per_batch``; return the batch ids, once all
    have completed when ``wait_completed``. ``max_tokens`` sizes the outputs (~4 characters a token)."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    per_batch = min(per_batch, MAX_PER_BATCH)
    ids = []
    with OpenRouterHook() as hook:
        for first in range(0, items, per_batch):
            requests = [_request(i, max_tokens) for i in range(first, min(first + per_batch, items))]
            ids.append(hook.create_batch(model=MODEL, requests=requests).id)
        while wait_completed and not all(hook.get_batch(batch_id).is_terminal for batch_id in ids):
            time.sleep(0.2)
    return ids


def _request(i: int, max_tokens: int) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": f"Summarise document {i}."}], "max_tokens": max_tokens}
    return {"custom_id": f"item-{i}", "body": body}
