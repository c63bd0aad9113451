"""Emulator time: the wall clock, or a manual clock that only tests move.

Batch lifecycles are computed from this clock on every read (there is no background task), so a
test with ``manual_clock=True`` drives a batch to completion with ``advance()`` instead of sleeping.
The clock's origin and offset live in the shared cells, so worker processes read the same time.
"""

from __future__ import annotations

import threading
import time

from ._shared import SharedCells


class Clock:
    def __init__(self, manual: bool = False, cells: SharedCells | None = None, *, owner: bool = True) -> None:
        """``owner``: this process starts the clock (a worker process attaches to the main's)."""
        self._manual = manual
        self._cells = cells if cells is not None else SharedCells()
        self._lock = threading.Lock()
        if owner:
            # A manual clock starts at the real time so timestamps still look plausible.
            self._cells.clock_origin = time.time()
            self._cells.clock_offset = 0.0

    @property
    def manual(self) -> bool:
        return self._manual

    def now(self) -> float:
        cells = self._cells
        return (cells.clock_origin if self._manual else time.time()) + cells.clock_offset

    def advance(self, seconds: float) -> None:
        """Move time forward; on a real clock this adds a permanent offset."""
        if seconds < 0:
            raise ValueError("the emulator clock cannot go backwards")
        with self._lock:
            self._cells.clock_offset += seconds
