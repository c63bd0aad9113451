"""5. Triggerer responsiveness: many ``OpenRouterBatchTrigger``s polling the emulator in one event loop,
as a triggerer runs them, while a probe task measures how late the loop wakes it up (loop lag).

The baseline is the same probe on the same, idle loop just before the triggers start. The batches
stay ``in_progress`` for the whole run, so every trigger keeps polling until it is cancelled.

The second row is the stall of a trigger's *last* poll, when its batch has completed with 5,000 rows:
``GET /batches/{id}`` inlines every result row (megabytes to download and parse on the loop), the
list endpoint the trigger uses for batches of known creation time carries none. Both are measured,
side by side, in the same run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

from bench._batches import submit_batches
from bench._common import (
    EmulatorProcess,
    GcPauses,
    Goal,
    Row,
    connection_env,
    median,
    run_worker,
    unavailable,
)

BENCHMARK = "triggerer"
GOAL = Goal("figure", "<=", 50.0, "max lag < 50 ms")
PROBE_INTERVAL_S = 0.02
STAY_IN_PROGRESS = (0.0, 3600.0, 0.0)  # emulator batch phases: validating, in_progress, finalizing


async def probe_lag(seconds: float) -> list[float]:
    """How much later than asked the loop resumes a sleeping task, sample by sample, for ``seconds``."""
    lags = []
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        asked = loop.time() + PROBE_INTERVAL_S
        await asyncio.sleep(PROBE_INTERVAL_S)
        lags.append(loop.time() - asked)
    return lags


def measure_triggerer(
    base_url: str,
    api_key: str,
    batch_ids: list[str],
    seconds: float,
    poll_interval: float,
    idle_seconds: float,
    created_at: dict[str, int],
) -> dict[str, Any]:
    """Worker: one trigger per batch id in this process's loop for ``seconds``; lag, CPU and polls.
    The triggers know their batches' creation times, as the operator's do, so they poll the list."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

    polls = [0]
    by_id, by_list = OpenRouterHook.aget_batch, OpenRouterHook.alist_batches

    async def counted_get(self: OpenRouterHook, batch_id: str) -> Any:
        polls[0] += 1
        return await by_id(self, batch_id)

    async def counted_list(self: OpenRouterHook, **kwargs: Any) -> Any:
        polls[0] += 1
        return await by_list(self, **kwargs)

    OpenRouterHook.aget_batch = counted_get  # type: ignore[method-assign]
    OpenRouterHook.alist_batches = counted_list  # type: ignore[method-assign]

    async def consume(trigger: OpenRouterBatchTrigger) -> None:
        async for _ in trigger.run():
            pass

    async def main() -> dict[str, Any]:
        idle = await probe_lag(idle_seconds)
        deadline = time.time() + 3600
        triggers = [
            OpenRouterBatchTrigger(
                batch_ids=[batch_id],
                poll_interval=poll_interval,
                deadline=deadline,
                created_at={batch_id: created_at[batch_id]},
            )
            for batch_id in batch_ids
        ]
        wall, cpu = time.perf_counter(), time.process_time()
        with GcPauses() as gc_pauses:
            tasks = [asyncio.create_task(consume(trigger)) for trigger in triggers]
            busy = await probe_lag(seconds)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        finished_early = sum(not task.cancelled() for task in tasks)
        return {
            "idle_max_lag_s": max(idle),
            "max_lag_s": max(busy),
            "p99_lag_s": sorted(busy)[int(len(busy) * 0.99)],
            "median_lag_s": median(busy),
            "cpu_share": cpu / wall,
            "polls_per_s": polls[0] / wall,
            "triggers": len(triggers),
            "finished_early": finished_early,
            "gc": gc_pauses.summary(),
        }

    return asyncio.run(main())


