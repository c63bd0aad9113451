"""One poll round, async, shared by the trigger, the sensor's poke and the operator's re-attach look.

**How a round polls.** Batches whose ``created_at`` is known are read from the list endpoint
(``GET /batches`` between their creation times): list objects carry ``results: null``, so a poll
never downloads the thousands of inline result rows ``GET /batches/{id}`` returns for a completed
batch, which would stall the triggerer's event loop. Only a batch the list does not show (its creation
time unknown, or not listed yet) is read with ``GET /batches/{id}``.

A round never outlives :meth:`~.watch.BatchWatch.round_budget` (``asyncio.wait_for``). A batch logs
at INFO only when its state or counts change, else at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from airflow_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from airflow_openrouter.batch.watch import BatchWatch
    from airflow_openrouter.types import Batch, BatchList

__all__ = ["AsyncBatchReader", "poll_once", "poll_round"]

_LIST_PAGE_SIZE = 100
_MAX_LIST_PAGES = 20


class AsyncBatchReader(Protocol):
    """The two hook methods a poll round uses."""

    async def aget_batch(self, batch_id: str) -> Batch: ...

    async def alist_batches(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        created_after: str | int | None = None,
        created_before: str | int | None = None,
    ) -> BatchList: ...


async def poll_round(hook: AsyncBatchReader, watch: BatchWatch, log: Any) -> None:
    """Poll every pending batch once, within :meth:`BatchWatch.round_budget` (see the module)."""
    pending = watch.pending_ids()
    answered: set[str] = set()
    try:
        await asyncio.wait_for(_poll(hook, watch, pending, answered, log), timeout=watch.round_budget())
    except asyncio.TimeoutError:
        cut = [i for i in pending if i not in answered]
        log.warning("The deadline passed while polling batch(es) %s.", ", ".join(cut))
        watch.observe_cut(cut)


async def _poll(
    hook: AsyncBatchReader, watch: BatchWatch, pending: list[str], answered: set[str], log: Any
) -> None:
    listed = [i for i in pending if watch.created_at.get(i)]
    if listed:
        await _poll_listed(hook, watch, listed, answered, log)
    for batch_id in (i for i in pending if i not in answered):
        try:
            _report(log, watch, watch.observe(await hook.aget_batch(batch_id)), batch_id)
        except OpenRouterError as exc:
            log.warning("Polling batch %s failed: %s", batch_id, exc)
            watch.observe_error(batch_id, exc)
        answered.add(batch_id)


async def _poll_listed(
    hook: AsyncBatchReader, watch: BatchWatch, ids: list[str], answered: set[str], log: Any
) -> None:
    """Read *ids* from the list endpoint, between their creation times (list objects carry no results).
    A batch the list does not show is left for ``GET /batches/{id}``."""
    created = [watch.created_at[i] or 0 for i in ids]
    wanted = set(ids)
    after: str | None = None
    try:
        for _ in range(_MAX_LIST_PAGES):
            page = await hook.alist_batches(
                limit=_LIST_PAGE_SIZE,
                after=after,
                created_after=min(created) - 1,
                created_before=max(created) + 1,
            )
            for batch in page.data:
                if batch.id in wanted:
                    wanted.discard(batch.id)
                    answered.add(batch.id)
                    _report(log, watch, watch.observe(batch), batch.id)
            if not wanted or not page.has_more or not page.last_id:
                return
            after = page.last_id
    except OpenRouterError as exc:
        log.warning("Listing batch(es) %s failed: %s", ", ".join(sorted(wanted)), exc)
        for batch_id in wanted:
            watch.observe_error(batch_id, exc)
            answered.add(batch_id)


def _report(log: Any, watch: BatchWatch, changed: bool, batch_id: str) -> None:
    # INFO only when something moved: a batch waiting a day at 30 s polls would log 2,880 lines.
    b = watch.snapshot(batch_id)
    level = logging.INFO if changed else logging.DEBUG
    log.log(level, "Batch %s: %s, %d of %d done, %d failed.", b.id, b.status, b.completed, b.total, b.failed)


def poll_once(hook: Any, watch: BatchWatch, log: Any) -> None:
    """:func:`poll_round` from synchronous code (a worker): on an event loop of its own, whose pooled
    client is closed after."""

    async def once() -> None:
        try:
            await poll_round(hook, watch, log)
        finally:
            await hook.aclose()

    asyncio.run(once())
