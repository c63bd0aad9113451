"""The mutable state one emulator instance shares between its HTTP app and its Python API."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence

from ._account import Account
from ._batch_submit import MAX_BATCH_REQUESTS
from ._batches import BatchStore
from ._clock import Clock
from ._faults import FaultBook
from ._journal import Journal
from ._shared import SharedCells


class Latency:
    """Per-request delay: ``ms`` plus a uniform ``jitter_ms``; changed live by ``set_latency`` (in the
    shared cells, so every worker process follows)."""

    def __init__(self, cells: SharedCells) -> None:
        self._cells = cells

    @property
    def ms(self) -> float:
        return self._cells.latency_ms

    @property
    def jitter_ms(self) -> float:
        return self._cells.latency_jitter_ms

    def set(self, ms: float, jitter_ms: float = 0.0) -> None:
        if ms < 0 or jitter_ms < 0:
            raise ValueError("latency must be non-negative")
        self._cells.latency_jitter_ms = jitter_ms
        self._cells.latency_ms = ms

    def sample_seconds(self) -> float:
        ms, jitter = self._cells.latency_ms, self._cells.latency_jitter_ms
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
        cells: SharedCells | None = None,
    ) -> None:
        """``cells``: shared with worker processes (see ``_workers``); private ones by default."""
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.max_batch_requests = max_batch_requests
        self.batch_expiry_hours = dict(batch_expiry_hours or {})
        self.manual_clock = manual_clock
        self.cells = cells if cells is not None else SharedCells()
        self._initial = (latency_ms, latency_jitter_ms, token_delay_ms, tuple(batch_durations))
        self.latency = Latency(self.cells)
        # Called before the journal or the generations are read: collects what worker processes sent.
        self.collect: Callable[[], None] = lambda: None
        self.reset()

    @property
    def token_delay_s(self) -> float:
        return self.cells.token_delay_ms / 1000

    @token_delay_s.setter
    def token_delay_s(self, seconds: float) -> None:
        self.cells.token_delay_ms = seconds * 1000

    def reset(self) -> None:
        """Back to the state right after construction (the HTTP app reads these attributes per request)."""
        self.collect()  # what workers sent before the reset belongs to the old journal
        latency_ms, latency_jitter_ms, token_delay_ms, batch_durations = self._initial
        self.latency.set(latency_ms, latency_jitter_ms)
        self.token_delay_s = token_delay_ms / 1000
        self.clock = Clock(manual=self.manual_clock, cells=self.cells)
        self.account = Account(cells=self.cells, on_read=lambda: self.collect())
        self.journal = Journal(on_read=lambda: self.collect())
        self.faults = FaultBook(self.cells)
        self.batches = BatchStore(self.clock, self.account, batch_durations, self.batch_expiry_hours)
