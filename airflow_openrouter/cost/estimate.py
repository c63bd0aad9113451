"""The cost of a run before it is sent: an upper bound, what it rests on, and the cap it must stay under.

A run's estimate (:class:`JobEstimate`) is the sum of its *passes* (:class:`PassEstimate`): the requests
one round sends, counted with the rule of :mod:`.tokens` and priced with :mod:`.prices` (times
:data:`~.prices.BATCH_PRICE_FACTOR` for the Batch API). Today a run has one pass; a later round of
requests (a recovery pass that resends failed rows) is one more :class:`PassEstimate` added with
:meth:`JobEstimate.with_pass`, and the total, the basis, the contributors and the cap check include it
without change. ``earlier_usd`` is what earlier tries of the same task run were billed (or, for batches
still running, their own estimate): the budget is per task run, across retries and clears.

:func:`check_cap` raises :class:`~airflow_openrouter.exceptions.OpenRouterCostLimitError` before anything
is sent when the upper bound exceeds ``max_cost_usd``, or when it cannot be known (a model without a
published price, a request without any completion bound).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_openrouter.cost.tokens import completion_bound, prompt_images, prompt_tokens

if TYPE_CHECKING:
    from airflow_openrouter.cost.prices import ModelPrice

__all__ = ["JobEstimate", "PassCounter", "PassEstimate", "check_cap"]

_TOKENIZER = "chars/4"
_TIMES, _AT_MOST = "\u00d7", "\u2264"  # the multiplication sign and "less than or equal to"
MAX_BASIS_CHARS = 200


@dataclass(frozen=True)
class PassEstimate:
    """One round of requests: how many, their prompt tokens and the most completion tokens they may use.

    :param bounds: ``(tokens per item, where that bound comes from) -> items``.
    :param unbounded: items whose completion has no known bound.
    :param largest: ``(custom_id, prompt tokens)`` of the longest prompt.
    :param price_factor: 0.5 for the Batch API (assumed, see :mod:`.prices`), 1 for sync requests.
    """

    name: str
    items: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    bounds: Mapping[tuple[int, str], int] = field(default_factory=dict)
    unbounded: int = 0
    largest: tuple[str, int] | None = None
    price_factor: Decimal = Decimal(1)

    def __add__(self, other: PassEstimate) -> PassEstimate:
        largest = max((x for x in (self.largest, other.largest) if x), key=lambda x: x[1], default=None)
        return replace(
            self,
            items=self.items + other.items,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            images=self.images + other.images,
            bounds=dict(Counter(self.bounds) + Counter(other.bounds)),
            unbounded=self.unbounded + other.unbounded,
            largest=largest,
        )

    def cost(self, price: ModelPrice) -> Decimal:
        return (
            price.cost(self.prompt_tokens, self.completion_tokens, requests=self.items, images=self.images)
            * self.price_factor
        )

    def parts(self, price: ModelPrice) -> list[tuple[Decimal, str]]:
        """``(cost, description)`` of what makes up this pass, the costliest first."""
        factor = self.price_factor
        parts = [
            (
                tokens * count * price.completion * factor,
                f"{count:,} item{'s' if count != 1 else ''} {_TIMES} {_AT_MOST} {tokens:,} completion tokens "
                f"({source})",
            )
            for (tokens, source), count in self.bounds.items()
        ]
        largest = f", the longest {self.largest[1]:,} (item {self.largest[0]!r})" if self.largest else ""
        parts.append(
            (self.prompt_tokens * price.prompt * factor, f"{self.prompt_tokens:,} prompt tokens{largest}")
        )
        if self.items and price.request:
            parts.append((self.items * price.request * factor, f"{self.items:,} requests"))
        if self.images and price.image:
            parts.append((self.images * price.image * factor, f"{self.images:,} images"))
        return sorted(parts, key=lambda p: p[0], reverse=True)

    def describe(self) -> str:
        """``"first pass: 24 items, 6,300 prompt + up to 7,200 completion tokens (max_tokens 300)"``
        (plain ASCII: the manifest is JSON, where other characters take 6 bytes)."""
        by_source: dict[str, list[int]] = {}
        for tokens, source in self.bounds:
            by_source.setdefault(source, []).append(tokens)
        bounds = [
            f"{source} {min(t):,}" + (f"-{max(t):,}" if len(t) > 1 else "") for source, t in by_source.items()
        ]
        if self.unbounded:
            bounds.append(f"{self.unbounded:,} without a bound")
        return (
            f"{self.name}: {self.items:,} item{'s' if self.items != 1 else ''}, {self.prompt_tokens:,} prompt + "
            f"up to {self.completion_tokens:,} completion tokens ({', '.join(bounds) or 'none'})"
        )


class PassCounter:
    """Counts the requests of one pass, one body at a time (the bodies are never kept)."""

    def __init__(self, name: str, price: ModelPrice | None, *, price_factor: Decimal = Decimal(1)) -> None:
        self._name = name
        self._price = price
        self._factor = price_factor
        self._items = self._prompt = self._completion = self._images = self._unbounded = 0
        self._bounds: Counter[tuple[int, str]] = Counter()
        self._largest: tuple[str, int] | None = None

    def add(self, custom_id: str, body: Mapping[str, Any]) -> None:
        prompt = prompt_tokens(body)
        price = self._price
        bound = completion_bound(
            body,
            model_max_completion=price.max_completion_tokens if price else None,
            context_length=price.context_length if price else None,
            prompt=prompt,
        )
        self._items += 1
        self._prompt += prompt
        self._images += prompt_images(body)
        if bound.tokens is None:
            self._unbounded += 1
        else:
            self._completion += bound.tokens
            self._bounds[(bound.tokens, bound.source)] += 1
        if self._largest is None or prompt > self._largest[1]:
            self._largest = (custom_id, prompt)

    def result(self) -> PassEstimate:
        return PassEstimate(
            name=self._name,
            items=self._items,
            prompt_tokens=self._prompt,
            completion_tokens=self._completion,
            images=self._images,
            bounds=dict(self._bounds),
            unbounded=self._unbounded,
            largest=self._largest,
            price_factor=self._factor,
        )


@dataclass(frozen=True)
class JobEstimate:
    """A run's estimated cost: its passes at the model's price, plus what earlier tries were billed.

    :param price: ``None`` when ``/models`` does not list the model (or could not be read).
    :param cached: items answered from the result cache (not sent, not in any pass).
    :param price_note: why the price is what it is (an assumption, a base id, an unknown model).
    """

    model: str
    price: ModelPrice | None
    passes: tuple[PassEstimate, ...] = ()
    earlier_usd: float = 0.0
    cached: int = 0
    price_note: str | None = None

    def with_pass(self, extra: PassEstimate) -> JobEstimate:
        """This estimate plus one more round of requests."""
        return replace(self, passes=(*self.passes, extra))

    @property
    def items(self) -> int:
        return sum(p.items for p in self.passes)

    @property
    def known(self) -> bool:
        """Whether the upper bound is known: a price, and a completion bound for every item."""
        return self.price is not None and not any(p.unbounded for p in self.passes)

    @property
    def passes_usd(self) -> float | None:
        """The upper bound of what the passes may cost (``None`` when it cannot be known)."""
        if not self.known:
            return None
        assert self.price is not None
        return float(sum((p.cost(self.price) for p in self.passes), Decimal(0)))

    @property
    def total_usd(self) -> float | None:
        """The upper bound for the task run: the passes plus what earlier tries were billed."""
        passes = self.passes_usd
        return None if passes is None else float(f"{passes + self.earlier_usd:.10g}")

    def basis(self) -> str:
        """What the estimate rests on, in one line (the manifest's ``estimate_basis``)."""
        sections = [p.describe() for p in self.passes if p.items] or ["nothing to send"]
        sections.append(f"tokens = {_TOKENIZER}")
        if self.price is not None:
            sections.append(self.price.per_million())
        if self.price_note:
            sections.append(self.price_note)
        if self.cached:
            sections.append(f"{self.cached:,} from the result cache")
        if self.earlier_usd:
            sections.append(f"+${self.earlier_usd:.6f} billed by earlier tries")
        basis = "; ".join(sections)
        return basis if len(basis) <= MAX_BASIS_CHARS else basis[: MAX_BASIS_CHARS - 3] + "..."

    def contributors(self, limit: int = 4) -> list[str]:
        """The largest parts of the total, costliest first: ``"24 items (times) (at most) 4,096
        completion tokens (max_tokens) = $0.0590"``."""
        if self.price is None:
            return []
        parts = [part for p in self.passes for part in p.parts(self.price)]
        if self.earlier_usd:
            parts.append((Decimal(str(self.earlier_usd)), "billed by earlier tries of this task run"))
        parts.sort(key=lambda p: p[0], reverse=True)
        return [f"{text} = ${float(cost):.4f}" for cost, text in parts[:limit] if cost or text]

    def summary(self) -> dict[str, Any]:
        """The manifest's estimate fields."""
        return {"estimated_cost_usd": self.total_usd, "estimate_basis": self.basis()}


def check_cap(estimate: JobEstimate, max_cost_usd: float | None, *, verb: str = "sent") -> None:
    """Raise :class:`~airflow_openrouter.exceptions.OpenRouterCostLimitError` when the estimate's upper
    bound exceeds *max_cost_usd* or cannot be known; nothing has been sent yet (*verb*: "sent",
    "submitted")."""
    from airflow_openrouter.exceptions import OpenRouterCostLimitError

    if max_cost_usd is None or not estimate.items:
        return
    total = estimate.total_usd
    if total is None:
        if estimate.price is None:
            why = (
                f"the price of {estimate.model!r} is unknown ({estimate.price_note or 'not in /models'}). "
                "Check the model id on openrouter.ai/models, or leave max_cost_usd unset to run uncapped"
            )
        else:
            why = (
                "some requests have no completion bound (no max_tokens, and /models gives the model no "
                "max_completion_tokens or context length). Set max_tokens"
            )
        raise OpenRouterCostLimitError(
            f"max_cost_usd=${max_cost_usd:g} cannot be checked, so nothing was {verb}: {why}.",
            estimate_usd=None,
            max_cost_usd=max_cost_usd,
            contributors=[],
        )
    if total <= max_cost_usd:
        return
    contributors = estimate.contributors()
    raise OpenRouterCostLimitError(
        f"The estimated cost of this run, up to ${total:.4f}, exceeds max_cost_usd=${max_cost_usd:g}, so "
        f"nothing was {verb}. Largest contributors: {'; '.join(contributors)}. Basis: {estimate.basis()}. "
        "Set a lower max_tokens, send fewer items, or raise max_cost_usd.",
        estimate_usd=total,
        max_cost_usd=max_cost_usd,
        contributors=contributors,
    )
