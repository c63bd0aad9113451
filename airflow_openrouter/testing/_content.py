"""Deterministic completions: the answer is a pure function of the content-relevant request fields.

The canonical JSON of those fields (see ``_validation.CONTENT_FIELDS``) is hashed to seed a
``random.Random``, so the same request always gets the same answer -- streamed or not, synchronous
or in a batch -- and a different ``seed``/``temperature``/prompt gets a different one.

* Plain text: sentences built from the keywords of the last user message, opening with
  ``"Summary: "``. Without ``max_tokens`` an answer is 3-6 sentences; with ``max_tokens`` the model
  uses about 85% of the budget (so ``max_tokens`` sizes outputs for benchmarks), and an answer that
  would exceed the budget is cut at ``max_tokens * 4`` characters with ``finish_reason: "length"``.
* ``json_schema``: an instance of the schema (see ``_schema_gen``), ``json_object``: a small object.
* ``tools``: one tool call whose ``arguments`` satisfy the tool's ``parameters``. Which tool:
  the named one for ``tool_choice: {"type": "function", ...}``; otherwise the first tool whose name
  or description words appear in the last user message, else the first tool. With
  ``tool_choice: "auto"`` a tool is called only when a tool matched the prompt or the conversation has
  no tool results yet; after a ``tool`` message the model answers in text.
* ``stop`` sequences cut the text where they first occur (``finish_reason: "stop"``).

Token counting is deterministic and documented, so that a cost estimate can be checked exactly:

* a text of ``n`` characters is ``ceil(n / 4)`` tokens (``count_tokens``; 0 for an empty text);
* ``prompt_tokens`` is the sum, over the messages, of the tokens of each string ``content`` and of each
  ``text`` part, plus ``IMAGE_TOKENS`` (85) per ``image_url`` part and ``FILE_TOKENS`` (250) per ``file``
  part, plus the tokens of the JSON of an assistant message's ``tool_calls`` and of the request's
  ``tools`` (when the model takes tools); roles and message framing count nothing; at least 1;
* ``completion_tokens`` is the tokens of the answer's text (of the function name plus the arguments
  JSON for a tool call);
* the cost is ``prompt_tokens x pricing.prompt + completion_tokens x pricing.completion`` of
  ``GET /models``, exactly (half of it in a batch). Embeddings: see ``_embeddings``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from ._catalogue import FILE_TOKENS, IMAGE_TOKENS
from ._schema_gen import SchemaInstanceGenerator, violate
from ._validation import ChatRequest

_STOPWORD_TEXT = """a about above after again all also am an and any are as at be been before being below between
    both but by can could did do does doing down during each few for from further had has have having
    he her here hers him his how i if in into is it its itself just me more most my no nor not now of
    off on once only or other our out over own please same she should so some such than that the their
    them then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours give write make tell return using
    following text below one two three summarize summarise extract classify describe explain list
    answer question"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_FALLBACK_WORDS = ["pipeline", "data", "schedule", "result", "insight", "report"]
_SENTENCES = (
    "The main point concerns {a} and how it relates to {b}.",
    "In short, {a} matters because it shapes {b}.",
    "Evidence about {a} suggests a clear link with {b}.",
    "A closer look at {a} shows that {b} deserves attention.",
    "Most readers will notice that {a} and {b} move together.",
    "The discussion of {a} leaves open questions about {b}.",
    "Taken together, {a} explains much of what happens with {b}.",
    "It is worth noting that {a} depends on {b} more than expected.",
    "Overall, {a} stands out, while {b} plays a supporting role.",
    "Further work on {a} could clarify its effect on {b}.",
)


