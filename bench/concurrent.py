"""3. Concurrent engine: small chat completions against an emulator that takes a fixed time per request,
beside raw aiohttp against the same emulator in the same run.

* 64 in flight x 200 ms (at best 320 items/s): efficiency (achieved rate / bound) ≥ 0.9, and the
  engine's CPU per item ≤ 2 x raw aiohttp's, alternating the two twice so that drift hits both alike;
  reported beside it, the hook alone (``achat_completion`` at DEBUG, driven as raw aiohttp is): the
  transport's share of the engine's cost;
* 10,000 items, 512 in flight x 500 ms (at best 1,024 items/s): efficiency ≥ 0.85, and ≥ 0.85 of raw
  aiohttp's throughput at the same settings;
* pacing: with ``requests_per_minute`` below what concurrency allows, the achieved start rate.

Raw aiohttp is the floor of any Python client here: ``concurrency`` coroutines sharing one session, each
posting the same bodies (``json.dumps``) and decoding the answers (``json.loads``), no retries, no
validation, no logging. CPU per item is the worker process's CPU over the run (not wall time: the
machine is shared). The emulator's own CPU per request over each run is in the notes, with the rate one
core of it could serve: the emulator must not be what limits these rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

from bench._common import EmulatorProcess, GcPauses, Goal, Row, Stopwatch, connection_env, run_worker

BENCHMARK = "concurrent"
MODEL = "openai/gpt-4-1106-preview"
EFFICIENCY_GOAL = Goal("ratio", ">=", 0.9, "efficiency >= 0.9")
CPU_GOAL = Goal("ratio", "<=", 2.0, "engine/raw <= 2")
WIDE_EFFICIENCY_GOAL = Goal("ratio", ">=", 0.85, "efficiency >= 0.85")
WIDE_RAW_GOAL = Goal("ratio", ">=", 0.85, ">= 0.85 of raw aiohttp")
PACING_GOAL = Goal("ratio", "within", 0.05, "within 5% of the cap")
# The settings of each row: (items, in flight, latency in seconds); quick runs keep the shapes.
NARROW = (2000, 64, 0.2)
WIDE = (10_000, 512, 0.5)
QUICK_NARROW = (20, 64, 0.2)
QUICK_WIDE = (60, 32, 0.2)  # the same latency as QUICK_NARROW: one emulator for a quick run
# Interfaces of the two rows the other benchmarks read.
LATENCY_S = NARROW[2]
CONCURRENCY = NARROW[1]


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


# --- workers: each in a fresh process ---------------------------------------------------------------


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


def measure_raw_aiohttp(base_url: str, api_key: str, items: int, max_concurrency: int) -> dict[str, Any]:
    """Worker: the same requests through bare aiohttp, ``max_concurrency`` coroutines on one session."""
    import aiohttp

    url = base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def main() -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=max_concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def complete(body: dict[str, Any]) -> bool:
                async with session.post(url, data=json.dumps(body).encode()) as response:
                    answer = json.loads(await response.read())
                return response.status == 200 and bool(answer.get("choices"))

            await complete({"model": MODEL, "messages": [{"role": "user", "content": "warm-up"}]})
            pending = _requests(items)
            succeeded = 0

            async def worker() -> None:
                nonlocal succeeded
                for _, body in pending:
                    ok = await complete(body)  # (not "+= await": that would add to a stale count)
                    succeeded += ok

            with Stopwatch() as watch:
                await asyncio.gather(*(worker() for _ in range(max_concurrency)))
        return {"wall_s": watch.wall, "cpu_s": watch.cpu, "succeeded": succeeded}

    return asyncio.run(main())


def measure_async_hook(base_url: str, api_key: str, items: int, max_concurrency: int) -> dict[str, Any]:
    """Worker: the same requests through ``hook.achat_completion`` (answer line at DEBUG), driven by
    ``max_concurrency`` coroutines as raw aiohttp is: the transport's share of the engine's cost."""
    import logging

    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    async def main() -> dict[str, Any]:
        async with OpenRouterHook() as hook:
            await hook.achat_completion(model=MODEL, messages=[{"role": "user", "content": "warm-up"}])
            pending = _requests(items)
            succeeded = 0

            async def worker() -> None:
                nonlocal succeeded
                for _, body in pending:
                    completion = await hook.achat_completion(**body, log_level=logging.DEBUG)
                    succeeded += bool(completion.choices)

            with Stopwatch() as watch:
                await asyncio.gather(*(worker() for _ in range(max_concurrency)))
        return {"wall_s": watch.wall, "cpu_s": watch.cpu, "succeeded": succeeded}

    return asyncio.run(main())


# --- running them beside the emulator --------------------------------------------------------------


def _measured(emulator: EmulatorProcess, worker: Any, **kwargs: Any) -> dict[str, Any]:
    """``worker``'s result, with the emulator's CPU over the same time and the requests it served."""
    import psutil

    server = psutil.Process(emulator.pid)
    before = sum(server.cpu_times()[:2])
    result = run_worker(worker, **emulator.endpoint, **kwargs)
    result["emulator_cpu_s"] = sum(server.cpu_times()[:2]) - before
    result["emulator_requests"] = kwargs["items"] + 1  # and the warm-up
    return result


def _rate(result: dict[str, Any]) -> float:
    return float(result["succeeded"] / result["wall_s"])


def _cpu_per_item(results: list[dict[str, Any]], items: int) -> float:
    return statistics.mean(result["cpu_s"] for result in results) / items


def _emulator_note(results: list[dict[str, Any]], demand: float) -> str:
    per_request = sum(r["emulator_cpu_s"] for r in results) / sum(r["emulator_requests"] for r in results)
    capacity = 1 / per_request if per_request else float("inf")
    return (
        f"emulator CPU {per_request * 1000:.2f} ms per request: one core of it serves ~{capacity:,.0f}/s, "
        f"{capacity / demand:.1f}x the {demand:,.0f}/s asked"
    )


def _settings(items: int, concurrency: int, latency: float) -> str:
    return f"{items:,} items, {concurrency} in flight, {latency * 1000:.0f} ms each"


def _efficiency_row(
    shape: tuple[int, int, float], achieved: float, goal: Goal, note: str, details: dict[str, Any]
) -> Row:
    _, concurrency, latency = shape
    bound = concurrency / latency
    return Row(
        BENCHMARK,
        f"concurrent engine: {_settings(*shape)}",
        "items/s",
        achieved,
        baseline=bound,
        baseline_label=f"{concurrency} / {latency:g} s",
        ratio=achieved / bound,
        goal=goal,
        note=note,
        details=details,
    )


def narrow_rows(
    engine: list[dict[str, Any]],
    raw: list[dict[str, Any]],
    hook: list[dict[str, Any]],
    shape: tuple[int, int, float],
) -> list[Row]:
    items, concurrency, latency = shape
    bound = concurrency / latency
    achieved = statistics.mean(map(_rate, engine))
    engine_cpu, raw_cpu = _cpu_per_item(engine, items), _cpu_per_item(raw, items)
    emulator = _emulator_note(engine + raw + hook, bound)
    return [
        _efficiency_row(
            shape,
            achieved,
            EFFICIENCY_GOAL,
            note=(
                f"mean of {len(engine)} runs; raw aiohttp {statistics.mean(map(_rate, raw)):.0f}/s; "
                f"{sum(r['succeeded'] for r in engine)}/{items * len(engine)} succeeded; longest GC pause "
                f"{max(r['gc']['longest_pause_s'] for r in engine) * 1000:.0f} ms; {emulator}"
            ),
            details={"engine": engine, "raw_aiohttp": raw},
        ),
        Row(
            BENCHMARK,
            f"concurrent engine CPU per item / raw aiohttp: {_settings(*shape)}",
            "ms/item",
            engine_cpu * 1000,
            baseline=raw_cpu * 1000,
            baseline_label="raw aiohttp",
            ratio=engine_cpu / raw_cpu,
            goal=CPU_GOAL,
            note=(
                f"worker process CPU over the run, mean of {len(engine)} alternating runs each; engine at "
                f"{statistics.mean(r['cpu_s'] / r['wall_s'] for r in engine):.0%} of a core"
            ),
        ),
        Row(
            BENCHMARK,
            f"async transport CPU per item / raw aiohttp: hook.achat_completion at DEBUG, {_settings(*shape)}",
            "ms/item",
            _cpu_per_item(hook, items) * 1000,
            baseline=raw_cpu * 1000,
            baseline_label="raw aiohttp",
            ratio=_cpu_per_item(hook, items) / raw_cpu,
            note="the hook driven as raw aiohttp is (no engine), its line per answer at DEBUG",
        ),
    ]


def wide_rows(engine: dict[str, Any], raw: dict[str, Any], shape: tuple[int, int, float]) -> list[Row]:
    items, concurrency, latency = shape
    bound = concurrency / latency
    achieved, raw_rate = _rate(engine), _rate(raw)
    note = (
        f"CPU per item {engine['cpu_s'] / items * 1000:.2f} ms vs raw aiohttp "
        f"{raw['cpu_s'] / items * 1000:.2f} ms ({engine['cpu_s'] / raw['cpu_s']:.2f}x); "
        f"{engine['succeeded']}/{items} succeeded; {_emulator_note([engine, raw], bound)}"
    )
    return [
        _efficiency_row(
            shape, achieved, WIDE_EFFICIENCY_GOAL, note=note, details={"engine": engine, "raw_aiohttp": raw}
        ),
        Row(
            BENCHMARK,
            f"concurrent engine / raw aiohttp throughput: {_settings(*shape)}",
            "items/s",
            achieved,
            baseline=raw_rate,
            baseline_label="raw aiohttp",
            ratio=achieved / raw_rate,
            goal=WIDE_RAW_GOAL,
        ),
    ]


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


def _wide(emulator: EmulatorProcess, shape: tuple[int, int, float]) -> list[Row]:
    items, concurrency, _ = shape
    raw = _measured(emulator, measure_raw_aiohttp, items=items, max_concurrency=concurrency)
    engine = _measured(emulator, measure_engine, items=items, max_concurrency=concurrency)
    return wide_rows(engine, raw, shape)


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    narrow, wide = (QUICK_NARROW, QUICK_WIDE) if quick else (NARROW, WIDE)
    paced_items, per_minute = (20, 1200.0) if quick else (300, 3000.0)
    rounds = 1 if quick else 2
    rows: list[Row] = []
    with EmulatorProcess(latency_ms=narrow[2] * 1000) as emulator:
        items, concurrency, _ = narrow
        engine, raw, hook = [], [], []
        for _ in range(rounds):
            raw.append(_measured(emulator, measure_raw_aiohttp, items=items, max_concurrency=concurrency))
            engine.append(_measured(emulator, measure_engine, items=items, max_concurrency=concurrency))
            hook.append(_measured(emulator, measure_async_hook, items=items, max_concurrency=concurrency))
        rows += narrow_rows(engine, raw, hook, narrow)
        paced = run_worker(
            measure_engine,
            **emulator.endpoint,
            items=paced_items,
            max_concurrency=concurrency,
            requests_per_minute=per_minute,
        )
        if wide[2] == narrow[2]:
            rows += _wide(emulator, wide)
    if wide[2] != narrow[2]:
        with EmulatorProcess(latency_ms=wide[2] * 1000) as emulator:
            rows += _wide(emulator, wide)
    return [*rows, pacing_row(paced_items, per_minute, paced)]
