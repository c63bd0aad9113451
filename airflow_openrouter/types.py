"""Pydantic models of OpenRouter's responses.

They tolerate what the real API does: unknown fields are kept (``extra="allow"``), and fields the
spec documents but providers omit (``provider``, ``native_finish_reason``, ``system_fingerprint``,
``usage``) default to ``None``. Field names and types follow the official ``openrouter`` SDK's models
(``openrouter.components``), which are newer than the OpenAPI files.
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "TERMINAL_BATCH_STATUSES",
    "Batch",
    "BatchDeleted",
    "BatchError",
    "BatchItemError",
    "BatchList",
    "BatchRequestCounts",
    "BatchResult",
    "BatchResultResponse",
    "BatchResultsPage",
    "BatchStatus",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Choice",
    "ChunkChoice",
    "CompletionTokensDetails",
    "CostDetails",
    "Delta",
    "Embedding",
    "EmbeddingsResponse",
    "FunctionCall",
    "Generation",
    "InBandError",
    "KeyInfo",
    "Message",
    "Model",
    "ModelPricing",
    "PromptTokensDetails",
    "ToolCall",
    "TopProvider",
    "Usage",
]


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- chat completions ------------------------------------------------------------------------------


class FunctionCall(_Tolerant):
    name: str | None = None
    arguments: str | None = None


class ToolCall(_Tolerant):
    id: str | None = None
    type: str = "function"
    function: FunctionCall = Field(default_factory=FunctionCall)

    def parsed_arguments(self) -> Any:
        """The arguments as JSON (``{}`` when empty); raises ``ValueError`` on malformed JSON."""
        return json.loads(self.function.arguments) if self.function.arguments else {}


class Message(_Tolerant):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None


class InBandError(_Tolerant):
    """An error reported inside a 200 response or an SSE chunk."""

    code: int | str | None = None
    message: str = ""
    metadata: dict[str, Any] | None = None


class Choice(_Tolerant):
    index: int = 0
    message: Message = Field(default_factory=Message)
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    logprobs: Any = None
    error: InBandError | None = None


class PromptTokensDetails(_Tolerant):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    audio_tokens: int | None = None
    video_tokens: int | None = None


class CompletionTokensDetails(_Tolerant):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class CostDetails(_Tolerant):
    """What the upstream provider charged (for BYOK requests, what your own key paid)."""

    upstream_inference_cost: float | None = None
    upstream_inference_prompt_cost: float | None = None
    upstream_inference_completions_cost: float | None = None
    server_tool_cost: float | None = None


class Usage(_Tolerant):
    """Tokens and cost of a completion (or of a whole batch). ``cost`` is what OpenRouter billed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    is_byok: bool | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    cost_details: CostDetails | None = None

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens read from the provider's cache (0 when not reported)."""
        details = self.prompt_tokens_details
        return (details.cached_tokens if details else None) or 0

    @property
    def reasoning_tokens(self) -> int:
        """Completion tokens spent on reasoning (0 when not reported)."""
        details = self.completion_tokens_details
        return (details.reasoning_tokens if details else None) or 0

    @property
    def upstream_inference_cost(self) -> float | None:
        """``cost_details.upstream_inference_cost`` (``None`` when not reported)."""
        return self.cost_details.upstream_inference_cost if self.cost_details else None


class ChatCompletion(_Tolerant):
    id: str = ""
    object: str = "chat.completion"
    created: int | None = None
    model: str = ""
    provider: str | None = None
    system_fingerprint: str | None = None
    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None

    @property
    def content(self) -> str | None:
        """Text of the first choice (``None`` when the model only called tools)."""
        return self.choices[0].message.content if self.choices else None


class Delta(_Tolerant):
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(_Tolerant):
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: str | None = None
    native_finish_reason: str | None = None


class ChatCompletionChunk(_Tolerant):
    id: str = ""
    object: str = "chat.completion.chunk"
    created: int | None = None
    model: str = ""
    provider: str | None = None
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    error: InBandError | None = None


# --- embeddings ------------------------------------------------------------------------------------


class Embedding(_Tolerant):
    """One vector of an embeddings answer: floats, or (``encoding_format="base64"``) the base64 of its
    little-endian float32 bytes, a quarter of the size on the wire."""

    object: str = "embedding"
    embedding: list[float] | str = Field(default_factory=list)
    index: int = 0

    def vector(self) -> array[float]:
        """The vector as float32 values (``array("f")``: 4 bytes a value, no numpy needed)."""
        if isinstance(self.embedding, str):
            values = array("f", base64.b64decode(self.embedding))
            if sys.byteorder != "little":
                values.byteswap()
            return values
        return array("f", self.embedding)


