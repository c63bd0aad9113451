"""The chat operator's cost control: its ``openrouter_usage`` ledger, and its result cache.

**Ledger.** ``openrouter_usage`` carries the fields of a bulk row's ledger (:mod:`airflow_openrouter.
cost.ledger`), summed over every call of the task (repairs included): ``prompt_tokens``,
``completion_tokens``, ``total_tokens``, ``cached_tokens``, ``reasoning_tokens``, ``cost`` (billed),
``cost_details``, ``is_byok``, plus ``model`` (as served), ``provider``, ``generation_id`` (the last
call's), ``generation_ids``, ``latency_s``, ``try_number``, ``attempts`` and ``cached``.

**Cache.** With ``result_cache``, the key is the bulk engines' (:func:`~airflow_openrouter.cache.
chat_key_material`): model, the rendered messages, every request parameter, ``response_format``'s
schema, the user's provider routing and ``max_repair_attempts``. A hit returns the cached value
without a request (``cached: true``, ``cost`` 0, ``cost_saved`` the original cost, the original
generation id); a validated reply (or tool calls) is stored after the call. Failures are never cached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_openrouter.cost.ledger import cached_row_usage, row_usage, summed_usage

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.cache import CacheHit, ResultCache
    from airflow_openrouter.schemas import OutputSpec
    from airflow_openrouter.types import ChatCompletion

__all__ = ["ChatCache", "cached_usage", "chat_usage"]


def chat_usage(completions: Sequence[ChatCompletion], latency_s: float, try_number: int) -> dict[str, Any]:
    """The ``openrouter_usage`` XCom of the calls a task made."""
    last = completions[-1]
    usages = [u for u in (row_usage(c.usage) for c in completions) if u is not None]
    return {
        "model": last.model,
        "provider": last.provider,
        "generation_id": last.id,
        "generation_ids": [c.id for c in completions],
        **summed_usage(usages),
        "latency_s": round(latency_s, 3),
        "try_number": try_number,
        "attempts": len(completions),
        "cached": False,
    }


def cached_usage(hit: CacheHit, latency_s: float, try_number: int) -> dict[str, Any]:
    """The ``openrouter_usage`` XCom of a reply served from the cache (nothing was sent)."""
    entry = hit.entry
    return {
        "model": entry.get("model"),
        "provider": entry.get("provider"),
        "generation_id": entry.get("generation_id"),
        "generation_ids": list(entry.get("generation_ids") or [entry.get("generation_id")]),
        **cached_row_usage(entry.get("usage")),
        "latency_s": round(latency_s, 3),
        "try_number": try_number,
        "attempts": 0,
        "cached": True,
        "cached_at": hit.created_at,
    }


class ChatCache:
    """One chat request's entry in the result cache (see the module docstring)."""

    def __init__(
        self,
        root: str | ObjectStoragePath,
        *,
        model: str,
        body: Mapping[str, Any],
        provider: Mapping[str, Any] | None,
        spec: OutputSpec,
        max_repair_attempts: int,
        ttl: float | None,
        log: Any,
    ) -> None:
        from airflow_openrouter.cache import ResultCache, cache_key, chat_key_material

        self.root = root  # as the user gave it (an ObjectStoragePath may print without its host)
        self.cache: ResultCache = ResultCache(root, namespace=model, ttl=ttl)
        self.key = cache_key(
            chat_key_material(
                model=model, body=body, provider=provider, spec=spec, max_repair_attempts=max_repair_attempts
            )
        )
        self.log = log

    def get(self) -> CacheHit | None:
        from airflow_openrouter.batch.cached import READ_ERRORS, cache_read_error

        try:
            hit = self.cache.get(self.key)
        except READ_ERRORS as exc:  # the bulk engines' rule: say which cache, before anything is sent
            raise cache_read_error(self.root, exc) from exc
        if hit is not None and isinstance(hit.entry, Mapping) and hit.entry.get("status") == "succeeded":
            self.log.info(
                "Result cache %s: this request was answered before (generation %s); nothing is sent.",
                self.cache.directory,
                hit.entry.get("generation_id"),
            )
            return hit
        return None

    def put(self, value: Any, usage: Mapping[str, Any]) -> None:
        entry = {
            "status": "succeeded",
            "output": value,
            "provider": usage.get("provider"),
            "model": usage.get("model"),
            "generation_id": usage.get("generation_id"),
            "generation_ids": usage.get("generation_ids"),
            "usage": {k: usage.get(k) for k in _USAGE_FIELDS},
        }
        try:
            self.cache.put(self.key, entry)
        except Exception as exc:  # the reply is paid for and returned: a cache failure is not fatal
            self.log.warning(
                "Result cache %s: could not store the reply (%s: %s).",
                self.cache.directory,
                type(exc).__name__,
                exc,
            )


_USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "cost_details",
    "is_byok",
)
