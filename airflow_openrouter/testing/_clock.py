"""Emulator time: the wall clock, or a manual clock that only tests move.

Batch lifecycles are computed from this clock on every read (there is no background task), so a
test with ``manual_clock=True`` drives a batch to completion with ``advance()`` instead of sleeping.
"""

from __future__ import annotations

import threading
import time


class Clock:
    def __init__(self, manual: bool = False) -> None:
        self._manual = manual
        # A manual clock starts at the real time so timestamps still look plausible.
        self._frozen_at = time.time()
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def manual(self) -> bool:
        return self._manual

    def now(self) -> float:
        with self._lock:
            base = self._frozen_at if self._manual else time.time()
            return base + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward; on a real clock this adds a permanent offset."""
        if seconds < 0:
            raise ValueError("the emulator clock cannot go backwards")
        with self._lock:
            self._offset += seconds
