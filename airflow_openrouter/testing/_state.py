"""The mutable state one emulator instance shares between its HTTP app and its Python API."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ._account import Account
from ._batch_submit import MAX_BATCH_REQUESTS
from ._batches import BatchStore
from ._clock import Clock
from ._faults import FaultBook
from ._journal import Journal


@dataclass
class Latency:
    """Per-request delay: ``ms`` plus a uniform ``jitter_ms``; changed live by ``set_latency``."""

    ms: float = 0.0
    jitter_ms: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, ms: float, jitter_ms: float = 0.0) -> None:
        if ms < 0 or jitter_ms < 0:
            raise ValueError("latency must be non-negative")
        with self._lock:
            self.ms, self.jitter_ms = ms, jitter_ms

    def sample_seconds(self) -> float:
        with self._lock:
            ms, jitter = self.ms, self.jitter_ms
        return (ms + (random.uniform(0, jitter) if jitter else 0.0)) / 1000


class EmulatorState:
    def __init__(
        self,
        *,
        api_keys: Iterable[str] | None,
        latency_ms: float,
        latency_jitter_ms: float,
        token_delay_ms: float,
        batch_durations: Sequence[float],
        manual_clock: bool,
        max_batch_requests: int = MAX_BATCH_REQUESTS,
        batch_expiry_hours: Mapping[str, float | None] | None = None,
    ) -> None:
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.max_batch_requests = max_batch_requests
        self.batch_expiry_hours = dict(batch_expiry_hours or {})
        self._initial = (latency_ms, latency_jitter_ms, token_delay_ms, tuple(batch_durations), manual_clock)
        self.latency = Latency()
        self.reset()

    def reset(self) -> None:
        """Back to the state right after construction (the HTTP app reads these attributes per request)."""
        latency_ms, latency_jitter_ms, token_delay_ms, batch_durations, manual_clock = self._initial
        self.latency.set(latency_ms, latency_jitter_ms)
        self.token_delay_s = token_delay_ms / 1000
        self.clock = Clock(manual=manual_clock)
        self.account = Account()
        self.journal = Journal()
        self.faults = FaultBook()
        self.batches = BatchStore(self.clock, self.account, batch_durations, self.batch_expiry_hours)
