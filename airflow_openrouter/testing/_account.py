"""Credits, spend and generation records of the (single) emulated account.

Every API key the emulator accepts shares one balance: tests care about "the key ran out of
credits", not about multi-tenant accounting.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

DEFAULT_CREDITS = 100.0


class Account:
    def __init__(self, credits: float = DEFAULT_CREDITS) -> None:
        self._lock = threading.Lock()
        self._total_credits = credits
        self._usage = 0.0
        self._generations: dict[str, dict[str, Any]] = {}

    @property
    def remaining(self) -> float:
        with self._lock:
            return self._total_credits - self._usage

    def set_credits(self, usd: float) -> None:
        """Make ``usd`` the remaining balance (spend so far is kept)."""
        with self._lock:
            self._total_credits = self._usage + usd

    def add_credits(self, usd: float) -> None:
        with self._lock:
            self._total_credits += usd

    def charge(self, usd: float) -> None:
        with self._lock:
            self._usage += usd

    def record_generation(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._generations[record["id"]] = record

    def generation(self, generation_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._generations.get(generation_id)

    def key_info(self, api_key: str) -> dict[str, Any]:
        """The ``data`` of ``GET /key``: the balance is modelled as the key's spending limit."""
        with self._lock:
            usage, limit = round(self._usage, 10), self._total_credits
        return {
            "label": f"{api_key[:9]}...{api_key[-3:]}" if len(api_key) > 12 else api_key,
            "limit": limit,
            "limit_remaining": round(limit - usage, 10),
            "limit_reset": None,
            "include_byok_in_limit": False,
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
            "expires_at": None,
            "rate_limit": {
                "requests": -1,
                "interval": "10s",
                "note": "This field is deprecated and safe to ignore.",
            },
        }

    def credits_info(self) -> dict[str, float]:
        with self._lock:
            return {"total_credits": self._total_credits, "total_usage": round(self._usage, 10)}


def iso_timestamp(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.timezone.utc).isoformat()
