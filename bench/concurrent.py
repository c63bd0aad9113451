"""3. Concurrent engine: items against an emulator that takes 200 ms per request.

Throughput: ``max_concurrency=64``, so at best 64 / 0.2 s = 320 items per second; efficiency is the
achieved rate over that bound, and the worker's CPU per item is reported with it. Pacing: with
``requests_per_minute`` set below what concurrency allows, the achieved start rate over the cap.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

from bench._common import EmulatorProcess, GcPauses, Goal, Row, Stopwatch, connection_env, run_worker

BENCHMARK = "concurrent"
LATENCY_S = 0.2
CONCURRENCY = 64
EFFICIENCY_GOAL = Goal("ratio", ">=", 0.85, "efficiency >= 0.85")
PACING_GOAL = Goal("ratio", "within", 0.05, "within 5% of the cap")
MODEL = "openai/gpt-4-1106-preview"


def _requests(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(n):
        yield f"item-{i}", {"model": MODEL, "messages": [{"role": "user", "content": f"Classify item {i}."}]}


def _hook(base_url: str, api_key: str) -> Any:
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    class StartRecordingHook(OpenRouterHook):
        """Notes when each request starts, as the engine's pacing sees it."""

        starts: list[float] = []

        async def achat_completion(self, **kwargs: Any) -> Any:
            self.starts.append(time.perf_counter())
            return await super().achat_completion(**kwargs)

    return StartRecordingHook()


def measure_engine(
    base_url: str, api_key: str, items: int, max_concurrency: int, requests_per_minute: float | None = None
) -> dict[str, Any]:
    """Worker: run ``items`` through the engine; wall and CPU time, successes and start times."""
    from airflow_openrouter.batch.concurrent import run_concurrently

    hook = _hook(base_url, api_key)

    async def main() -> dict[str, Any]:
        # Warm up (connection lookup, HTTP client) so that the run measures the engine, not the set-up.
        await hook.achat_completion(model=MODEL, messages=[{"role": "user", "content": "warm-up"}])
        hook.starts.clear()
        succeeded = 0
        with Stopwatch() as watch, GcPauses() as gc_pauses:
            outcomes = run_concurrently(
                hook,
                _requests(items),
                max_concurrency=max_concurrency,
                requests_per_minute=requests_per_minute,
            )
            async for outcome in outcomes:
                succeeded += outcome.ok
        await hook.aclose()
        starts = sorted(hook.starts)
        return {
            "wall_s": watch.wall,
            "cpu_s": watch.cpu,
            "succeeded": succeeded,
            "start_span_s": starts[-1] - starts[0],
            "gc": gc_pauses.summary(),
        }

    return asyncio.run(main())


def throughput_row(items: int, result: dict[str, Any]) -> Row:
    achieved = result["succeeded"] / result["wall_s"]
    bound = CONCURRENCY / LATENCY_S
    return Row(
        BENCHMARK,
        f"concurrent engine: {items} items, 64 in flight, 200 ms each",
        "items/s",
        achieved,
        baseline=bound,
        baseline_label="64 / 0.2 s",
        ratio=achieved / bound,
        goal=EFFICIENCY_GOAL,
        note=(
            f"worker CPU {result['cpu_s'] / items * 1000:.2f} ms per item "
            f"({result['cpu_s'] / result['wall_s']:.0%} of a core); {result['succeeded']}/{items} succeeded; "
            f"longest GC pause {result['gc']['longest_pause_s'] * 1000:.0f} ms"
        ),
        details=result,
    )


def pacing_row(items: int, per_minute: float, result: dict[str, Any]) -> Row:
    achieved = (items - 1) / result["start_span_s"] * 60
    return Row(
        BENCHMARK,
        f"concurrent engine: requests_per_minute={per_minute:g}, {items} items",
        "starts/min",
        achieved,
        baseline=per_minute,
        baseline_label="the cap",
        ratio=achieved / per_minute,
        goal=PACING_GOAL,
        details=result,
    )


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    items, paced_items, per_minute = (20, 20, 1200.0) if quick else (2000, 300, 3000.0)
    with EmulatorProcess(latency_ms=LATENCY_S * 1000) as emulator:
        throughput = run_worker(measure_engine, **emulator.endpoint, items=items, max_concurrency=CONCURRENCY)
        paced = run_worker(
            measure_engine,
            **emulator.endpoint,
            items=paced_items,
            max_concurrency=CONCURRENCY,
            requests_per_minute=per_minute,
        )
    return [throughput_row(items, throughput), pacing_row(paced_items, per_minute, paced)]