def measure_last_poll(
    base_url: str, api_key: str, batch_id: str, created_at: int, listed: bool, idle_seconds: float
) -> dict[str, Any]:
    """Worker: one trigger over a completed batch, run to its event while the probe measures the lag.
    ``listed``: the trigger knows the creation time (the operator's case) and polls the list."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

    def trigger() -> OpenRouterBatchTrigger:
        return OpenRouterBatchTrigger(
            batch_ids=[batch_id],
            poll_interval=1.0,
            deadline=time.time() + 600,
            created_at={batch_id: created_at} if listed else None,
        )

    async def first_event() -> float:
        started = time.perf_counter()
        async for _ in trigger().run():
            break
        return time.perf_counter() - started

    async def main() -> dict[str, Any]:
        await first_event()  # warm up: imports, the connection lookup, the TLS context
        gc.collect()
        idle = await probe_lag(idle_seconds)
        probe = asyncio.create_task(probe_lag(3.0))
        took = await first_event()
        busy = await probe
        return {"idle_max_lag_s": max(idle), "max_lag_s": max(busy), "event_s": took}

    return asyncio.run(main())


def _last_poll_rows(quick: bool) -> list[Row]:
    items, max_tokens = (200, 64) if quick else (5_000, 256)
    name = f"triggerer: the last poll of a completed {items:,}-item batch, max loop lag"
    with EmulatorProcess(batch_durations=(0.0, 0.0, 0.0)) as emulator:
        (batch_id,) = run_worker(
            submit_batches,
            **emulator.endpoint,
            items=items,
            per_batch=items,
            max_tokens=max_tokens,
            wait_completed=True,
        )
        created_at = run_worker(_created_at, **emulator.endpoint, batch_ids=[batch_id])[batch_id]
        runs = {
            listed: run_worker(
                measure_last_poll,
                **emulator.endpoint,
                batch_id=batch_id,
                created_at=created_at,
                listed=listed,
                idle_seconds=0.5 if quick else 2.0,
            )
            for listed in (False, True)
        }
    by_id, by_list = runs[False]["max_lag_s"] * 1000, runs[True]["max_lag_s"] * 1000
    note = (
        f"list endpoint (what the trigger uses) {by_list:.1f} ms vs GET by id (inline results) "
        f"{by_id:.1f} ms; idle loop {runs[True]['idle_max_lag_s'] * 1000:.1f} ms"
    )
    return [_lag_row(name, by_list, by_id, "the same poll by GET /batches/{id}", note, runs)]


def _lag_row(name: str, figure: float, baseline: float, label: str, note: str, details: Any) -> Row:
    ratio = figure / baseline if baseline else None
    return Row(BENCHMARK, name, "ms", figure, baseline, label, ratio, GOAL, note, details=details)


def _created_at(base_url: str, api_key: str, batch_ids: list[str]) -> dict[str, int]:
    """Worker: the creation time of each batch, as the operator records it."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    with OpenRouterHook() as hook:
        return {batch_id: int(hook.get_batch(batch_id).created_at or 0) for batch_id in batch_ids}


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    count, seconds, poll_interval, idle = (5, 2.0, 0.5, 0.5) if quick else (200, 30.0, 1.0, 5.0)
    name = f"triggerer: {count} batch triggers polling every {poll_interval:g} s for {seconds:g} s"
    try:
        import airflow_openrouter.triggers.batch  # noqa: F401
    except ImportError as exc:
        return [unavailable(BENCHMARK, name, "ms", f"not available yet: {exc}", GOAL)]
    with EmulatorProcess(batch_durations=STAY_IN_PROGRESS) as emulator:
        ids = run_worker(
            submit_batches, **emulator.endpoint, items=count, per_batch=1, max_tokens=16, wait_completed=False
        )
        result = run_worker(
            measure_triggerer,
            **emulator.endpoint,
            batch_ids=ids,
            created_at=run_worker(_created_at, **emulator.endpoint, batch_ids=ids),
            seconds=seconds,
            poll_interval=poll_interval,
            idle_seconds=idle,
        )
    figure, baseline = result["max_lag_s"] * 1000, result["idle_max_lag_s"] * 1000
    note = (
        f"p99 lag {result['p99_lag_s'] * 1000:.1f} ms; loop CPU {result['cpu_share']:.0%} of a core; "
        f"{result['polls_per_s']:.0f} polls/s (ideal {count / poll_interval:.0f}/s); "
        f"longest GC pause {result['gc']['longest_pause_s'] * 1000:.0f} ms "
        f"({result['gc']['full_collections']} full collections)"
    )
    return [
        _lag_row(name, figure, baseline, "idle loop", note, result),
        *_last_poll_rows(quick),
    ]
