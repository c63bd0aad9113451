"""The emulator's small chat-model catalogue: capabilities and prices that drive validation and billing.

Prices are published in ``GET /models`` as the real API does: ``pricing.prompt`` and
``pricing.completion`` are USD per token, as decimal strings. Billing uses exactly these prices, so a
client can check an estimate against what it was billed: a generation costs ``prompt_tokens x prompt +
completion_tokens x completion`` (token counts: see ``_content``), and a batch request exactly half of
that (``BATCH_DISCOUNT``). OpenRouter publishes no batch price in the API: neither the ``Model`` object nor
its ``pricing`` (``PublicPricing`` in the official SDK) has a batch field, only the model pages on the
website show one ("about 50%"), so the emulator publishes none either and a client assumes half the
sync price.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._errors import ApiError

DEFAULT_MODEL = "openai/gpt-4o-mini"
# Prompt tokens charged per attached image (OpenAI's "low detail" figure) and per attached file.
IMAGE_TOKENS = 85
FILE_TOKENS = 250
# Batch jobs are billed at exactly half the synchronous per-token price (the API publishes no batch price).
BATCH_DISCOUNT = Decimal("0.5")

# How long each batch provider keeps working on unfinished requests (the batch object's ``expires_at`` is
# ``created_at`` plus this): 24 h unless the provider documents otherwise; Google Vertex takes up to 96 h.
# ``None`` means the provider documents no hard expiry (``expires_at: null``); an emulator can override
# any provider with ``batch_expiry_hours=``. The API names Google Vertex (slug ``google-vertex``) "Google".
DEFAULT_BATCH_EXPIRY_HOURS = 24.0
VERTEX = "Google"
BATCH_EXPIRY_HOURS: dict[str, float | None] = {VERTEX: 96.0}

_SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    provider: str
    created: int
    context_length: int
    max_completion_tokens: int
    prompt_price: Decimal  # USD per token
    completion_price: Decimal
    tokenizer: str
    instruct_type: str | None
    vision: bool = False
    structured_outputs: bool = False
    tools: bool = False
    batch: bool = False
    # The provider OpenRouter assigns to this model's batches, when not the one serving sync requests.
    batch_provider: str | None = None

    @property
    def assigned_batch_provider(self) -> str:
        return self.batch_provider or self.provider

    @property
    def logprobs(self) -> bool:
        return self.provider == "OpenAI"

    @property
    def input_modalities(self) -> list[str]:
        return ["text", "image"] if self.vision else ["text"]

    @property
    def supported_parameters(self) -> list[str]:
        params = list(_SAMPLING)
        if self.structured_outputs:
            params += ["response_format", "structured_outputs"]
        if self.tools:
            params += ["tools", "tool_choice", "parallel_tool_calls"]
        if self.logprobs:
            params += ["logprobs", "top_logprobs", "logit_bias"]
        return params

    def cost(self, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> tuple[float, float]:
        """(prompt cost, completion cost) in USD."""
        return (
            token_cost(prompt_tokens, self.prompt_price, batch=batch),
            token_cost(completion_tokens, self.completion_price, batch=batch),
        )

    @property
    def pricing(self) -> dict[str, str]:
        return {
            "prompt": price_text(self.prompt_price),
            "completion": price_text(self.completion_price),
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
        }

    def architecture(self) -> dict:
        return {
            "modality": "text+image->text" if self.vision else "text->text",
            "input_modalities": self.input_modalities,
            "output_modalities": ["text"],
            "tokenizer": self.tokenizer,
            "instruct_type": self.instruct_type,
        }

    def to_json(self) -> dict:
        """The ``Model`` object of ``GET /models``."""
        return model_object(
            self,
            canonical_slug=self.id.split(":")[0],
            hugging_face_id=None,
            description=f"{self.name}, served by the local OpenRouter emulator.",
            max_completion_tokens=self.max_completion_tokens,
            is_moderated=self.provider == "OpenAI",
            supported_parameters=self.supported_parameters,
            default_parameters={"temperature": None, "top_p": None, "frequency_penalty": None},
        )

    def endpoints_json(self) -> dict:
        """The ``data`` object of ``GET /models/{author}/{slug}/endpoints`` (one endpoint per model)."""
        return endpoints_page(
            self,
            description=f"{self.name}, served by the local OpenRouter emulator.",
            max_completion_tokens=self.max_completion_tokens,
            supported_parameters=self.supported_parameters,
            tools=self.tools,
        )


def model_object(
    spec: Any,
    *,
    canonical_slug: str,
    hugging_face_id: str | None,
    description: str,
    max_completion_tokens: int | None,
    is_moderated: bool,
    supported_parameters: list[str],
    default_parameters: dict[str, Any] | None,
) -> dict:
    """The ``Model`` object of ``GET /models`` and ``GET /embeddings/models``, for a chat or embedding
    model (*spec*: its ``id``, ``name``, ``created``, ``context_length``, ``architecture()``, ``pricing``)."""
    return {
        "id": spec.id,
        "canonical_slug": canonical_slug,
        "hugging_face_id": hugging_face_id,
        "name": spec.name,
        "created": spec.created,
        "description": description,
        "context_length": spec.context_length,
        "architecture": spec.architecture(),
        "pricing": spec.pricing,
        "top_provider": {
            "context_length": spec.context_length,
            "max_completion_tokens": max_completion_tokens,
            "is_moderated": is_moderated,
        },
        "per_request_limits": None,
        "supported_parameters": supported_parameters,
        "default_parameters": default_parameters,
        "supported_voices": None,
        "expiration_date": None,
        "knowledge_cutoff": None,
        "links": {"details": f"/api/v1/models/{canonical_slug}/endpoints"},
    }


def endpoints_page(
    spec: Any,
    *,
    description: str,
    max_completion_tokens: int | None,
    supported_parameters: list[str],
    tools: bool,
) -> dict:
    """``GET /models/{author}/{slug}/endpoints`` for a chat or embedding model served by one provider."""
    return {
        "id": spec.id,
        "name": spec.name,
        "created": spec.created,
        "description": description,
        "architecture": spec.architecture(),
        "endpoints": [
            {
                "name": f"{spec.provider} | {spec.id}",
                "model_id": spec.id,
                "model_name": spec.name,
                "provider_name": spec.provider,
                "tag": spec.provider.lower().replace(" ", "-"),
                "context_length": spec.context_length,
                "max_completion_tokens": max_completion_tokens,
                "max_prompt_tokens": None,
                "pricing": spec.pricing,
                "quantization": None,
                "status": 0,
                "supported_parameters": supported_parameters,
                "uptime_last_30m": 100.0,
                "uptime_last_5m": 100.0,
                "uptime_last_1d": 100.0,
                "latency_last_30m": None,
                "throughput_last_30m": None,
                "supports_implicit_caching": False,
                "supports_diarization": False,
                "supports_tool_choice": {"auto": tools, "function": tools, "none": tools, "required": tools},
                "native_tools": {},
                "service_tier": None,
            }
        ],
    }


def token_cost(tokens: int, price: Decimal, *, batch: bool = False) -> float:
    """What *tokens* cost at *price* (USD per token), at half price in a batch; Decimal keeps
    $10/1M-style prices exact."""
    return float(tokens * price * (BATCH_DISCOUNT if batch else Decimal(1)))


def price_text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def per_million(usd: str) -> Decimal:
    return Decimal(usd) / Decimal(1_000_000)


CATALOGUE: dict[str, ModelSpec] = {
    m.id: m
    for m in (
        ModelSpec(
            id="openai/gpt-4-1106-preview",
            name="OpenAI: GPT-4 Turbo (older v1106)",
            provider="OpenAI",
            created=1699228800,
            context_length=128_000,
            max_completion_tokens=4096,
            prompt_price=per_million("10"),
            completion_price=per_million("30"),
            tokenizer="GPT",
            instruct_type=None,
            vision=True,
            structured_outputs=True,
            tools=True,
            batch=True,
        ),
        ModelSpec(
            id="openai/gpt-4o-mini",
            name="OpenAI: GPT-4o-mini",
            provider="OpenAI",
            created=1721260800,
            context_length=128_000,
            max_completion_tokens=16_384,
            prompt_price=per_million("0.15"),
            completion_price=per_million("0.6"),
            tokenizer="GPT",
            instruct_type=None,
            vision=True,
            structured_outputs=True,
            tools=True,
            batch=True,
        ),
        ModelSpec(
            id="anthropic/claude-3.5-haiku",
            name="Anthropic: Claude 3.5 Haiku",
            provider="Anthropic",
            created=1730678400,
            context_length=200_000,
            max_completion_tokens=8192,
            prompt_price=per_million("0.8"),
            completion_price=per_million("4"),
            tokenizer="Claude",
            instruct_type=None,
            structured_outputs=True,
            tools=True,
            batch=True,
        ),
        ModelSpec(
            id="meta-llama/llama-3.1-8b-instruct",
            name="Meta: Llama 3.1 8B Instruct",
            provider="DeepInfra",
            created=1721692800,
            context_length=131_072,
            max_completion_tokens=8192,
            prompt_price=per_million("0.02"),
            completion_price=per_million("0.03"),
            tokenizer="Llama3",
            instruct_type="llama3",
            batch=True,
        ),
        ModelSpec(
            id="mistralai/mistral-7b-instruct:free",
            name="Mistral: Mistral 7B Instruct (free)",
            provider="Mistral",
            created=1716768000,
            context_length=32_768,
            max_completion_tokens=4096,
            prompt_price=Decimal(0),
            completion_price=Decimal(0),
            tokenizer="Mistral",
            instruct_type="mistral",
        ),
        ModelSpec(
            id="google/gemini-2.5-flash",
            name="Google: Gemini 2.5 Flash",
            provider="Google AI Studio",
            created=1750172400,
            context_length=1_048_576,
            max_completion_tokens=65_535,
            prompt_price=per_million("0.3"),
            completion_price=per_million("2.5"),
            tokenizer="Gemini",
            instruct_type=None,
            vision=True,
            structured_outputs=True,
            tools=True,
            batch=True,
            batch_provider=VERTEX,
        ),
    )
}


def lookup_model(model_id: str) -> ModelSpec:
    """The chat model for an id, or the 400 OpenRouter answers for an unknown or embedding model id."""
    spec = CATALOGUE.get(model_id)
    if spec is not None:
        return spec
    from ._embedding_models import EMBEDDING_CATALOGUE  # imports this module: loaded late

    if model_id in EMBEDDING_CATALOGUE:
        raise ApiError(
            400,
            f"{model_id} is an embedding model and cannot be used with the chat/completions endpoint. "
            "Use the /embeddings endpoint instead.",
        )
    raise ApiError(400, f"{model_id} is not a valid model ID")
