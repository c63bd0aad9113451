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
* Fail fast: after the first error that would come back for every item
  (:attr:`~airflow_openrouter.exceptions.OpenRouterError.systemic`: a bad key, no credits, a forbidden
  or unknown model), no new request starts either; the items left are yielded unstarted, their
  ``error`` that first error.
* Cancelling the consumer cancels the requests in flight. Close the generator when leaving the loop
  early (``async with contextlib.aclosing(run_concurrently(...)) as outcomes:``) so that happens at once.

:mod:`.concurrent_run` is the whole engine for one task run on top of this loop (checkpoint, cache,
estimate, recovery passes, results file, verdict). No Airflow imports here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_openrouter._transport.calls import CALL_LOG_LEVEL
from airflow_openrouter.exceptions import CostCapReached, OpenRouterAPIError, OpenRouterError

if TYPE_CHECKING:
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import ChatCompletion

log = logging.getLogger(__name__)

#: ``(custom_id, body)``: ``body`` holds the keyword arguments of ``hook.achat_completion``
#: (``messages``, ``model`` and any other body field), i.e. the ``body`` of a Batch API request line
#: (or of the request another :class:`~.endpoints.Endpoint` sends; ``custom_id`` is then the request's key).
Request = tuple[str, Mapping[str, Any]]
#: How a request is sent: ``await send(hook, body)`` returns its answer (``usage.cost`` is read).
Send = Callable[["OpenRouterHook", Mapping[str, Any]], Awaitable[Any]]


async def send_chat(hook: OpenRouterHook, body: Mapping[str, Any]) -> ChatCompletion:
    return await hook.achat_completion(**body)


@dataclass(frozen=True)
class Outcome:
    """How one item (or one request of several items) ended: exactly one of ``completion`` (the answer:
    a chat completion, or what the endpoint's ``send`` returned) and ``error`` is set.

    :param latency_s: wall time of the request including the hook's retries (0 when not started).
    :param started: ``False`` for items that were never sent (the cost cap, or an error that repeats
        for every item, stopped the run first); ``error`` says why.
    """

    custom_id: str
    completion: ChatCompletion | Any | None = None
    error: OpenRouterError | None = None
    latency_s: float = 0.0
    started: bool = True

    @property
    def ok(self) -> bool:
        return self.completion is not None

    @property
    def cost_usd(self) -> float:
        """The billed cost OpenRouter reported (0 for errors and when the response has no cost)."""
        usage = self.completion.usage if self.completion is not None else None
        return (usage.cost or 0.0) if usage is not None else 0.0


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
    send: Send = send_chat,
) -> AsyncGenerator[Outcome, None]:
    """Send every request through ``hook.achat_completion`` (or *send*) and yield one :class:`Outcome`
    per request, in the order they settle. See the module docstring for the guarantees.

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
        hook,
        _aiter(requests),
        max_concurrency,
        StartPacer(requests_per_minute),
        max_cost_usd,
        spent_usd,
        send,
    )


async def _run(
    hook: OpenRouterHook,
    pending: AsyncIterator[Request],
    max_concurrency: int,
    pacer: StartPacer,
    max_cost_usd: float | None,
    spent: float,
    send: Send,
) -> AsyncGenerator[Outcome, None]:
    # Resolve the connection before the first start: otherwise the first requests, started on pace,
    # would all wait behind that lookup and reach the server together. A missing key fails the run here.
    await hook.asettings()
    in_flight: set[asyncio.Task[Outcome]] = set()
    exhausted = False
    stop: OpenRouterError | None = None  # why no new request may start
    try:
        while True:
            if stop is None and max_cost_usd is not None and spent >= max_cost_usd:
                stop = CostCapReached(spent, max_cost_usd)
            can_start = not exhausted and stop is None and len(in_flight) < max_concurrency
            if can_start and pacer.wait_s() == 0:
                # Pull the next item only now, so at most max_concurrency bodies are held at once.
                request = await anext(pending, None)
                if request is None:
                    exhausted = True
                else:
                    in_flight.add(asyncio.create_task(_complete(hook, send, *request)))
                    pacer.started()
                continue
            if not in_flight and not can_start:
                break
            for outcome in await _settled(in_flight, timeout=pacer.wait_s() if can_start else None):
                spent += outcome.cost_usd
                if stop is None and outcome.error is not None and outcome.error.systemic:
                    log.error("Stopping: %s This error would repeat for every item.", outcome.error)
                    stop = outcome.error
                yield outcome
        if stop is not None:
            async for outcome in _not_started(pending, stop):
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
    send: Send = send_chat,
) -> OpenRouterAPIError | None:
    """:func:`run_concurrently` for synchronous callers: runs an event loop until every item is settled,
    handing each outcome to ``on_outcome`` as it arrives (on the loop's thread; the loop waits for it,
    which is the back-pressure a slow writer needs). The options are those of :func:`run_concurrently`.
    Closes the hook's async client for that loop at the end.

    :returns: the first error that stopped the run because it would repeat for every item, if any.
    """

    async def main() -> OpenRouterAPIError | None:
        first_systemic: OpenRouterAPIError | None = None
        try:
            async with aclosing(
                run_concurrently(
                    hook,
                    requests,
                    max_concurrency=max_concurrency,
                    requests_per_minute=requests_per_minute,
                    max_cost_usd=max_cost_usd,
                    spent_usd=spent_usd,
                    send=send,
                )
            ) as outcomes:
                async for outcome in outcomes:
                    error = outcome.error
                    if first_systemic is None and isinstance(error, OpenRouterAPIError) and error.systemic:
                        first_systemic = error
                    on_outcome(outcome)
        finally:
            await hook.aclose()
        return first_systemic

    return asyncio.run(main())


def send_job_requests(
    hook: OpenRouterHook,
    job: JobOptions,
    requests: Iterable[Request],
    on_outcome: Callable[[Outcome], None],
    *,
    spent_usd: float,
) -> OpenRouterAPIError | None:
    """:func:`run_concurrently_sync` within the job's limits, through its endpoint (a pass of
    :func:`run_job`, or a recovery pass)."""
    return run_concurrently_sync(
        hook,
        requests,
        on_outcome,
        max_concurrency=job.limits.max_concurrency,
        requests_per_minute=job.limits.requests_per_minute,
        max_cost_usd=job.limits.max_cost_usd,
        spent_usd=spent_usd,
        send=job.endpoint.send,
    )


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


async def _complete(hook: OpenRouterHook, send: Send, custom_id: str, body: Mapping[str, Any]) -> Outcome:
    CALL_LOG_LEVEL.set(logging.DEBUG)  # this request's task: one line per item only at DEBUG
    started = time.perf_counter()
    try:
        completion = await send(hook, body)
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


async def _not_started(pending: AsyncIterator[Request], reason: OpenRouterError) -> AsyncIterator[Outcome]:
    count = 0
    async for custom_id, _ in pending:
        count += 1
        yield Outcome(custom_id, error=reason, started=False)
    if count:
        log.warning("%d items not started. %s", count, reason)


async def _cancel(in_flight: set[asyncio.Task[Outcome]]) -> None:
    for task in in_flight:
        task.cancel()
    # Wait for them so no request outlives the run (and no "Task was destroyed" warning is logged).
    await asyncio.gather(*in_flight, return_exceptions=True)
