"""``POST /embeddings``: validation, deterministic vectors and the list body (also for batch lines).

Rules a test can rely on:

* A vector is a pure function of the model and the input: equal inputs give equal vectors, different
  inputs give different ones, on every call, in a batch or not. Each lowercased word of a
  text adds +-1 at 8 positions picked by a hash of (model, word), and a dense component hashed from the
  whole text (about a tenth of the weight of a ten-word text) keeps reordered texts apart; so texts that
  share words are closer (cosine) than unrelated ones, and different models give unrelated vectors.
  A token array is read as the words ``#<token>``.
* Vectors have the model's native size, or ``dimensions`` where the model supports it: the first
  ``dimensions`` values of the native vector, renormalised (Matryoshka shortening, as text-embedding-3
  does). Every vector has unit L2 norm and float32 values; ``encoding_format: "base64"`` is the base64 of
  the little-endian float32 bytes (what OpenAI's SDK decodes, and sends by default).
* Tokens: ``ceil(len(text) / 4)`` per text input (the chat rule), ``len(tokens)`` per token array;
  ``usage.cost`` = tokens x the model's ``pricing.prompt``, exactly (x 0.5 in a batch).
* Errors (400, the usual envelope, before anything is billed): empty input or an empty string or token
  array, more than ``MAX_INPUTS`` inputs, an input longer than the model's context, a chat model, a
  ``dimensions`` the model cannot return, an unknown ``encoding_format``, image input (the emulator's
  embedding models read text). A batch line also may not have multimodal input, ``input_type`` or
  ``provider`` (``check_batch_line``).
"""

from __future__ import annotations

import array
import base64
import hashlib
import math
import re
import struct
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

from ._attribution import Attribution, parse_attribution
from ._content import count_tokens
from ._embedding_models import EmbeddingModelSpec, lookup_embedding_model
from ._errors import ApiError
from ._generations import Caller, generation_record

MAX_INPUTS = 2048  # inputs per request, OpenAI's documented limit
_FEATURES_PER_WORD = 8
_DENSE_WEIGHT = 0.1 / 2**31  # scales a signed 32-bit hash to +-0.1
_WORD = re.compile(r"\w+")
_ENCODINGS = ("float", "base64")

Input: TypeAlias = "str | tuple[int, ...]"  # a text, or a token array


@dataclass(frozen=True)
class EmbeddingRequest:
    body: dict[str, Any]
    model: EmbeddingModelSpec
    inputs: tuple[Input, ...]
    dimensions: int
    encoding_format: str
    attribution: Attribution