class EmbeddingsResponse(_Tolerant):
    """The answer of ``POST /embeddings`` (and the body of an embeddings batch row): one
    :class:`Embedding` per input, ``usage`` with the billed ``cost`` (embeddings have no completion)."""

    id: str | None = None
    object: str = "list"
    model: str = ""
    provider: str | None = None
    data: list[Embedding] = Field(default_factory=list)
    usage: Usage | None = None

    def vectors(self) -> list[array[float]]:
        """Every vector as float32 values, in input order."""
        return [item.vector() for item in sorted(self.data, key=lambda item: item.index)]


# --- batches ---------------------------------------------------------------------------------------

BatchStatus = Literal[
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]
TERMINAL_BATCH_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


class BatchRequestCounts(_Tolerant):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(_Tolerant):
    code: int | None = None
    message: str = ""


class BatchResultResponse(_Tolerant):
    status_code: int = 200
    request_id: str | None = None
    body: dict[str, Any] = Field(default_factory=dict)


class BatchItemError(_Tolerant):
    type: str | None = None
    message: str = ""
    param: str | None = None
    error_type: str | None = None


class BatchResult(_Tolerant):
    """One row of a finished batch: exactly one of ``response`` and ``error`` is set."""

    id: str | None = None
    custom_id: str
    response: BatchResultResponse | None = None
    error: BatchItemError | None = None

    def completion(self) -> ChatCompletion | None:
        """The chat completion of a successful row."""
        if self.response is None or self.response.status_code >= 400:
            return None
        return ChatCompletion.model_validate(self.response.body)

    def embeddings(self) -> EmbeddingsResponse | None:
        """The embeddings of a successful row of an embeddings batch."""
        if self.response is None or self.response.status_code >= 400:
            return None
        return EmbeddingsResponse.model_validate(self.response.body)


class Batch(_Tolerant):
    """A batch as ``GET /batches/{id}`` returns it.

    :attr expires_at: unix time after which the assigned provider no longer completes unfinished
        requests; it can be later than ``created_at`` + ``completion_window`` (Vertex: up to 96 h), and
        is ``None`` when the provider documents no hard expiry.
    :attr provider: the provider OpenRouter assigned the batch to (same names as a chat answer's).
    """

    id: str
    object: str = "batch"
    endpoint: str = "/v1/chat/completions"
    model: str = ""
    provider: str | None = None
    completion_window: str | None = None
    status: str
    created_at: int | None = None
    finalized_at: int | None = None
    expires_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    usage: Usage | None = None
    results: list[BatchResult] | None = None
    error: BatchError | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_BATCH_STATUSES


class BatchList(_Tolerant):
    data: list[Batch] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchResultsPage(_Tolerant):
    data: list[BatchResult] = Field(default_factory=list)
    has_more: bool = False
    next_cursor: str | None = None


class BatchDeleted(_Tolerant):
    id: str
    object: str = "batch"
    deletion: dict[str, Any] = Field(default_factory=dict)


# --- account and catalogue -------------------------------------------------------------------------


class Generation(_Tolerant):
    id: str
    model: str | None = None
    provider_name: str | None = None
    created_at: str | None = None
    tokens_prompt: int | None = None
    tokens_completion: int | None = None
    total_cost: float | None = None
    latency: float | None = None
    generation_time: float | None = None
    finish_reason: str | None = None
    streamed: bool | None = None


class ModelPricing(_Tolerant):
    prompt: str | None = None
    completion: str | None = None
    request: str | None = None
    image: str | None = None


class TopProvider(_Tolerant):
    """The limits of the provider that serves a model by default (``Model.top_provider``)."""

    context_length: int | None = None
    max_completion_tokens: int | None = None
    is_moderated: bool | None = None


class Model(_Tolerant):
    id: str
    name: str | None = None
    context_length: int | None = None
    pricing: ModelPricing = Field(default_factory=ModelPricing)
    top_provider: TopProvider | None = None
    supported_parameters: list[str] = Field(default_factory=list)
    architecture: dict[str, Any] | None = None


class KeyInfo(_Tolerant):
    label: str | None = None
    limit: float | None = None
    limit_remaining: float | None = None
    usage: float | None = None
    is_free_tier: bool | None = None
