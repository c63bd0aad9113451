"""A model's published prices, from ``GET /models``: USD per token, as OpenRouter lists them.

``/models`` is read once per task (it is free and needs no credits). A model id with a variant suffix
(``openai/gpt-4o-mini:floor``) that ``/models`` does not list is priced as its base id, and the basis
says so. A model that ``/models`` does not list at all has no known price: the estimate then says
``unknown price`` and, when ``max_cost_usd`` is set, the task fails before sending anything (a cap that
cannot be checked is not a cap).

**Batch price.** The API publishes none (neither the ``Model`` object nor its ``pricing`` has a batch
field; only the model pages on openrouter.ai show one), so a batch is assumed to cost half the sync
price (:data:`BATCH_PRICE_FACTOR`), and the estimate's basis says it is an assumption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import Model

__all__ = ["BATCH_PRICE_FACTOR", "ModelPrice", "fetch_price", "price_of"]

BATCH_PRICE_FACTOR = Decimal("0.5")
_PER_MILLION = Decimal(1_000_000)


def _decimal(text: Any) -> Decimal:
    try:
        value = Decimal(str(text)) if text not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)
    return value if value.is_finite() and value > 0 else Decimal(0)


@dataclass(frozen=True)
class ModelPrice:
    """What one model costs at its sync list price, and how long its completions can be."""

    model: str  # the id the task asked for
    listed_as: str  # the id /models lists it under
    prompt: Decimal  # USD per prompt token
    completion: Decimal  # USD per completion token
    request: Decimal = Decimal(0)  # USD per request
    image: Decimal = Decimal(0)  # USD per input image
    max_completion_tokens: int | None = None
    context_length: int | None = None

    @classmethod
    def of(cls, model: str, listed: Model) -> ModelPrice:
        top = listed.top_provider
        return cls(
            model=model,
            listed_as=listed.id,
            prompt=_decimal(listed.pricing.prompt),
            completion=_decimal(listed.pricing.completion),
            request=_decimal(listed.pricing.request),
            image=_decimal(listed.pricing.image),
            max_completion_tokens=(top.max_completion_tokens if top else None) or None,
            context_length=(top.context_length if top else None) or listed.context_length,
        )

    def cost(
        self, prompt_tokens: int, completion_tokens: int, *, requests: int = 0, images: int = 0
    ) -> Decimal:
        """Sync list price of these tokens, requests and images."""
        return (
            prompt_tokens * self.prompt
            + completion_tokens * self.completion
            + requests * self.request
            + images * self.image
        )

    def per_million(self) -> str:
        """``"$0.15/$0.60 per 1M"``: prompt / completion price per million tokens."""
        return f"${_trim(self.prompt * _PER_MILLION)}/${_trim(self.completion * _PER_MILLION)} per 1M"

    def to_json(self) -> dict[str, Any]:
        """For the batch record: what a later try (the fetch after the wait) needs to price rows."""
        return {
            "model": self.model,
            "listed_as": self.listed_as,
            "prompt": str(self.prompt),
            "completion": str(self.completion),
            "request": str(self.request),
            "image": str(self.image),
            "max_completion_tokens": self.max_completion_tokens,
            "context_length": self.context_length,
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelPrice | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                model=str(data["model"]),
                listed_as=str(data["listed_as"]),
                prompt=_decimal(data["prompt"]),
                completion=_decimal(data["completion"]),
                request=_decimal(data.get("request")),
                image=_decimal(data.get("image")),
                max_completion_tokens=data.get("max_completion_tokens"),
                context_length=data.get("context_length"),
            )
        except (KeyError, TypeError):
            return None


def _trim(value: Decimal) -> str:
    """``0.15``, ``0.60``, ``10.00``, ``0.0375``: cents always, more digits only when they matter."""
    text = f"{value:.6f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def price_of(model: str, models: Sequence[Model]) -> ModelPrice | None:
    """*model*'s price in a ``/models`` listing: its own entry, else its base id's (variant suffix
    dropped), else ``None``."""
    by_id = {m.id: m for m in models}
    listed = by_id.get(model) or by_id.get(model.split(":", 1)[0])
    return ModelPrice.of(model, listed) if listed is not None else None


def fetch_price(hook: OpenRouterHook, model: str) -> ModelPrice | None:
    """*model*'s price from ``GET /models`` (one request)."""
    return price_of(model, hook.list_models())
