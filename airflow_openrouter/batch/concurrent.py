"""The ``concurrent`` engine: many chat completions sent from the worker at once.

Meant for models without a batch variant, for multimodal items, and for when minutes matter.
:func:`run_concurrently` pulls ``(custom_id, body)`` pairs from its input only when it can start them,
keeps at most ``max_concurrency`` requests in flight, spaces request starts evenly to
``requests_per_minute``, and yields one :class:`Outcome` per input item as soon as that item is settled.
The caller writes each outcome durably as it comes, so a retried task can skip what is already done.

* Retries happen inside each request, by the hook's ``RetryPolicy`` (429 with ``Retry-After``, 5xx,
  timeouts). An ``OpenRouterError`` that survives them becomes an error outcome; any other exception
  (a malformed body, a bug) propagates, and the requests still in flight are cancelled.
* Cost cap: once the billed cost (``spent_usd`` plus each completion's ``usage.cost``) reaches
  ``max_cost_usd``, no new request starts. Requests already in flight finish and are yielded (so the
  cap can be overshot by the cost of at most ``max_concurrency - 1`` requests); every item left in the
  input is then yielded unstarted, its ``error`` a :class:`CostCapReached`.
* Cancelling the consumer cancels the requests in flight. Close the generator when leaving the loop
  early (``async with contextlib.aclosing(run_concurrently(...)) as outcomes:``) so that happens at once.

No Airflow imports here; :func:`run_concurrently_sync` serves the operator's synchronous ``execute``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_openrouter.exceptions import CostCapReached, OpenRouterError

if TYPE_CHECKING:
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import ChatCompletion

log = logging.getLogger(__name__)

#: ``(custom_id, body)``: ``body`` holds the keyword arguments of ``hook.achat_completion``
#: (``messages``, ``model`` and any other body field), i.e. the ``body`` of a Batch API request line.
Request = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """How one item ended: exactly one of ``completion`` and ``error`` is set.

    :param latency_s: wall time of the request including the hook's retries (0 when not started).
    """

    custom_id: str
    completion: ChatCompletion | None = None
    error: OpenRouterError | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.completion is not None

    @property
    def started(self) -> bool:
        """``False`` for items the cost cap kept from starting: they are still to do."""
        return not isinstance(self.error, CostCapReached)

    @property
    def cost_usd(self) -> float:
        """The billed cost OpenRouter reported (0 for errors and when the response has no cost)."""
        usage = self.completion.usage if self.completion is not None else None
        return (usage.cost or 0.0) if usage is not None else 0.0


@dataclass
class Tally:
    """Counts and cost of the outcomes seen so far (``cost_usd`` is this run's, without ``spent_usd``)."""

    succeeded: int = 0
    failed: int = 0
    not_started: int = 0
    cost_usd: float = 0.0

    def add(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.succeeded += 1
        elif outcome.started:
            self.failed += 1
        else:
            self.not_started += 1
        self.cost_usd += outcome.cost_usd


class StartPacer:
    """Spaces starts at least ``60 / per_minute`` seconds apart on average, never in bursts.

    Starts are booked on a fixed grid so that a start woken a millisecond late does not push every
    later one back (the achieved rate would drift below the cap). A start later than a whole interval
    re-anchors the grid at that moment instead: the time lost is not caught up with a burst.
    """

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._clock = clock
        self._next = -math.inf

    def wait_s(self) -> float:
        """Seconds until the next start is allowed (0 when it is allowed now)."""
        return max(0.0, self._next - self._clock())

    def started(self) -> None:
        now = self._clock()
        on_grid = now - self._next < self._interval
        self._next = (self._next if on_grid else now) + self._interval


def run_concurrently(
    hook: OpenRouterHook,
    requests: Iterable[Request] | AsyncIterable[Request],
    *,
    max_concurrency: int = 16,
    requests_per_minute: float | None = None,
    max_cost_usd: float | None = None,
    spent_usd: float = 0.0,
) -> AsyncGenerator[Outcome, None]:
    """Send every request through ``hook.achat_completion`` and yield one :class:`Outcome` per item,
    in the order they settle. See the module docstring for the guarantees.

    :param requests: ``(custom_id, body)`` pairs; read lazily, so memory stays flat in their number.
    :param max_concurrency: requests in flight at most.
    :param requests_per_minute: cap on request starts (the hook's retries are not counted).
    :param max_cost_usd: start no new request once the billed cost reaches this.
    :param spent_usd: cost already billed for this work (by an earlier try), counted against the cap.
    :raises ValueError: at once, for an option out of range.
    :raises OpenRouterError: on the first iteration, when the connection cannot be resolved (no key).
    """
    _check_options(max_concurrency, requests_per_minute, max_cost_usd)
    return _run(
        hook, _aiter(requests), max_concurrency, StartPacer(requests_per_minute), max_cost_usd, spent_usd
    )


async def _run(
    hook: OpenRouterHook,
    pending: AsyncIterator[Request],
    max_concurrency: int,
    pacer: StartPacer,
    max_cost_usd: float | None,
    spent: float,
) -> AsyncGenerator[Outcome, None]:
    # Resolve the connection before the first start: otherwise the first requests, started on pace,
    # would all wait behind that lookup and reach the server together. A missing key fails the run here.
    await hook.asettings()
    in_flight: set[asyncio.Task[Outcome]] = set()
    exhausted = capped = False
    try:
        while True:
            capped = capped or (max_cost_usd is not None and spent >= max_cost_usd)
            can_start = not (exhausted or capped) and len(in_flight) < max_concurrency
            if can_start and pacer.wait_s() == 0:
                # Pull the next item only now, so at most max_concurrency bodies are held at once.
                request = await anext(pending, None)
                if request is None:
                    exhausted = True
                else:
                    in_flight.add(asyncio.create_task(_complete(hook, *request)))
                    pacer.started()
                continue
            if not in_flight and not can_start:
                break
            for outcome in await _settled(in_flight, timeout=pacer.wait_s() if can_start else None):
                spent += outcome.cost_usd
                yield outcome
        if capped:
            assert max_cost_usd is not None
            async for outcome in _not_started(pending, spent, max_cost_usd):
                yield outcome
    finally:
        await _cancel(in_flight)


def run_concurrently_sync(
    hook: OpenRouterHook,
    requests: Iterable[Request],
    on_outcome: Callable[[Outcome], None],
    *,
    max_concurrency: int = 16,
    requests_per_minute: float | None = None,
    max_cost_usd: float | None = None,
    spent_usd: float = 0.0,
) -> Tally:
    """:func:`run_concurrently` for synchronous callers: runs an event loop until every item is settled,
    handing each outcome to ``on_outcome`` as it arrives (on the loop's thread; the loop waits for it,
    which is the back-pressure a slow writer needs). The options are those of :func:`run_concurrently`.
    Closes the hook's async client for that loop at the end."""

    async def main() -> Tally:
        tally = Tally()
        try:
            async with aclosing(
                run_concurrently(
                    hook,
                    requests,
                    max_concurrency=max_concurrency,
                    requests_per_minute=requests_per_minute,
                    max_cost_usd=max_cost_usd,
                    spent_usd=spent_usd,
                )
            ) as outcomes:
                async for outcome in outcomes:
                    tally.add(outcome)
                    on_outcome(outcome)
        finally:
            await hook.aclose()
        return tally

    return asyncio.run(main())


# --- the pieces ------------------------------------------------------------------------------------


def _check_options(max_concurrency: int, per_minute: float | None, max_cost_usd: float | None) -> None:
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
    if per_minute is not None and per_minute <= 0:
        raise ValueError(f"requests_per_minute must be positive, got {per_minute!r}")
    if max_cost_usd is not None and max_cost_usd < 0:
        raise ValueError(f"max_cost_usd must not be negative, got {max_cost_usd!r}")


async def _aiter(requests: Iterable[Request] | AsyncIterable[Request]) -> AsyncIterator[Request]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


async def _complete(hook: OpenRouterHook, custom_id: str, body: Mapping[str, Any]) -> Outcome:
    started = time.perf_counter()
    try:
        completion = await hook.achat_completion(**body)
    except OpenRouterError as error:
        return Outcome(custom_id, error=error, latency_s=time.perf_counter() - started)
    return Outcome(custom_id, completion=completion, latency_s=time.perf_counter() - started)


async def _settled(in_flight: set[asyncio.Task[Outcome]], timeout: float | None) -> list[Outcome]:
    """Wait until a request settles or ``timeout`` passes; remove and return the settled ones.
    ``Task.result()`` re-raises an unexpected exception of a request here."""
    if not in_flight:
        await asyncio.sleep(timeout or 0)
        return []
    done, _ = await asyncio.wait(in_flight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    in_flight -= done
    return [task.result() for task in done]


async def _not_started(
    pending: AsyncIterator[Request], spent_usd: float, max_cost_usd: float
) -> AsyncIterator[Outcome]:
    reason = CostCapReached(spent_usd, max_cost_usd)
    count = 0
    async for custom_id, _ in pending:
        count += 1
        yield Outcome(custom_id, error=reason)
    if count:
        log.warning("%d items not started. %s", count, reason)


async def _cancel(in_flight: set[asyncio.Task[Outcome]]) -> None:
    for task in in_flight:
        task.cancel()
    # Wait for them so no request outlives the run (and no "Task was destroyed" warning is logged).
    await asyncio.gather(*in_flight, return_exceptions=True)