def check_batch_line(body: dict[str, Any], index: int) -> None:
    """The Batch API's own rules for a ``/v1/embeddings`` request body, checked at submission (400)."""
    for name in ("input_type", "provider"):
        if name in body:
            raise ApiError(400, f"requests[{index}].body.{name} is not supported in embeddings batches.")
    value = body.get("input")
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        raise ApiError(
            400,
            f"requests[{index}] has multimodal input: embeddings batches take strings or token arrays only.",
        )


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    """Validate like OpenRouter (400 before anything is billed)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    model_id = body.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise ApiError(400, "model must be a non-empty string naming an embedding model")
    model = lookup_embedding_model(model_id)
    if body.get("input_type") is not None and not isinstance(body["input_type"], str):
        raise ApiError(400, "input_type must be a string, e.g. 'search_query' or 'search_document'")
    encoding = body.get("encoding_format", "float")
    if encoding not in _ENCODINGS:
        raise ApiError(400, f"encoding_format must be 'float' or 'base64' (got {encoding!r}).")
    inputs = _inputs(body.get("input"))
    for i, item in enumerate(inputs):
        tokens = _tokens(item)
        if tokens > model.context_length:
            raise ApiError(
                400,
                f"input[{i}] is {tokens} tokens; {model.id} accepts at most {model.context_length} "
                "tokens per input. Split the text.",
            )
    return EmbeddingRequest(
        body=body,
        model=model,
        inputs=inputs,
        dimensions=model.check_dimensions(body.get("dimensions")),
        encoding_format=encoding,
        attribution=parse_attribution(body),
    )


def _inputs(value: Any) -> tuple[Input, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "input must be a non-empty string, array of strings or array of token arrays")
    if all(_is_token(t) for t in value):
        value = [value]  # one token array
    if len(value) > MAX_INPUTS:
        raise ApiError(
            400, f"input has {len(value)} items; at most {MAX_INPUTS} inputs are allowed per request."
        )
    return tuple(_input(item, i) for i, item in enumerate(value))


def _input(item: Any, index: int) -> Input:
    if isinstance(item, str):
        if not item:
            raise ApiError(400, f"input[{index}] is an empty string: every input needs text.")
        return item
    if isinstance(item, list) and item and all(_is_token(t) for t in item):
        return tuple(item)
    if isinstance(item, dict) and "content" in item:
        return _multimodal_text(item["content"], index)
    raise ApiError(
        400,
        f"input[{index}] must be a non-empty string or a non-empty array of integer tokens "
        "(all inputs of one request of the same kind).",
    )


def _multimodal_text(content: Any, index: int) -> str:
    if not isinstance(content, list) or not content:
        raise ApiError(400, f"input[{index}].content must be a non-empty array of content parts")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise ApiError(
                400, f"input[{index}] has a '{kind}' part: this model embeds text only (use 'text' parts)."
            )
        if not isinstance(part.get("text"), str) or not part["text"]:
            raise ApiError(400, f"input[{index}]: a text part needs non-empty 'text'")
        texts.append(part["text"])
    return " ".join(texts)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tokens(item: Input) -> int:
    return count_tokens(item) if isinstance(item, str) else len(item)


# -- vectors ---------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _word_features(model: str, word: str, size: int) -> tuple[tuple[int, float], ...]:
    digest = hashlib.blake2b(f"{model}\0{word}".encode(), digest_size=2 * _FEATURES_PER_WORD + 1).digest()
    positions = struct.unpack(f"<{_FEATURES_PER_WORD}H", digest[:-1])
    signs = digest[-1]
    return tuple((p % size, 1.0 if signs >> i & 1 else -1.0) for i, p in enumerate(positions))


def vector(model: EmbeddingModelSpec, item: Input, dimensions: int) -> array.array:
    """The unit-norm float32 vector of one input (see the module rules)."""
    size = model.dimensions
    words = _WORD.findall(item.lower()) if isinstance(item, str) else [f"#{t}" for t in item]
    key = item.encode() if isinstance(item, str) else b"\x00tokens:" + ",".join(map(str, item)).encode()
    dense = array.array("i", hashlib.shake_256(model.id.encode() + b"\0" + key).digest(4 * size))
    values = [v * _DENSE_WEIGHT for v in dense]
    for word in words:
        for position, sign in _word_features(model.id, word, size):
            values[position] += sign
    values = values[:dimensions]
    norm = math.hypot(*values) or 1.0
    return array.array("f", [v / norm for v in values])


def encode(vec: array.array, encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vec.tolist()
    if sys.byteorder != "little":
        vec = array.array("f", vec)
        vec.byteswap()
    return base64.b64encode(vec.tobytes()).decode()


# -- the answer ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingOutcome:
    """One embeddings generation: what it costs is known without computing the vectors."""

    id: str
    created: int
    request: EmbeddingRequest
    prompt_tokens: int
    prompt_cost: float
    completion_tokens: int = 0
    completion_cost: float = 0.0

    @property
    def cost(self) -> float:
        return self.prompt_cost

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens,
            "cost": self.cost,
            "is_byok": False,
            "cost_details": {
                "upstream_inference_cost": None,
                "upstream_inference_prompt_cost": self.prompt_cost,
                "upstream_inference_completions_cost": 0.0,
            },
        }

    def result(self) -> dict[str, Any]:
        """The embeddings list body (``data`` in input order)."""
        request = self.request
        data = [
            {
                "object": "embedding",
                "embedding": encode(vector(request.model, item, request.dimensions), request.encoding_format),
                "index": i,
            }
            for i, item in enumerate(request.inputs)
        ]
        return {
            "object": "list",
            "id": self.id,
            "data": data,
            "model": request.model.id,
            "usage": self.usage(),
        }

    def generation_record(self, *, latency_ms: float, caller: Caller) -> dict[str, Any]:
        """The ``data`` of ``GET /generation?id=`` for this request (``api_type: "embeddings"``)."""
        return generation_record(
            generation_id=self.id,
            created=self.created,
            model=self.request.model.id,
            provider=self.request.model.provider,
            api_type="embeddings",
            caller=caller,
            latency_ms=latency_ms,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=0,
            cost=self.cost,
        )


def run_embeddings(
    request: EmbeddingRequest, *, created: int, outcome_id: str, batch: bool = False
) -> EmbeddingOutcome:
    tokens = sum(_tokens(item) for item in request.inputs)
    return EmbeddingOutcome(
        id=outcome_id,
        created=created,
        request=request,
        prompt_tokens=tokens,
        prompt_cost=request.model.cost(tokens, batch=batch)[0],
    )
