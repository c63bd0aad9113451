"""Looking at batches, async: the scan every poll makes, and the poll round that feeds a watch with it.

**How a scan looks.** Batches whose ``created_at`` is known are read from the list endpoint
(``GET /batches`` between their creation times, 100 a page): list objects carry ``results: null``, so a
poll never downloads the thousands of inline result rows ``GET /batches/{id}`` returns for a completed
batch, which would stall the triggerer's event loop. Batches created far apart are listed in separate
windows (:data:`WINDOW_GAP_S`), so the pages in between -- other batches of the workspace -- are not
read. Only a batch the list does not show (its creation time unknown, or not listed yet) is read with
``GET /batches/{id}``. One scan serves any number of batches: the trigger's shared poller
(:mod:`.poller`) scans the batches of every trigger of a connection at once.

**A round** (:func:`poll_round`) feeds one :class:`~.watch.BatchWatch` with a scan of its pending
batches and never outlives :meth:`~.watch.BatchWatch.round_budget`; what it did not reach in time counts
as polled (``observe_cut``). A batch logs at INFO only when its state or counts change, else at DEBUG;
the per-call lines of the requests are DEBUG (a batch waiting a day at 30 s would log 2,880 of them).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from airflow_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from airflow_openrouter.batch.watch import BatchWatch
    from airflow_openrouter.types import Batch, BatchList

__all__ = ["Answers", "AsyncBatchReader", "feed", "poll_once", "poll_round", "scan", "scan_listed"]

LIST_PAGE_SIZE = 100  # the list endpoint's largest page
#: Pages a window may read beyond the ones its own batches fill: other batches of the workspace.
EXTRA_LIST_PAGES = 20
#: Batches created further apart than this are listed in separate windows.
WINDOW_GAP_S = 600
#: ``GET /batches/{id}`` reads at once, for the batches the list does not show.
BY_ID_CONCURRENCY = 8

#: What a scan saw of each batch: the batch, or the error reading it raised.
Answers = dict[str, "Batch | OpenRouterError"]


class AsyncBatchReader(Protocol):
    """The two hook methods a scan uses."""

    async def aget_batch(self, batch_id: str) -> Batch: ...

    async def alist_batches(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        created_after: str | int | None = None,
        created_before: str | int | None = None,
    ) -> BatchList: ...


async def scan(hook: AsyncBatchReader, wanted: Mapping[str, int | None], into: Answers) -> None:
    """Look at every batch of *wanted* (``id -> created_at``) once, answers going *into* as they come:
    through the list where the creation time is known, by id for the rest (see the module)."""
    await scan_listed(hook, wanted, into)
    await scan_by_id(hook, [i for i in wanted if i not in into], into)


async def scan_listed(hook: AsyncBatchReader, wanted: Mapping[str, int | None], into: Answers) -> None:
    """The batches of known creation time, from the list endpoint, window by window. A batch the list
    does not show is left out of *into*; a failed page answers its window's batches with the error."""
    for window in _windows(wanted):
        await _list_window(hook, window, wanted, into)


async def scan_by_id(hook: AsyncBatchReader, batch_ids: list[str], into: Answers) -> None:
    """``GET /batches/{id}`` of each, a few at a time."""
    gate = asyncio.Semaphore(BY_ID_CONCURRENCY)

    async def read(batch_id: str) -> None:
        async with gate:
            try:
                into[batch_id] = await hook.aget_batch(batch_id)
            except OpenRouterError as exc:
                into[batch_id] = exc

    await asyncio.gather(*(read(i) for i in batch_ids))


def _windows(wanted: Mapping[str, int | None]) -> list[list[str]]:
    """The batches of known creation time, in runs whose neighbours were created < WINDOW_GAP_S apart."""
    known = sorted((created, i) for i, created in wanted.items() if created)
    windows: list[list[str]] = []
    last = -math.inf
    for created, batch_id in known:
        if created - last > WINDOW_GAP_S:
            windows.append([])
        windows[-1].append(batch_id)
        last = created
    return windows


