"""The shared poller, against a scripted hook: who waits for whom, what a round raises, whose context it
runs in, and how scans cut the list into windows. The triggers' behaviour against the emulator is in
``tests/triggers/test_batch.py``."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest

from airflow_openrouter.batch import poller as poller_module
from airflow_openrouter.batch.poll import WINDOW_GAP_S, scan
from airflow_openrouter.batch.poller import SharedPoller, shared_poller
from airflow_openrouter.batch.watch import BatchWatch
from airflow_openrouter.exceptions import OpenRouterServerError
from airflow_openrouter.types import Batch, BatchList

CREATED = 1_800_000_000
log = logging.getLogger("tests.poller")


def batch(batch_id: str, status: str = "in_progress", created_at: int | None = CREATED) -> Batch:
    return Batch.model_validate(
        {"id": batch_id, "status": status, "created_at": created_at, "request_counts": {"total": 1}}
    )


class ScriptedHook:
    """The two read methods of the hook, over a dict of batches, newest first, 100 a page."""

    def __init__(self, batches: dict[str, Batch]) -> None:
        self.batches = batches
        self.lists: list[dict[str, Any]] = []
        self.gets: list[str] = []
        self.get_gate: asyncio.Event | None = None  # when set, GET /batches/{id} waits for it
        self.fail_lists: list[BaseException] = []
        self.contexts: list[Any] = []
        self.closed = False

    async def __aenter__(self) -> ScriptedHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    async def alist_batches(self, **params: Any) -> BatchList:
        self.lists.append(params)
        self.contexts.append(MARK.get())
        await asyncio.sleep(0)
        if self.fail_lists:
            raise self.fail_lists.pop(0)
        listed = sorted(
            (
                b
                for b in self.batches.values()
                if b.created_at and params["created_after"] < b.created_at < params["created_before"]
            ),
            key=lambda b: (-(b.created_at or 0), b.id),
        )
        if params.get("after"):
            listed = listed[[b.id for b in listed].index(params["after"]) + 1 :]
        page = listed[: params["limit"]]
        return BatchList(data=page, has_more=len(listed) > len(page), last_id=page[-1].id if page else None)

    async def aget_batch(self, batch_id: str) -> Batch:
        self.gets.append(batch_id)
        if self.get_gate is not None:
            await self.get_gate.wait()
        return self.batches[batch_id]


MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="none")


def watch_of(*batch_ids: str, created: int | None = CREATED, deadline: float = 1e12) -> BatchWatch:
    return BatchWatch(list(batch_ids), deadline=deadline, created_at={i: created for i in batch_ids})


def test_triggers_due_together_share_one_list_request():
    hook = ScriptedHook({f"b{i}": batch(f"b{i}") for i in range(250)})
    poller = SharedPoller("conn", lambda conn_id: hook)  # type: ignore[arg-type,return-value]
    watches = [watch_of(f"b{i}") for i in range(250)]

    async def main() -> None:
        poller._users = 1
        now = asyncio.get_running_loop().time()
        await asyncio.gather(*(poller.poll(w, log, due=now, interval=5) for w in watches))
        await poller._stop()

    asyncio.run(main())

    assert poller.rounds == 1 and len(hook.lists) == 3  # 250 batches: three pages, one round
    assert hook.gets == []
    assert all(w.snapshot(w.batch_ids[0]).status == "in_progress" for w in watches)


def test_a_request_due_later_than_the_early_margin_waits_for_its_own_round():
    hook = ScriptedHook({"a": batch("a"), "b": batch("b")})
    poller = SharedPoller("conn", lambda conn_id: hook)  # type: ignore[arg-type,return-value]

    async def main() -> list[int]:
        poller._users = 1
        now = asyncio.get_running_loop().time()
        rounds = []

        async def poll(w: BatchWatch, due: float) -> None:
            await poller.poll(w, log, due=due, interval=1.0)  # early margin: 0.2 s
            rounds.append(poller.rounds)

        await asyncio.gather(
            poll(watch_of("a"), now), poll(watch_of("b"), now + 0.15), poll(watch_of("a"), now + 0.5)
        )
        await poller._stop()
        return rounds

    assert asyncio.run(main()) == [1, 1, 2]  # b was 0.15 s early, the last one 0.5 s: a round of its own


def test_no_trigger_waits_for_another_ones_batch_read_by_id():
    """A batch the list does not show is read by id; the triggers the list answered do not wait for it."""
    hook = ScriptedHook({"listed": batch("listed"), "unlisted": batch("unlisted", created_at=None)})
    hook.get_gate = asyncio.Event()
    poller = SharedPoller("conn", lambda conn_id: hook)  # type: ignore[arg-type,return-value]
    listed, unlisted = watch_of("listed"), watch_of("unlisted", created=None)

    async def main() -> None:
        poller._users = 1
        now = asyncio.get_running_loop().time()
        slow = asyncio.create_task(poller.poll(unlisted, log, due=now, interval=5))
        await poller.poll(listed, log, due=now, interval=5)
        assert listed.polled_once() and not slow.done()  # answered while the other is still being read
        hook.get_gate.set()
        await slow
        await poller._stop()

    asyncio.run(main())

    assert hook.gets == ["unlisted"] and unlisted.polled_once()


def test_two_triggers_waiting_for_the_same_batch_are_both_answered():
    hook = ScriptedHook({"a": batch("a", "completed")})
    poller = SharedPoller("conn", lambda conn_id: hook)  # type: ignore[arg-type,return-value]
    first, second = watch_of("a"), watch_of("a")

    async def main() -> None:
        poller._users = 1
        now = asyncio.get_running_loop().time()
        await asyncio.gather(
            poller.poll(first, log, due=now, interval=5), poller.poll(second, log, due=now, interval=5)
        )
        await poller._stop()

    asyncio.run(main())

    assert first.outcome().status == second.outcome().status == "completed"  # type: ignore[union-attr]
    assert len(hook.lists) == 1


def test_a_waiter_past_its_deadline_gives_up_without_stopping_the_round():
    hook = ScriptedHook({"slow": batch("slow", created_at=None), "fast": batch("fast")})
    hook.get_gate = asyncio.Event()
    poller = SharedPoller("conn", lambda conn_id: hook)  # type: ignore[arg-type,return-value]
    import time

    late = watch_of("slow", created=None, deadline=time.time() + 0.2)

    async def main() -> None:
        poller._users = 1
        now = asyncio.get_running_loop().time()
        await poller.poll(late, log, due=now, interval=5)  # its deadline passes while GET waits
        assert late.outcome().status == "timeout"  # type: ignore[union-attr]
        hook.get_gate.set()
        fast = watch_of("fast")
        await poller.poll(fast, log, due=asyncio.get_running_loop().time(), interval=5)
        assert fast.polled_once()
        await poller._stop()

    asyncio.run(main())


def test_an_unexpected_error_of_a_round_reaches_every_trigger_it_served_and_the_next_round_works():
    hook = ScriptedHook({"a": batch("a"), "b": batch("b")})
    hook.fail_lists = [RuntimeError("a bug in a round")]
    poller = SharedPoller("conn", lambda conn_id: hook)  # type: ignore[arg-type,return-value]

    async def main() -> list[Any]:
        poller._users = 1
        now = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            poller.poll(watch_of("a"), log, due=now, interval=5),
            poller.poll(watch_of("b"), log, due=now, interval=5),
            return_exceptions=True,
        )
        again = watch_of("a")
        await poller.poll(again, log, due=asyncio.get_running_loop().time(), interval=5)
        await poller._stop()
        return [*results, again.polled_once()]

    first, second, recovered = asyncio.run(main())
    assert isinstance(first, RuntimeError) and first is second
    assert recovered is True


def test_a_failed_list_page_is_an_error_for_each_of_its_batches_and_one_warning_per_trigger(caplog):
    hook = ScriptedHook({"a": batch("a"), "b": batch("b")})
    hook.fail_lists = [OpenRouterServerError("Upstream unavailable (HTTP 502).", status=502)]
    poller = SharedPoller("conn", lambda conn_id: hook)  # type: ignore[arg-type,return-value]
    watch = watch_of("a", "b")

    async def main() -> None:
        poller._users = 1
        await poller.poll(watch, log, due=asyncio.get_running_loop().time(), interval=5)
        await poller._stop()

    with caplog.at_level(logging.WARNING, logger="tests.poller"):
        asyncio.run(main())

    assert watch.polled_once() and watch.outcome() is None  # transient: waited out
    assert hook.gets == []  # not read by id instead: the list answered (with an error)
    warnings = [r.getMessage() for r in caplog.records if r.name == "tests.poller"]
    assert warnings == ["Polling batch(es) a, b failed: Upstream unavailable (HTTP 502)."]


def test_the_poll_task_runs_in_a_context_of_its_own():
    """The triggerer binds each trigger's identity to its task's context: the poller must not log
    as the first trigger that happened to start it."""
    hook = ScriptedHook({"a": batch("a")})

    async def trigger() -> None:
        MARK.set("trigger-1")
        async with shared_poller("conn", lambda conn_id: hook) as poller:  # type: ignore[arg-type,return-value]
            await poller.poll(watch_of("a"), log, due=asyncio.get_running_loop().time(), interval=5)

    asyncio.run(trigger())

    assert hook.contexts == ["none"]


def test_the_poller_lives_as_long_as_its_triggers_and_is_made_again_after():
    hooks: list[ScriptedHook] = []

    def make(conn_id: str) -> ScriptedHook:
        hooks.append(ScriptedHook({"a": batch("a")}))
        return hooks[-1]

    async def trigger(hold: asyncio.Event | None = None) -> None:
        async with shared_poller("conn", make) as poller:  # type: ignore[arg-type]
            await poller.poll(watch_of("a"), log, due=asyncio.get_running_loop().time(), interval=5)
            if hold is not None:
                await hold.wait()

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        hold = asyncio.Event()
        holder = asyncio.create_task(trigger(hold))
        await trigger()  # a second trigger while the first one still waits: same poller
        during = dict(poller_module._POLLERS[loop])
        hold.set()
        await holder
        after = dict(poller_module._POLLERS[loop])
        await trigger()  # e.g. a trigger rebuilt after a restart: a new poller
        return [during, after]

    during, after = asyncio.run(main())
    assert list(during) == ["conn"] and after == {}
    assert len(hooks) == 2 and all(h.closed for h in hooks)


@pytest.mark.parametrize("gap", [WINDOW_GAP_S - 1, WINDOW_GAP_S + 1])
def test_batches_created_far_apart_are_listed_in_windows_of_their_own(gap):
    hook = ScriptedHook(
        {"old": batch("old", created_at=CREATED), "new": batch("new", created_at=CREATED + gap)}
    )
    answers: dict[str, Any] = {}

    asyncio.run(scan(hook, {"old": CREATED, "new": CREATED + gap}, answers))  # type: ignore[arg-type]

    assert set(answers) == {"old", "new"} and hook.gets == []
    windows = [(p["created_after"], p["created_before"]) for p in hook.lists]
    if gap < WINDOW_GAP_S:
        assert windows == [(CREATED - 1, CREATED + gap + 1)]
    else:
        assert sorted(windows) == [(CREATED - 1, CREATED + 1), (CREATED + gap - 1, CREATED + gap + 1)]


def test_a_window_reads_its_pages_until_its_batches_are_found_then_stops():
    batches = {f"b{i:03d}": batch(f"b{i:03d}") for i in range(230)}
    hook = ScriptedHook(batches)
    answers: dict[str, Any] = {}

    asyncio.run(scan(hook, {"b000": CREATED, "b150": CREATED}, answers))  # type: ignore[arg-type]

    assert set(answers) == {"b000", "b150"}
    assert [bool(p.get("after")) for p in hook.lists] == [False, True]  # b000 and b150 are on pages 1-2
