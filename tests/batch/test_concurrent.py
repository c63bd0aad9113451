"""The concurrent engine, against the emulator over real sockets and through the real hook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

from airflow_openrouter._transport import RetryPolicy
from airflow_openrouter.batch.concurrent import (
    CostCapReached,
    Outcome,
    StartPacer,
    run_concurrently,
    run_concurrently_sync,
)
from airflow_openrouter.exceptions import OpenRouterBadRequestError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.testing import OpenRouterEmulator
from tests.batch.support import FakeClock

MODEL = "openai/gpt-4-1106-preview"


def requests(n: int, prefix: str = "item") -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(n):
        yield f"{prefix}-{i}", {"model": MODEL, "messages": [{"role": "user", "content": "Classify: ok"}]}


class CountingHook(OpenRouterHook):
    """The real hook, counting the calls in flight on the client side."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_flight = 0
        self.peak = 0

    async def achat_completion(self, **kwargs: Any) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().achat_completion(**kwargs)
        finally:
            self.in_flight -= 1


@pytest.fixture(scope="module")
def emulator() -> Iterator[OpenRouterEmulator]:
    with OpenRouterEmulator() as emu:
        yield emu


@pytest.fixture
def emu(emulator: OpenRouterEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenRouterEmulator:
    emulator.clear_faults()
    emulator.clear_requests()
    emulator.set_latency(0)
    emulator.set_credits(100)
    for name, value in emulator.connection_env().items():
        monkeypatch.setenv(name, value)
    return emulator


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def hook(emu: OpenRouterEmulator, sleeps: list[float]) -> CountingHook:
    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    return CountingHook(retry_policy=RetryPolicy(max_retries=3, async_sleep=no_wait))


def collect(hook: OpenRouterHook, items: Any, **options: Any) -> list[Outcome]:
    async def run() -> list[Outcome]:
        try:
            return [outcome async for outcome in run_concurrently(hook, items, **options)]
        finally:
            await hook.aclose()

    return asyncio.run(run())


def posts(emu: OpenRouterEmulator) -> list[float]:
    return sorted(r.at for r in emu.requests_to("/chat/completions", method="POST"))


def test_every_item_gets_one_outcome_with_its_completion(hook: CountingHook) -> None:
    outcomes = collect(hook, requests(12), max_concurrency=4)

    assert sorted(o.custom_id for o in outcomes) == sorted(f"item-{i}" for i in range(12))
    assert all(o.ok and o.started and o.error is None for o in outcomes)
    assert all(o.completion is not None and o.completion.content for o in outcomes)
    assert all(o.cost_usd > 0 and o.latency_s > 0 for o in outcomes)


def test_requests_in_flight_never_exceed_max_concurrency(emu: OpenRouterEmulator, hook: CountingHook) -> None:
    latency = 0.1
    emu.set_latency(latency * 1000)

    collect(hook, requests(24), max_concurrency=4)

    assert hook.peak == 4
    # Server side: a request is in flight for at least `latency` after it arrives.
    arrivals = posts(emu)
    overlapping = max(sum(1 for a in arrivals if t - latency < a <= t) for t in arrivals)
    assert overlapping <= 4


def test_request_starts_are_paced_evenly_to_requests_per_minute(
    emu: OpenRouterEmulator, hook: CountingHook
) -> None:
    per_minute, n = 600, 31  # 10 per second: ~3 s

    async def run() -> None:
        # Warm up first: creating the hook's HTTP client takes long enough to skew the first gap.
        await hook.achat_completion(model=MODEL, messages=[{"role": "user", "content": "warm-up"}])
        emu.clear_requests()
        async for _ in run_concurrently(hook, requests(n), max_concurrency=8, requests_per_minute=per_minute):
            pass
        await hook.aclose()

    asyncio.run(run())

    arrivals = posts(emu)
    achieved_per_minute = (n - 1) / (arrivals[-1] - arrivals[0]) * 60
    # The cap is an upper bound: a loaded machine may start requests late, never early. (How close the
    # rate comes to the cap is measured by `make bench`, not asserted here.)
    assert achieved_per_minute <= per_minute * 1.05
    busiest_second = max(sum(1 for a in arrivals if t <= a < t + 1) for t in arrivals)
    assert busiest_second <= per_minute / 60 + 1


def test_cost_cap_stops_new_requests_and_yields_the_rest_unstarted(
    emu: OpenRouterEmulator, hook: CountingHook
) -> None:
    cost = collect(hook, requests(1, "probe"))[0].cost_usd
    emu.clear_requests()

    outcomes = collect(hook, requests(10), max_concurrency=1, max_cost_usd=2.5 * cost)

    assert [o.custom_id for o in outcomes if o.ok] == ["item-0", "item-1", "item-2"]
    unstarted = [o for o in outcomes if not o.started]
    assert [o.custom_id for o in unstarted] == [f"item-{i}" for i in range(3, 10)]
    assert all(isinstance(o.error, CostCapReached) and o.completion is None for o in unstarted)
    assert len(posts(emu)) == 3


def test_cost_cap_lets_requests_in_flight_finish(emu: OpenRouterEmulator, hook: CountingHook) -> None:
    emu.set_latency(50)

    outcomes = collect(hook, requests(10), max_concurrency=4, max_cost_usd=1e-9)

    # The first four started before any cost was known; they finish, nothing else starts.
    assert sorted(o.custom_id for o in outcomes if o.ok) == [f"item-{i}" for i in range(4)]
    assert sum(not o.started for o in outcomes) == 6
    assert len(posts(emu)) == 4


def test_cost_already_spent_by_an_earlier_try_counts_against_the_cap(
    emu: OpenRouterEmulator, hook: CountingHook
) -> None:
    outcomes = collect(hook, requests(5), max_cost_usd=1.0, spent_usd=1.0)

    assert not any(o.started for o in outcomes)
    assert posts(emu) == []


def test_failed_item_becomes_an_error_outcome_while_the_others_succeed(
    emu: OpenRouterEmulator, hook: CountingHook
) -> None:
    emu.fail_next(status=400)

    outcomes = collect(hook, requests(5), max_concurrency=1)

    failed = [o for o in outcomes if not o.ok]
    assert [o.custom_id for o in failed] == ["item-0"]
    assert isinstance(failed[0].error, OpenRouterBadRequestError) and failed[0].started
    assert sum(o.ok for o in outcomes) == 4


def test_rate_limited_item_is_retried_by_the_hook_policy_honouring_retry_after(
    emu: OpenRouterEmulator, hook: CountingHook, sleeps: list[float]
) -> None:
    emu.fail_next(status=429, retry_after=7)

    outcomes = collect(hook, requests(3), max_concurrency=1)

    assert all(o.ok for o in outcomes)
    assert sleeps == [7.0]
    assert len(posts(emu)) == 4


def test_input_is_pulled_only_as_slots_free_up(emu: OpenRouterEmulator, hook: CountingHook) -> None:
    pulled = 0

    async def endless() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        nonlocal pulled
        for custom_id, body in requests(10**9):
            pulled += 1
            yield custom_id, body

    async def first_three() -> None:
        async with aclosing(run_concurrently(hook, endless(), max_concurrency=2)) as outcomes:
            async for _ in outcomes:
                if emu.requests and len(posts(emu)) >= 3:
                    break
        await hook.aclose()

    asyncio.run(first_three())

    assert pulled <= 5


def test_cancelling_the_consumer_cancels_the_requests_in_flight(
    emu: OpenRouterEmulator, hook: CountingHook
) -> None:
    emu.set_latency(5000)

    async def consume() -> None:
        async for _ in run_concurrently(hook, requests(100), max_concurrency=3):
            pass

    async def cancel_once_started() -> float:
        consumer = asyncio.create_task(consume())
        while len(posts(emu)) < 3:
            await asyncio.sleep(0.01)
        cancelled_at = time.monotonic()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await hook.aclose()
        return time.monotonic() - cancelled_at

    assert asyncio.run(cancel_once_started()) < 1.0
    assert hook.in_flight == 0
    assert len(posts(emu)) == 3


def test_programming_error_propagates_and_cancels_the_requests_in_flight(
    emu: OpenRouterEmulator, hook: CountingHook
) -> None:
    emu.set_latency(5000)
    items = [*requests(3), ("broken", {"model": MODEL})]  # no "messages": a bug in the caller

    started = time.monotonic()
    with pytest.raises(TypeError, match="messages"):
        collect(hook, items, max_concurrency=4)

    assert time.monotonic() - started < 1.0
    assert hook.in_flight == 0


def test_sync_wrapper_hands_each_outcome_to_the_callback(emu: OpenRouterEmulator, hook: CountingHook) -> None:
    emu.fail_next(status=400)
    seen: list[Outcome] = []

    stopped_by = run_concurrently_sync(hook, requests(5), seen.append, max_concurrency=1)

    assert sorted(o.custom_id for o in seen) == [f"item-{i}" for i in range(5)]
    assert sum(o.ok for o in seen) == 4 and sum(o.error is not None for o in seen) == 1
    assert stopped_by is None  # a 400 about one request is no reason to stop the others


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "User not found."),
        (402, "Insufficient credits."),
        (403, "The selected provider or model is not allowed."),
        (404, "No endpoints found that can handle the requested parameters."),
    ],
)
def test_an_error_that_repeats_for_every_item_stops_new_requests(
    emu: OpenRouterEmulator, hook: CountingHook, status: int, message: str
) -> None:
    emu.fail_next(status=status, times=100, body={"error": {"code": status, "message": message}})
    seen: list[Outcome] = []

    stopped_by = run_concurrently_sync(hook, requests(50), seen.append, max_concurrency=2)

    assert stopped_by is not None and stopped_by.status == status
    assert len(seen) == 50
    started = [o for o in seen if o.started]
    assert len(started) == len(posts(emu)) <= 2  # at most the requests already in flight
    assert all(o.error is stopped_by for o in seen if not o.started)


@pytest.mark.parametrize(
    "options",
    [{"max_concurrency": 0}, {"requests_per_minute": 0}, {"max_cost_usd": -1}],
    ids=["concurrency", "rate", "cost"],
)
def test_options_out_of_range_are_refused_at_call_time(hook: CountingHook, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        run_concurrently(hook, [], **options)


def test_pacer_keeps_its_grid_when_a_start_wakes_up_slightly_late() -> None:
    clock = FakeClock()
    pacer = StartPacer(60, clock=clock)  # one per second
    pacer.started()
    clock.now += 1.01  # woke up 10 ms late
    pacer.started()

    assert pacer.wait_s() == pytest.approx(0.99)


def test_pacer_does_not_burst_to_catch_up_after_a_stall() -> None:
    clock = FakeClock()
    pacer = StartPacer(60, clock=clock)
    pacer.started()
    clock.now += 10  # nothing started for ten intervals
    pacer.started()

    assert pacer.wait_s() == pytest.approx(1.0)