async def _list_window(
    hook: AsyncBatchReader, ids: list[str], wanted: Mapping[str, int | None], into: Answers
) -> None:
    created = [wanted[i] or 0 for i in ids]
    missing = set(ids)
    after: str | None = None
    try:
        for _ in range(math.ceil(len(ids) / LIST_PAGE_SIZE) + EXTRA_LIST_PAGES):
            page = await hook.alist_batches(
                limit=LIST_PAGE_SIZE,
                after=after,
                created_after=min(created) - 1,
                created_before=max(created) + 1,
            )
            for batch in page.data:
                if batch.id in missing:
                    missing.discard(batch.id)
                    into[batch.id] = batch
            if not missing or not page.has_more or not page.last_id:
                return
            after = page.last_id
    except OpenRouterError as exc:
        for batch_id in missing:
            into[batch_id] = exc


def feed(watch: BatchWatch, answers: Mapping[str, Batch | OpenRouterError], log: Any) -> None:
    """Hand what a scan saw of the watch's batches to the watch, logging what is worth a line."""
    failed: dict[int, tuple[OpenRouterError, list[str]]] = {}
    for batch_id in watch.pending_ids():
        answer = answers.get(batch_id)
        if answer is None:
            continue
        if isinstance(answer, OpenRouterError):
            failed.setdefault(id(answer), (answer, []))[1].append(batch_id)
            watch.observe_error(batch_id, answer)
        else:
            _report(log, watch, watch.observe(answer), batch_id)
    # One line per error, not per batch: a failed list page answers all of its batches with it.
    for error, batch_ids in failed.values():
        log.warning("Polling batch(es) %s failed: %s", ", ".join(batch_ids), error)


def _report(log: Any, watch: BatchWatch, changed: bool, batch_id: str) -> None:
    # INFO only when something moved: a batch waiting a day at 30 s polls would log 2,880 lines.
    b = watch.snapshot(batch_id)
    level = logging.INFO if changed else logging.DEBUG
    log.log(level, "Batch %s: %s, %d of %d done, %d failed.", b.id, b.status, b.completed, b.total, b.failed)


#: Something that looks at batches: awaiting ``look(wanted, into)`` fills *into* (see :func:`scan`).
Look = Callable[[Mapping[str, int | None], Answers], Awaitable[None]]


async def watch_round(look: Look, watch: BatchWatch, log: Any) -> None:
    """Feed *watch* with one *look* at its pending batches, within :meth:`BatchWatch.round_budget`."""
    pending = watch.pending_ids()
    answers: Answers = {}
    try:
        wanted = {i: watch.created_at.get(i) for i in pending}
        await asyncio.wait_for(look(wanted, answers), timeout=watch.round_budget())
    except asyncio.TimeoutError:
        feed(watch, answers, log)
        cut = [i for i in pending if i not in answers]
        log.warning("The deadline passed while polling batch(es) %s.", ", ".join(cut))
        watch.observe_cut(cut)
        return
    feed(watch, answers, log)


async def poll_round(hook: AsyncBatchReader, watch: BatchWatch, log: Any) -> None:
    """Poll every pending batch of *watch* once with *hook*, within its round budget (see the module)."""

    async def look(wanted: Mapping[str, int | None], into: Answers) -> None:
        await scan(hook, wanted, into)

    await watch_round(look, watch, log)


def poll_once(hook: Any, watch: BatchWatch, log: Any) -> None:
    """:func:`poll_round` from synchronous code (a worker): on an event loop of its own, whose pooled
    client is closed after."""

    from airflow_openrouter._transport.calls import CALL_LOG_LEVEL

    async def once() -> None:
        CALL_LOG_LEVEL.set(logging.DEBUG)  # this task's own context
        try:
            await poll_round(hook, watch, log)
        finally:
            await hook.aclose()

    asyncio.run(once())
