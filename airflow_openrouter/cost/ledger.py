"""The exact per-row ledger: what each answer was billed, and what a run's rows add up to.

Every result row (both bulk engines) and the chat operator's ``openrouter_usage`` XCom carry the same
fields, from the answer's own ``usage`` (what OpenRouter billed, never a price table)::

    usage: {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
            "cost", "cost_details": {"upstream_inference_cost", ...}, "is_byok"}
    row:   "provider", "model" (as served), "generation_id", "cached"

A row served from the result cache has ``cached: true``, ``usage.cost`` 0 and ``usage.cost_saved``, the
cost it had when it was generated (its tokens and generation id are the original ones).

:class:`Ledger` sums rows for the manifest: tokens, billed cost split by row status, the sync
``list_price_usd`` of the same tokens (so the Batch API's discount and the cache's savings show beside
``cost_usd``), and ``cost_saved_usd``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_openrouter.cost.prices import ModelPrice
    from airflow_openrouter.types import ChatCompletion, Usage

__all__ = ["Ledger", "answer_fields", "cached_row_usage", "money", "row_usage", "summed_usage"]


def money(usd: float) -> float:
    """A sum of costs for the manifest: 10 significant digits (exact for billed figures, and short)."""
    return float(f"{usd:.10g}")


def row_usage(usage: Usage | None) -> dict[str, Any] | None:
    """A row's ``usage`` from an answer's (``None`` when the answer reported none)."""
    if usage is None:
        return None
    details = usage.cost_details.model_dump(exclude_none=True) if usage.cost_details else {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost": usage.cost,
        "cost_details": details or None,
        "is_byok": usage.is_byok,
    }


def answer_fields(completion: ChatCompletion) -> dict[str, Any]:
    """The row fields that say who answered: ``provider``, ``model`` as served, ``generation_id``."""
    return {
        "provider": completion.provider,
        "model": completion.model or None,
        "generation_id": completion.id or None,
    }


def cached_row_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """The usage of a row served from the cache: the original tokens, cost 0, ``cost_saved``."""
    original = dict(usage or {})
    return {**original, "cost": 0.0, "cost_saved": original.get("cost") or 0.0}


def summed_usage(usages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several answers' usages as one (the chat operator's calls, repairs included)."""
    total: dict[str, Any] = {}
    name: str
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"):
        total[name] = sum(u.get(name) or 0 for u in usages)
    costs = [u["cost"] for u in usages if u.get("cost") is not None]
    total["cost"] = sum(costs) if costs else None
    details: defaultdict[str, float] = defaultdict(float)
    for u in usages:
        for name, value in (u.get("cost_details") or {}).items():
            if isinstance(value, (int, float)):
                details[name] += value
    total["cost_details"] = dict(details) or None
    flags = [u.get("is_byok") for u in usages if u.get("is_byok") is not None]
    total["is_byok"] = any(flags) if flags else None
    return total


@dataclass
class Ledger:
    """The sums of rows, for the manifest (see the module docstring)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_by_status: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    upstream_inference_cost: float = 0.0
    byok_rows: int = 0
    cached_rows: int = 0
    cost_saved: float = 0.0

    def add(self, row: Mapping[str, Any]) -> None:
        usage = row.get("usage") or {}
        self.prompt_tokens += usage.get("prompt_tokens") or 0
        self.completion_tokens += usage.get("completion_tokens") or 0
        self.cached_tokens += usage.get("cached_tokens") or 0
        self.reasoning_tokens += usage.get("reasoning_tokens") or 0
        self.cost_by_status[row["status"]] += usage.get("cost") or 0.0
        if row.get("cached"):  # its cost details are those of the original generation, not of this run
            self.cached_rows += 1
            self.cost_saved += usage.get("cost_saved") or 0.0
            return
        self.upstream_inference_cost += (usage.get("cost_details") or {}).get(
            "upstream_inference_cost"
        ) or 0.0
        self.byok_rows += bool(usage.get("is_byok"))

    @property
    def cost(self) -> float:
        return sum(self.cost_by_status.values())

    def list_price(self, price: ModelPrice | None) -> float | None:
        """What the rows' tokens cost at the sync list price (``None`` when the price is unknown)."""
        if price is None:
            return None
        return money(float(price.cost(self.prompt_tokens, self.completion_tokens)))

    def manifest_fields(self, price: ModelPrice | None) -> dict[str, Any]:
        return {
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_by_status": {s: money(c) for s, c in self.cost_by_status.items() if c},
            "list_price_usd": self.list_price(price),
            "upstream_inference_cost_usd": money(self.upstream_inference_cost),
            "byok_rows": self.byok_rows,
            "cached": self.cached_rows,
            "cost_saved_usd": money(self.cost_saved),
        }
