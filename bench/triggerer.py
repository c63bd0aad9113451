"""5. Triggerer responsiveness: many ``OpenRouterBatchTrigger``s polling the emulator in one event loop,
as a triggerer runs them, while a probe task measures how late the loop wakes it up (loop lag).

The baseline is the same probe on the same, idle loop just before the triggers start. The batches
stay ``in_progress`` for the whole run, so every trigger keeps polling until it is cancelled.
"""

from __future__ import annotations

import asyncio
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
) -> dict[str, Any]:
    """Worker: one trigger per batch id in this process's loop for ``seconds``; lag, CPU and polls."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

    polls = [0]
    poll = OpenRouterHook.aget_batch

    async def counted_poll(self: OpenRouterHook, batch_id: str) -> Any:
        polls[0] += 1
        return await poll(self, batch_id)

    OpenRouterHook.aget_batch = counted_poll  # type: ignore[method-assign]

    async def consume(trigger: OpenRouterBatchTrigger) -> None:
        async for _ in trigger.run():
            pass

    async def main() -> dict[str, Any]:
        idle = await probe_lag(idle_seconds)
        deadline = time.time() + 3600
        triggers = [
            OpenRouterBatchTrigger(batch_ids=[batch_id], poll_interval=poll_interval, deadline=deadline)
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
            seconds=seconds,
            poll_interval=poll_interval,
            idle_seconds=idle,
        )
    figure, baseline = result["max_lag_s"] * 1000, result["idle_max_lag_s"] * 1000
    return [
        Row(
            BENCHMARK,
            name,
            "ms",
            figure,
            baseline=baseline,
            baseline_label="idle loop",
            ratio=figure / baseline if baseline else None,
            goal=GOAL,
            note=(
                f"p99 lag {result['p99_lag_s'] * 1000:.1f} ms; loop CPU {result['cpu_share']:.0%} of a core; "
                f"{result['polls_per_s']:.0f} polls/s (ideal {count / poll_interval:.0f}/s); "
                f"longest GC pause {result['gc']['longest_pause_s'] * 1000:.0f} ms "
                f"({result['gc']['full_collections']} full collections)"
            ),
            details=result,
        )
    ]
