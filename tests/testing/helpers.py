"""Small request builders shared by the emulator tests."""

from __future__ import annotations

import json
from typing import Any

import httpx

MODEL = "openai/gpt-4-1106-preview"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def chat(
    client: httpx.Client, text: str = "Summarize the nightly revenue report", **body: Any
) -> httpx.Response:
    return client.post("/chat/completions", json={"model": MODEL, "messages": user(text), **body})


def batch_body(n: int = 3, model: str = MODEL, **item_body: Any) -> dict[str, Any]:
    """A valid batch submission: endpoint and model first, then requests (dicts keep key order)."""
    return {
        "endpoint": "/v1/chat/completions",
        "model": model,
        "requests": [
            {
                "custom_id": f"req-{i}",
                "body": {"messages": user(f"Summarize document number {i}"), **item_body},
            }
            for i in range(n)
        ],
    }


def submit(client: httpx.Client, body: dict[str, Any] | str, path: str = "/batches") -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


def sse_events(response: httpx.Response) -> tuple[list[str], list[Any]]:
    """(comment lines, data payloads) of an SSE response; ``[DONE]`` is kept as the string."""
    comments, data = [], []
    for line in response.iter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("data: "):
            payload = line[len("data: ") :]
            data.append(payload if payload == "[DONE]" else json.loads(payload))
    return comments, data
