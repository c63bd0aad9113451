"""What a bulk engine says while it works: a progress line every so often, and one summary line.

The per-call lines of the requests are DEBUG (:data:`~airflow_openrouter._transport.calls.CALL_LOG_LEVEL`):
10,000 items would be 10,000 lines. Instead :class:`Progress` logs at INFO every :data:`EVERY_S` seconds
or every :data:`EVERY_FRACTION` of the items, whichever comes first (but not twice within
:data:`MIN_GAP_S`) -- done, failed, in flight, rate, cost so far, ETA -- and :meth:`Progress.summary`
one line at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["EVERY_FRACTION", "EVERY_S", "MIN_GAP_S", "Progress"]

EVERY_S = 10.0
EVERY_FRACTION = 0.05
#: A 5 % mark logs only this long after the last line: 24 items done in 0.1 s need no 20 lines.
MIN_GAP_S = 1.0


class Progress:
    """Counts what an engine settled and logs a line when one is due (see the module).

    :param what: what is counted, for the lines (``"items"``, ``"rows"``).
    :param total: how many there will be (``None``: unknown, no ETA).
    :param log: the task's logger.
    :param in_flight: whether the engine has items in flight (the lines then say how many).
    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        log: Any,
        *,
        in_flight: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.tracks_in_flight = in_flight
        self.total = total
        self.log = log
        self.clock = clock
        self.done = 0
        self.failed = 0
        self.in_flight = 0
        self.cost_usd = 0.0
        self._started = clock()
        self._last_line = self._started
        self._step = max(1, int((total or 0) * EVERY_FRACTION)) if total else None
        self._next_mark = self._step

    def started(self) -> None:
        """One item is on its way (it counts as in flight until it settles)."""
        self.in_flight += 1

    def settled(self, *, ok: bool, cost_usd: float = 0.0) -> None:
        """One item settled: answered (*ok*) or not; *cost_usd* billed for it."""
        self.in_flight = max(0, self.in_flight - 1)
        self.done += 1
        self.failed += not ok
        self.cost_usd += cost_usd
        now = self.clock()
        since = now - self._last_line
        at_mark = self._next_mark is not None and self.done >= self._next_mark
        if since >= EVERY_S or (at_mark and since >= MIN_GAP_S):
            self._line(now)

    def _line(self, now: float) -> None:
        self._last_line = now
        if self._step is not None:
            while self._next_mark is not None and self.done >= self._next_mark:
                self._next_mark += self._step
        rate = self.done / max(now - self._started, 1e-9)
        of = f" of {self.total:,}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {_duration(max(0, self.total - self.done) / rate)}"
        in_flight = f", {self.in_flight} in flight" if self.tracks_in_flight else ""
        self.log.info(
            "Progress: %s%s %s done (%s failed)%s, %.1f/s, $%.4f so far%s.",
            f"{self.done:,}",
            of,
            self.what,
            f"{self.failed:,}",
            in_flight,
            rate,
            self.cost_usd,
            eta,
        )

    def summary(self) -> None:
        """The one line at the end: how many, how fast, how many failed, what it cost."""
        took = self.clock() - self._started
        self.log.info(
            "Done: %s %s in %s (%.1f/s), %s failed, $%.4f.",
            f"{self.done:,}",
            self.what,
            _duration(took),
            self.done / max(took, 1e-9),
            f"{self.failed:,}",
            self.cost_usd,
        )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"
