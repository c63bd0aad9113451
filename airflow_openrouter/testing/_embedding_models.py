"""The emulator's embedding models: ids, vector sizes and prices of models people embed with through
OpenRouter, served by ``GET /embeddings/models`` (not by ``GET /models``, whose default is text output).

Ids, prices and context lengths are OpenRouter's list prices (USD per token, input only; embeddings have
no completion price). The ``Model`` object OpenRouter returns has no field for the vector size: a model's
dimensions are stated in its description here, and a client learns them from the vectors it gets back.
``dimensions`` is honoured by the models that support shortened (Matryoshka) vectors, between
``min_dimensions`` and the native size; the others refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ._catalogue import endpoints_page, model_object, per_million, price_text, token_cost
from ._errors import ApiError


@dataclass(frozen=True)
class EmbeddingModelSpec:
    id: str
    name: str
    provider: str
    created: int
    context_length: int
    dimensions: int  # the native (and default) vector size
    min_dimensions: int | None  # None: the model refuses ``dimensions``
    prompt_price: Decimal  # USD per input token
    tokenizer: str
    hugging_face_id: str | None = None
    batch: bool = False  # whether the Batch API accepts it on /v1/embeddings

    def check_dimensions(self, dimensions: int | None) -> int:
        """The vector size to return for a request's ``dimensions`` (400 when the model cannot)."""
        if dimensions is None:
            return self.dimensions
        if isinstance(dimensions, bool) or not isinstance(dimensions, int):
            raise ApiError(400, "dimensions must be a positive integer")
        if self.min_dimensions is None:
            raise ApiError(
                400,
                f"{self.id} does not support the 'dimensions' parameter: it always returns "
                f"{self.dimensions}-dimensional vectors. Leave dimensions out.",
            )
        if not self.min_dimensions <= dimensions <= self.dimensions:
            raise ApiError(
                400,
                f"dimensions must be between {self.min_dimensions} and {self.dimensions} for {self.id} "
                f"(got {dimensions}).",
            )
        return dimensions

    @property
    def assigned_batch_provider(self) -> str:
        return self.provider

    def cost(
        self, prompt_tokens: int, completion_tokens: int = 0, *, batch: bool = False
    ) -> tuple[float, float]:
        """(prompt cost, completion cost) in USD, as ``ModelSpec.cost``: embeddings bill input only."""
        return token_cost(prompt_tokens, self.prompt_price, batch=batch), 0.0

    @property
    def description(self) -> str:
        sizes = (
            f"{self.dimensions}-dimensional vectors"
            if self.min_dimensions is None
            else f"{self.dimensions}-dimensional vectors by default, {self.min_dimensions} to "
            f"{self.dimensions} with the dimensions parameter"
        )
        return f"{self.name} embeddings: {sizes}. Served by the local OpenRouter emulator."

    def architecture(self) -> dict:
        return {
            "modality": "text->embeddings",
            "input_modalities": ["text"],
            "output_modalities": ["embeddings"],
            "tokenizer": self.tokenizer,
            "instruct_type": None,
        }

    @property
    def pricing(self) -> dict[str, str]:
        return {"prompt": price_text(self.prompt_price), "completion": "0", "request": "0", "image": "0"}

    def to_json(self) -> dict:
        """The ``Model`` object of ``GET /embeddings/models`` (shaped like the official example)."""
        return model_object(
            self,
            canonical_slug=self.id,
            hugging_face_id=self.hugging_face_id,
            description=self.description,
            max_completion_tokens=None,
            is_moderated=False,
            supported_parameters=[],
            default_parameters=None,
        )

    def endpoints_json(self) -> dict:
        """The ``data`` of ``GET /models/{author}/{slug}/endpoints`` for this model."""
        return endpoints_page(
            self,
            description=self.description,
            max_completion_tokens=None,
            supported_parameters=[],
            tools=False,
        )


EMBEDDING_CATALOGUE: dict[str, EmbeddingModelSpec] = {
    m.id: m
    for m in (
        EmbeddingModelSpec(
            id="openai/text-embedding-3-small",
            name="OpenAI: Text Embedding 3 Small",
            provider="OpenAI",
            created=1761782400,
            context_length=8192,
            dimensions=1536,
            min_dimensions=1,
            prompt_price=per_million("0.02"),
            tokenizer="GPT",
            batch=True,
        ),
        EmbeddingModelSpec(
            id="openai/text-embedding-3-large",
            name="OpenAI: Text Embedding 3 Large",
            provider="OpenAI",
            created=1761782400,
            context_length=8192,
            dimensions=3072,
            min_dimensions=1,
            prompt_price=per_million("0.13"),
            tokenizer="GPT",
            batch=True,
        ),
        EmbeddingModelSpec(
            id="openai/text-embedding-ada-002",
            name="OpenAI: Text Embedding Ada 002",
            provider="OpenAI",
            created=1761782400,
            context_length=8192,
            dimensions=1536,
            min_dimensions=None,
            prompt_price=per_million("0.1"),
            tokenizer="GPT",
            batch=True,
        ),
        EmbeddingModelSpec(
            id="qwen/qwen3-embedding-8b",
            name="Qwen: Qwen3 Embedding 8B",
            provider="DeepInfra",
            created=1761609600,
            context_length=32768,
            dimensions=4096,
            min_dimensions=32,
            prompt_price=per_million("0.01"),
            tokenizer="Qwen3",
            hugging_face_id="Qwen/Qwen3-Embedding-8B",
        ),
        EmbeddingModelSpec(
            id="mistralai/mistral-embed-2312",
            name="Mistral: Mistral Embed 2312",
            provider="Mistral",
            created=1761868800,
            context_length=8192,
            dimensions=1024,
            min_dimensions=None,
            prompt_price=per_million("0.1"),
            tokenizer="Mistral",
        ),
    )
}


def lookup_embedding_model(model_id: str) -> EmbeddingModelSpec:
    """The embedding model for an id; a chat model or an unknown id is the 400 OpenRouter answers."""
    spec = EMBEDDING_CATALOGUE.get(model_id)
    if spec is not None:
        return spec
    from ._catalogue import CATALOGUE

    if model_id in CATALOGUE:
        raise ApiError(
            400,
            f"{model_id} is not an embedding model and cannot be used with the embeddings endpoint. "
            "Use an embedding model (GET /embeddings/models lists them), or /chat/completions for this one.",
        )
    raise ApiError(400, f"{model_id} is not a valid model ID")
