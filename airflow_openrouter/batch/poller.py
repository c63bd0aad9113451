"""One poll loop per connection and event loop, shared by every batch trigger that waits on it.

A triggerer runs every deferred task's trigger in one event loop. Polling on their own, 1,000 waiting
triggers send 1,000 requests per interval and parse 1,000 answers on that loop; through a
:class:`SharedPoller` the triggers that are due at about the same time are answered by one
:func:`~.poll.scan` -- one list page per 100 batches.

The rules it keeps:

* **Nothing outlives the process.** The poller is made when the first trigger of a connection starts
  waiting (:func:`shared_poller`) and ends when the last one stops; a trigger rebuilt after a restart
  simply subscribes again. Triggers serialize nothing about it.
* **Each trigger keeps its own watch, deadline and log.** The poller only looks; the trigger feeds its
  own :class:`~.watch.BatchWatch` with the answers (:func:`~.poll.watch_round`), in its own task, so
  its log lines reach its own task log and its wait stays bounded by its own deadline.
* **No trigger waits for another's slow batch.** A request is answered as soon as the list pages have
  shown all of its batches; only a trigger whose batch the list does not show waits for its
  ``GET /batches/{id}``.
* **A poll may come a little early, never late.** A round serves every request due within
  :data:`MAX_EARLY_S` (at most a fifth of the trigger's interval): that is what lets triggers that
  deferred seconds apart share rounds.
* **Its own context.** The poll task starts in an empty ``contextvars`` context: the triggerer binds each
  trigger's identity to its task's context, and the poller's lines (retries, at DEBUG the calls) are
  nobody's task's. An unexpected error (not an ``OpenRouterError``) of a round is raised in every trigger
  it was serving, as it would have been in the trigger's own poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_openrouter.batch.poll import Answers, scan_by_id, scan_listed, watch_round

if TYPE_CHECKING:
    from airflow_openrouter.batch.watch import BatchWatch
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

__all__ = ["SharedPoller", "shared_poller"]

#: How much earlier than asked a poll may be served, to share a round (and at most EARLY_FRACTION of
#: the interval).
MAX_EARLY_S = 1.0
EARLY_FRACTION = 0.2
#: A round waits this long after its first request is due, for the triggers started together.
GATHER_S = 0.02
#: Triggers woken per loop iteration when a round delivers (see ``_deliver``).
DELIVER_AT_ONCE = 25

HookFactory = Callable[[str], "OpenRouterHook"]


def _default_hook(conn_id: str) -> OpenRouterHook:
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    return OpenRouterHook(openrouter_conn_id=conn_id)


@dataclass(eq=False)
class _Request:
    wanted: Mapping[str, int | None]
    due: float  # loop time
    early: float
    answers: Answers
    done: asyncio.Future[None]
    unanswered: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.unanswered = set(self.wanted)

    def settle(self, error: BaseException | None = None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)


class SharedPoller:
    """Looks at the batches of every trigger of one connection, on one event loop (see the module).

    :param conn_id: the OpenRouter connection whose batches it polls.
    :param hook_factory: makes the hook of a connection id (tests inject their own).
    """

    def __init__(self, conn_id: str, hook_factory: HookFactory = _default_hook) -> None:
        self.conn_id = conn_id
        self._hook_factory = hook_factory
        self._requests: list[_Request] = []
        self._wake = asyncio.Event()
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # for the curious (and the benchmark): scans made so far

    async def poll(self, watch: BatchWatch, log: Any, *, due: float, interval: float) -> None:
        """Feed *watch* with the first round at or after loop time *due* (a little earlier if that
        round is shared, see the module); bounded by the watch's round budget."""
        early = min(MAX_EARLY_S, EARLY_FRACTION * interval)

        def look(wanted: Mapping[str, int | None], into: Answers) -> asyncio.Future[None]:
            return self._request(wanted, into, due=due, early=early)

        await watch_round(look, watch, log)

    def _request(
        self, wanted: Mapping[str, int | None], into: Answers, *, due: float, early: float
    ) -> asyncio.Future[None]:
        """Queue a request; its future is done once every batch of it is answered. A plain future, no
        task: a thousand triggers wait on the poller at any time."""
        request = _Request(wanted, due, early, into, asyncio.get_running_loop().create_future())
        if not request.unanswered:
            request.settle()
            return request.done
        if self._task is None or self._task.done():  # never started, or ended by an error of its own
            self._start()
        self._requests.append(request)
        request.done.add_done_callback(lambda _: self._forget(request))
        self._wake.set()
        return request.done

    def _forget(self, request: _Request) -> None:
        if request.done.cancelled() and request in self._requests:  # the waiter gave up before a round
            self._requests.remove(request)

    # --- the poll task ---------------------------------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        # An empty context: not the first trigger's (see the module).
        self._task = contextvars.Context().run(
            loop.create_task, self._run(), name=f"openrouter-poller-{self.conn_id}"
        )

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # a round in flight serves nobody any more
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception as exc:
            # Never leave a trigger waiting for a poller that is gone.
            for request in self._requests:
                request.settle(exc)
            raise

    async def _serve(self) -> None:
        from airflow_openrouter._transport.calls import CALL_LOG_LEVEL

        CALL_LOG_LEVEL.set(logging.DEBUG)  # this task's own context: every poll's calls at DEBUG
        loop = asyncio.get_running_loop()
        async with self._hook_factory(self.conn_id) as hook:
            while self._users:
                self._wake.clear()
                if not self._requests:
                    await self._wake.wait()
                    continue
                wait = min(r.due for r in self._requests) - loop.time()
                if wait > 0:
                    # A new request may be due sooner: wake for it.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=wait)
                    continue
                await asyncio.sleep(GATHER_S)
                now = loop.time()
                served = [r for r in self._requests if r.due - r.early <= now]
                self._requests = [r for r in self._requests if r.due - r.early > now]
                await self._round(hook, served)

    async def _round(self, hook: OpenRouterHook, served: list[_Request]) -> None:
        self.rounds += 1
        wanted: dict[str, int | None] = {}
        for request in served:
            wanted.update(request.wanted)
        answers: Answers = {}
        try:
            await scan_listed(hook, wanted, answers)
            await self._deliver(served, answers)
            await scan_by_id(hook, [i for i in wanted if i not in answers], answers)
            await self._deliver(served, answers)
        except Exception as exc:  # a bug, or no such connection: the triggers' own polls would have raised it
            for request in served:
                request.settle(exc)

    @staticmethod
    async def _deliver(served: list[_Request], answers: Answers) -> None:
        settled = 0
        for request in served:
            if request.done.done():
                continue
            answered = [i for i in request.unanswered if i in answers]
            for batch_id in answered:
                request.answers[batch_id] = answers[batch_id]
            request.unanswered.difference_update(answered)
            if not request.unanswered:
                request.settle()
                settled += 1
                if settled % DELIVER_AT_ONCE == 0:
                    # Each settled request wakes its trigger on the next loop iteration: a thousand of
                    # them in one iteration would hold up every other task of the loop for tens of ms.
                    await asyncio.sleep(0)


_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedPoller]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def shared_poller(
    conn_id: str, hook_factory: HookFactory = _default_hook
) -> AsyncIterator[SharedPoller]:
    """The poller of *conn_id* on this event loop, for as long as the block runs (see the module)."""
    pollers = _POLLERS.setdefault(asyncio.get_running_loop(), {})
    poller = pollers.get(conn_id)
    if poller is None:
        poller = pollers[conn_id] = SharedPoller(conn_id, hook_factory)
    poller._users += 1
    try:
        yield poller
    finally:
        poller._users -= 1
        if not poller._users:
            if pollers.get(conn_id) is poller:
                del pollers[conn_id]
            await poller._stop()
