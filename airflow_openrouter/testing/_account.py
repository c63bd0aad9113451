"""Credits, spend and generation records of the (single) emulated account.

Every API key the emulator accepts shares one balance: tests care about "the key ran out of
credits", not about multi-tenant accounting. The balance and the spend live in the shared cells, so
with worker processes every process charges the same account (each its own spend slot).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from ._shared import SharedCells

DEFAULT_CREDITS = 100.0
# OpenRouter's daily quota of ``:free`` model requests for an account that bought at least $10 of credits.
FREE_MODEL_DAILY_LIMIT = 1000


class Account:
    def __init__(
        self,
        credits: float = DEFAULT_CREDITS,
        *,
        cells: SharedCells | None = None,
        slot: int = 0,
        owner: bool = True,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        """``slot``: this process's spend slot; ``owner``: this process (the main one) opens the account
        (a worker attaches to it); ``on_read``: called before generations are looked up."""
        self._lock = threading.Lock()
        self._cells = cells if cells is not None else SharedCells()
        self._slot = slot
        self._on_read = on_read or (lambda: None)
        if owner:
            self._cells.credits = credits
            # Spend already in the slots (before a reset) is not this account's.
            self._cells.spend_base = self._cells.spend()
        self._generations: dict[str, dict[str, Any]] = {}
        self._free_requests = 0

    @property
    def _usage(self) -> float:
        return self._cells.spend() - self._cells.spend_base

    @property
    def _total_credits(self) -> float:
        return self._cells.credits

    @property
    def usage(self) -> float:
        return round(self._usage, 12)

    @property
    def remaining(self) -> float:
        return self._total_credits - self._usage

    def set_credits(self, usd: float) -> None:
        """Make ``usd`` the remaining balance (spend so far is kept)."""
        with self._lock:
            self._cells.credits = self._usage + usd

    def add_credits(self, usd: float) -> None:
        with self._lock:
            self._cells.credits += usd

    def charge(self, usd: float) -> None:
        with self._lock:
            self._cells.add_spend(self._slot, usd)

    def record_generation(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._generations[record["id"]] = record
            if str(record.get("model", "")).endswith(":free"):
                self._free_requests += 1

    def generation(self, generation_id: str) -> dict[str, Any] | None:
        self._on_read()
        with self._lock:
            return self._generations.get(generation_id)

    def key_info(self, api_key: str) -> dict[str, Any]:
        """The ``data`` of ``GET /key``: the balance is modelled as the key's spending limit."""
        self._on_read()
        with self._lock:
            usage, limit, free_used = round(self._usage, 10), self._total_credits, self._free_requests
        remaining = round(limit - usage, 10)
        # The key's own limit is the one budget layer, so it is also the effective (binding) one.
        budget = {
            "scope": "key_limit",
            "budget_id": None,
            "guardrail_id": None,
            "include_byok": False,
            "limit_usd": limit,
            "spend_usd": usage,
            "remaining_usd": remaining,
            "reset_interval": None,
            "resets_at": None,
        }
        return {
            "label": key_label(api_key),
            "limit": limit,
            "limit_remaining": remaining,
            "limit_reset": None,
            "include_byok_in_limit": False,
            "budgets": [budget],
            "effective_budget": budget,
            # The emulator lives well inside one UTC day, so every window equals the total.
            "usage": usage,
            "usage_daily": usage,
            "usage_weekly": usage,
            "usage_monthly": usage,
            "byok_usage": 0.0,
            "byok_usage_daily": 0.0,
            "byok_usage_weekly": 0.0,
            "byok_usage_monthly": 0.0,
            "is_free_tier": False,
            "is_management_key": False,
            "is_provisioning_key": False,
            "creator_user_id": "user_emulator",
            "organization_id": None,
            "workspace_id": "workspace_emulator",
            "allowed_data_regions": ["global"],
            "free_model_daily_requests": {
                "limit": FREE_MODEL_DAILY_LIMIT,
                "used": free_used,
                "remaining": max(FREE_MODEL_DAILY_LIMIT - free_used, 0),
            },
            "expires_at": None,
            "rate_limit": {
                "requests": -1,
                "interval": "10s",
                "note": "This field is deprecated and safe to ignore.",
            },
        }

    def credits_info(self) -> dict[str, float]:
        return {"total_credits": self._total_credits, "total_usage": round(self._usage, 10)}


def key_label(api_key: str) -> str:
    """The masked label OpenRouter shows for a key (``sk-or-v1-abc...xyz``): never the whole key.

    A long key shows its first 12 and last 3 characters; a short one (an emulator test key) only its
    first and last 3, so that most of any key stays hidden.
    """
    if len(api_key) >= 32:
        return f"{api_key[:12]}...{api_key[-3:]}"
    return f"{api_key[:3]}...{api_key[-3:]}" if len(api_key) >= 12 else "..."


def iso_timestamp(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.timezone.utc).isoformat()