@dataclass(frozen=True)
class Completion:
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    completion_tokens: int


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def prompt_tokens(request: ChatRequest) -> int:
    total = 0
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            total += count_tokens(content)
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                total += count_tokens(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                total += IMAGE_TOKENS
            elif part.get("type") == "file":
                total += FILE_TOKENS
        total += count_tokens(json.dumps(message.get("tool_calls"))) if message.get("tool_calls") else 0
    if request.tools:
        total += count_tokens(json.dumps(request.tools))
    return max(total, 1)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def keywords(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in re.findall(r"[A-Za-z][A-Za-z'-]{2,}", text):
        if word.lower() not in _STOPWORDS:
            seen.setdefault(word.strip("'-"), None)
    return list(seen) or list(_FALLBACK_WORDS)


def rng_for(request: ChatRequest, salt: str = "") -> random.Random:
    canonical = json.dumps(request.content_key(), sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256((salt + canonical).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generate(request: ChatRequest, *, violate_schema: bool = False) -> Completion:
    """The completion for a validated request; ``violate_schema`` breaks json_schema outputs."""
    rng = rng_for(request)
    words = keywords(last_user_text(request.messages))
    tool = _choose_tool(request, words)
    if tool is not None:
        return _tool_call(tool, rng, words)
    schema = request.json_schema
    if schema is not None:
        instance = SchemaInstanceGenerator(schema, rng, words).generate()
        if violate_schema:
            instance = violate(instance, schema)
        return _finish(json.dumps(instance), request)
    if request.response_format is not None:  # json_object
        return _finish(json.dumps({"summary": _compose(rng, words, 1), "keywords": words[:5]}), request)
    budget = request.max_tokens
    target = max(1, int(budget * 0.85)) if budget else rng.randint(3, 6) * 14
    return _finish("Summary: " + _compose(rng, words, target), request)


def _compose(rng: random.Random, words: list[str], target_tokens: int) -> str:
    # Draw templates and fillers in blocks (rng.choices is far cheaper than per-word rng.choice):
    # long batch outputs are generated for every results page.
    wanted = target_tokens * 4
    sentences: list[str] = []
    length = 0
    while length < wanted:
        block = wanted // 60 + 1
        templates = rng.choices(_SENTENCES, k=block)
        fillers = rng.choices(words, k=2 * block)
        for i, template in enumerate(templates):
            sentence = template.format(a=fillers[2 * i], b=fillers[2 * i + 1])
            sentences.append(sentence)
            length += len(sentence) + 1
            if length >= wanted:
                break
    return " ".join(sentences)


def _finish(text: str, request: ChatRequest) -> Completion:
    finish = "stop"
    cuts = [text.index(stop) for stop in request.stop if stop and stop in text]
    if cuts:
        text = text[: min(cuts)]
    if request.max_tokens is not None and count_tokens(text) > request.max_tokens:
        text, finish = text[: request.max_tokens * 4], "length"
    return Completion(
        content=text, tool_calls=None, finish_reason=finish, completion_tokens=count_tokens(text)
    )


def _choose_tool(request: ChatRequest, words: list[str]) -> dict[str, Any] | None:
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return next(t for t in request.tools if t["function"]["name"] == choice["function"]["name"])
    prompt = {w.lower() for w in words}
    for tool in request.tools:
        function = tool["function"]
        names = set(re.split(r"[_\W]+", function["name"].lower()))
        described = {w.lower() for w in keywords(str(function.get("description", "")))}
        if function["name"].lower() in prompt or prompt & (names | described) - {""}:
            return tool
    answered = any(m.get("role") == "tool" for m in request.messages)
    if choice == "required" or not answered:
        return request.tools[0]
    return None


def _tool_call(tool: dict[str, Any], rng: random.Random, words: list[str]) -> Completion:
    function = tool["function"]
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    arguments = json.dumps(SchemaInstanceGenerator(parameters, rng, words).generate())
    call_id = "call_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(24))
    call = {"id": call_id, "type": "function", "function": {"name": function["name"], "arguments": arguments}}
    return Completion(
        content=None,
        tool_calls=[call],
        finish_reason="tool_calls",
        completion_tokens=count_tokens(function["name"] + arguments),
    )
