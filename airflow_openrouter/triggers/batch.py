"""OpenRouterBatchTrigger: waits in the triggerer until a set of OpenRouter batches has finished.

Async only: the hook's async methods and an async connection lookup, so thousands of waiting batches
share the triggerer's event loop. The triggers of one connection poll through one shared poller
(:mod:`airflow_openrouter.batch.poller`): the batches of every trigger that is due are read with one
scan of the list endpoint, whose batch objects carry no results. A trigger never downloads results
(the worker fetches them), bounds every poll by the time left to its deadline, and yields exactly one
event: a :class:`~airflow_openrouter.batch.watch.BatchEvent` payload. It serializes only ids and plain
values; the poller lives in the triggerer's memory and is made again after a restart.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_openrouter import DEFAULT_CONN_ID
from airflow_openrouter.batch import watch as _watch
from airflow_openrouter.batch.options import check_poll_interval
from airflow_openrouter.batch.poller import shared_poller

__all__ = ["OpenRouterBatchTrigger"]


class OpenRouterBatchTrigger(BaseTrigger):
    """Poll OpenRouter batches until all are finished or the deadline passes.

    :param batch_ids: the batches to wait for.
    :param openrouter_conn_id: the connection (the key is looked up in the triggerer, never serialized).
    :param poll_interval: seconds between two polls (> 0).
    :param deadline: absolute wall-clock unix time at which to stop waiting and emit ``timeout``. Being
        absolute, it survives a triggerer restart (the trigger is rebuilt from :meth:`serialize`).
    :param max_consecutive_errors: poll errors of one batch tolerated in a row.
    :param created_at: ``{batch_id: unix creation time}`` where known: those batches are polled
        through the list endpoint, and a 404 counts as gone once they are older than the grace.
    """

    def __init__(
        self,
        *,
        batch_ids: Sequence[str],
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        max_consecutive_errors: int = _watch.MAX_CONSECUTIVE_POLL_ERRORS,
        created_at: Mapping[str, int | None] | None = None,
    ) -> None:
        super().__init__()
        self.batch_ids = list(batch_ids)
        self.openrouter_conn_id = openrouter_conn_id
        self.poll_interval = check_poll_interval(poll_interval)
        self.deadline = deadline
        self.max_consecutive_errors = max_consecutive_errors
        self.created_at = {k: v for k, v in (created_at or {}).items() if k in self.batch_ids}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": self.batch_ids,
                "openrouter_conn_id": self.openrouter_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_consecutive_errors": self.max_consecutive_errors,
                "created_at": self.created_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = _watch.BatchWatch(
            self.batch_ids,
            deadline=self.deadline,
            created_at=self.created_at,
            max_consecutive_errors=self.max_consecutive_errors,
            not_found_grace_s=_watch.NOT_FOUND_GRACE_S,
        )
        self.log.info("Waiting for OpenRouter batch(es) %s.", ", ".join(self.batch_ids))
        loop = asyncio.get_running_loop()
        async with shared_poller(self.openrouter_conn_id) as poller:
            due = loop.time()
            while (event := watch.outcome()) is None:
                await poller.poll(watch, self.log, due=due, interval=self.poll_interval)
                # +-10 % jitter: the poller serves the triggers due at about the same time in one round;
                # jitter keeps triggers deferred together from piling into one every time.
                pause = self.poll_interval * random.uniform(0.9, 1.1)
                due = loop.time() + max(0.0, min(pause, watch.seconds_left()))
        self.log.info("Batch(es) %s: %s", ", ".join(self.batch_ids), event.reason or f"{event.status}.")
        yield TriggerEvent(event.to_payload())

    async def on_kill(self) -> None:
        # Called by Airflow 3.3+ when a user marks the deferred task failed or successful, or clears
        # it. OpenRouter has no endpoint to cancel a batch (DELETE only removes finished ones), so all
        # that can be done is to say so, loudly.
        self.log.warning(
            "The task was stopped, but OpenRouter batch(es) %s keep running: OpenRouter has no batch cancel "
            "endpoint, so they will finish and be billed. A retry or clear of the task re-attaches to them "
            "instead of submitting again.",
            ", ".join(self.batch_ids),
        )
