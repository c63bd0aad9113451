"""How many tokens a request may cost, before it is sent: the estimator's one documented rule.

**Prompt tokens** (:func:`prompt_tokens`): ``ceil(characters / 4)`` for each string ``content`` and each
``text`` part of a message, :data:`IMAGE_TOKENS` per ``image_url`` part and :data:`FILE_TOKENS` per
``file`` part, plus the tokens of the JSON of an assistant message's ``tool_calls`` and of the request's
``tools``; roles and message framing count nothing; at least 1. This is the rule the emulator bills by
(``airflow_openrouter.testing``), so against it the estimate is exact. Real tokenizers differ: English
prose runs at about 4 characters a token, code and other languages often fewer (more tokens), and
providers add a few tokens of framing per message and count a structured-output schema. The cap's
running check (concurrent engine) and the billed costs in the results are exact either way.

**Completion tokens** (:func:`completion_bound`): an upper bound, never a guess. ``max_tokens`` (or
``max_completion_tokens``, the smaller of the two) when the request sets one; otherwise the model's
``top_provider.max_completion_tokens`` from ``/models`` (the most its provider generates), else its
context length minus the prompt. Set ``max_tokens`` to get a tight bound.

**Embeddings** (a body with ``input`` and no ``messages``): ``ceil(characters / 4)`` per input string,
one token per id of a token array, and no completion tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["FILE_TOKENS", "IMAGE_TOKENS", "Bound", "completion_bound", "prompt_images", "prompt_tokens"]

#: Prompt tokens counted per attached image (OpenAI's "low detail" figure) and per attached file.
IMAGE_TOKENS = 85
FILE_TOKENS = 250


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The estimated prompt tokens of a chat (or embeddings) request body (see the module docstring)."""
    if "input" in body and "messages" not in body:
        return max(_input_tokens(body["input"]), 1)
    total = 0
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, Mapping):
                    continue
                kind = part.get("type")
                if kind == "text":
                    total += text_tokens(str(part.get("text", "")))
                elif kind == "image_url":
                    total += IMAGE_TOKENS
                elif kind == "file":
                    total += FILE_TOKENS
        if message.get("tool_calls"):
            total += text_tokens(json.dumps(message["tool_calls"]))
    if body.get("tools"):
        total += text_tokens(json.dumps(body["tools"]))
    return max(total, 1)


def _input_tokens(value: Any) -> int:
    """An embeddings ``input``: a string, a list of strings, or token arrays (one token per id)."""
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return len(value)
    if isinstance(value, list):
        return sum(_input_tokens(v) for v in value)
    return 0


def prompt_images(body: Mapping[str, Any]) -> int:
    """The ``image_url`` parts of a request (some models also charge a price per image)."""
    return sum(
        1
        for message in body.get("messages") or ()
        if isinstance(message, Mapping) and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, Mapping) and part.get("type") == "image_url"
    )


class Bound(NamedTuple):
    """The most completion tokens a request may be billed for, and where that figure comes from."""

    tokens: int | None  # None: no bound is known
    source: str  # "max_tokens", "model max_completion_tokens", "context length", "unknown"


def completion_bound(
    body: Mapping[str, Any],
    *,
    model_max_completion: int | None,
    context_length: int | None,
    prompt: int,
) -> Bound:
    """The completion-token upper bound of one request (see the module docstring)."""
    if "input" in body and "messages" not in body:
        return Bound(0, "embeddings")  # an embedding has no completion
    set_limits = [
        value
        for value in (body.get("max_tokens"), body.get("max_completion_tokens"))
        if isinstance(value, int) and not isinstance(value, bool) and value > 0
    ]
    if set_limits:
        return Bound(min(set_limits), "max_tokens")
    if model_max_completion:
        return Bound(model_max_completion, "model max_completion_tokens")
    if context_length:
        return Bound(max(context_length - prompt, 0), "context length")
    return Bound(None, "unknown")
