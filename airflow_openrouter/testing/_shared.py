"""A few float64 cells that every process of one emulator reads: settings and spend.

With ``workers=1`` the cells are a private buffer; with more workers they live in a memory-mapped
anonymous file that the main process creates and passes to its worker processes by file descriptor, so
``set_latency()`` or ``advance()`` on the main process reach every worker at once, and each process's
spend is visible to all (a worker answers 402 as soon as the account is empty).

Each cell has one writer, so no lock is needed across processes: the main process writes the settings,
and every process adds its own charges to its own ``spend`` slot (aligned 8-byte stores are atomic on
the platforms the emulator runs on). The account's spend is the sum of the slots.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Any

_FIRST_SLOT = 8  # the settings below take cells 0-7; the spend slots follow, one per process


class _Cell:
    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, cells: SharedCells, owner: Any = None) -> float:
        return cells.values[self.index]

    def __set__(self, cells: SharedCells, value: float) -> None:
        cells.values[self.index] = value


class SharedCells:
    credits = _Cell(0)  # the account's total credits (USD)
    latency_ms = _Cell(1)
    latency_jitter_ms = _Cell(2)
    token_delay_ms = _Cell(3)
    clock_origin = _Cell(4)  # what a manual clock reads, before advance()
    clock_offset = _Cell(5)  # what advance() added
    faults_pending = _Cell(6)  # HTTP and chat faults queued: workers forward every request while > 0
    spend_base = _Cell(7)  # the slots' sum when the account was opened (reset): spent before, not now

    def __init__(self, processes: int = 1, fd: int | None = None) -> None:
        """Private cells (``fd`` None and one process), or the mapping of ``fd`` (created if None)."""
        self.processes = processes
        size = 8 * (_FIRST_SLOT + processes)
        self.fd: int | None = None
        self._map: mmap.mmap | None = None
        if fd is None and processes == 1:
            buffer: Any = bytearray(size)
        else:
            if fd is None:
                with tempfile.TemporaryFile() as backing:  # unlinked at once: nothing left on disk
                    fd = os.dup(backing.fileno())
                os.ftruncate(fd, size)
            self.fd = fd
            self._map = buffer = mmap.mmap(fd, size)
        self.values = memoryview(buffer).cast("d")

    def add_spend(self, slot: int, usd: float) -> None:
        index = _FIRST_SLOT + slot
        self.values[index] = self.values[index] + usd

    def spend(self) -> float:
        return sum(self.values[_FIRST_SLOT:])

    def close(self) -> None:
        self.values.release()
        if self._map is not None:
            self._map.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
