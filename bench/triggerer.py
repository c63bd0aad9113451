"""5. Triggerer responsiveness: 1,000 ``OpenRouterBatchTrigger``s polling the emulator every 5 s in one
event loop, as a triggerer runs them (each in its own task), while a probe task measures how late the
loop wakes it up (loop lag).

The baseline runs in the same process and loop just before: as many sleeping triggers, waking up as
often as ours and doing nothing else (what a ``TimeDeltaTrigger`` does between its looks at the clock).
Both phases have Airflow imported, so its heap -- what a full garbage collection walks -- is there in
both. The rows: the p99 lag ours add over the baseline's, and the loop's CPU above the baseline's per
batch poll (one trigger learning its batch's state). The batches stay ``in_progress`` for the whole run,
so every trigger keeps polling until it is cancelled.

The last row is the stall of a trigger's *last* poll, when its batch has completed with 5,000 rows:
``GET /batches/{id}`` inlines every result row (megabytes to download and parse on the loop), the
list endpoint the trigger uses for batches of known creation time carries none. Both are measured,
side by side, in the same run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
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
LAG_GOAL = Goal("figure", "<=", 10.0, "<= 10 ms")
CPU_GOAL = Goal("figure", "<=", 0.5, "<= 0.5 ms")
LAST_POLL_GOAL = Goal("figure", "<=", 50.0, "max lag < 50 ms")
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


def _sleeping_trigger(poll_interval: float) -> Any:
    """The baseline: a trigger that wakes up as often as ours and does nothing (what
    ``TimeDeltaTrigger`` does between its checks of the clock, without its log line)."""
    from airflow.triggers.base import BaseTrigger

    class SleepingTrigger(BaseTrigger):
        def serialize(self) -> tuple[str, dict[str, Any]]:
            return ("bench.triggerer.SleepingTrigger", {})

        async def run(self) -> Any:
            while True:
                await asyncio.sleep(poll_interval * random.uniform(0.9, 1.1))
            yield  # pragma: no cover - an async generator, like every trigger

    return SleepingTrigger()


async def _phase(triggers: list[Any], seconds: float) -> dict[str, Any]:
    """Run *triggers* (each in its own task, as the triggerer does) while probing the loop."""

    async def consume(trigger: Any) -> None:
        async for _ in trigger.run():
            pass

    wall, cpu = time.perf_counter(), time.process_time()
    with GcPauses() as gc_pauses:
        tasks = [asyncio.create_task(consume(trigger)) for trigger in triggers]
        lags = await probe_lag(seconds)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ordered = sorted(lags)
    return {
        "max_lag_s": ordered[-1],
        "p99_lag_s": ordered[int(len(ordered) * 0.99)],
        "median_lag_s": median(ordered),
        "cpu_s": cpu,
        "wall_s": wall,
        "finished_early": sum(not task.cancelled() for task in tasks),
        "gc": gc_pauses.summary(),
    }


def measure_triggerer(
    base_url: str,
    api_key: str,
    batch_ids: list[str],
    seconds: float,
    poll_interval: float,
    created_at: dict[str, int],
    freeze_gc: bool = False,
) -> dict[str, Any]:
    """Worker: in one event loop, first one sleeping trigger per batch (the baseline), then one
    ``OpenRouterBatchTrigger`` per batch, each for ``seconds``: loop lag, CPU, polls and requests.
    The triggers know their batches' creation times, as the operator's do, so they poll the list."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.batch.watch import BatchWatch
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

    counts = {"requests": 0, "polls": 0}
    by_id, by_list = OpenRouterHook.aget_batch, OpenRouterHook.alist_batches
    observe, observe_error = BatchWatch.observe, BatchWatch.observe_error

    async def counted_get(self: OpenRouterHook, batch_id: str) -> Any:
        counts["requests"] += 1
        return await by_id(self, batch_id)

    async def counted_list(self: OpenRouterHook, **kwargs: Any) -> Any:
        counts["requests"] += 1
        return await by_list(self, **kwargs)

    def counted_observe(self: BatchWatch, *args: Any) -> Any:
        counts["polls"] += 1  # one batch of one trigger looked at once
        return observe(self, *args)

    def counted_observe_error(self: BatchWatch, *args: Any) -> Any:
        counts["polls"] += 1
        return observe_error(self, *args)

    OpenRouterHook.aget_batch = counted_get  # type: ignore[method-assign]
    OpenRouterHook.alist_batches = counted_list  # type: ignore[method-assign]
    BatchWatch.observe = counted_observe  # type: ignore[method-assign]
    BatchWatch.observe_error = counted_observe_error  # type: ignore[method-assign]

    async def main() -> dict[str, Any]:
        if freeze_gc:
            gc.freeze()  # what a triggerer could do once its imports are done (see the module)
        baseline = await _phase([_sleeping_trigger(poll_interval) for _ in batch_ids], seconds)
        deadline = time.time() + 3600
        ours = await _phase(
            [
                OpenRouterBatchTrigger(
                    batch_ids=[batch_id],
                    poll_interval=poll_interval,
                    deadline=deadline,
                    created_at={batch_id: created_at[batch_id]},
                )
                for batch_id in batch_ids
            ],
            seconds,
        )
        return {"baseline": baseline, "ours": {**ours, **counts}, "triggers": len(batch_ids)}

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
    return Row(BENCHMARK, name, "ms", figure, baseline, label, ratio, LAST_POLL_GOAL, note, details=details)


def _created_at(base_url: str, api_key: str, batch_ids: list[str]) -> dict[str, int]:
    """Worker: the creation time of each batch, as the operator records it."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    with OpenRouterHook() as hook:
        return {batch_id: int(hook.get_batch(batch_id).created_at or 0) for batch_id in batch_ids}


def _triggerer_rows(quick: bool) -> list[Row]:
    count, seconds, poll_interval = (20, 3.0, 0.5) if quick else (1_000, 60.0, 5.0)
    what = f"{count:,} batch triggers polling every {poll_interval:g} s for {seconds:g} s"
    with EmulatorProcess(batch_durations=STAY_IN_PROGRESS) as emulator:
        ids = run_worker(
            submit_batches, **emulator.endpoint, items=count, per_batch=1, max_tokens=16, wait_completed=False
        )
        created_at = run_worker(_created_at, **emulator.endpoint, batch_ids=ids)

        def measure(freeze_gc: bool) -> dict[str, Any]:
            return run_worker(  # type: ignore[no-any-return]
                measure_triggerer,
                **emulator.endpoint,
                batch_ids=ids,
                created_at=created_at,
                seconds=seconds,
                poll_interval=poll_interval,
                freeze_gc=freeze_gc,
            )

        # Twice (the machine is shared: the figures are the mean of both, each run gives its own in the
        # note), then once more after gc.freeze(), for the advice on garbage collection.
        runs = [measure(False) for _ in range(1 if quick else 2)]
        frozen = measure(True)
    added = [(r["ours"]["p99_lag_s"] - r["baseline"]["p99_lag_s"]) * 1000 for r in runs]
    cpu = [(r["ours"]["cpu_s"] - r["baseline"]["cpu_s"]) / max(1, r["ours"]["polls"]) * 1000 for r in runs]
    base_p99 = [r["baseline"]["p99_lag_s"] * 1000 for r in runs]
    base_cpu = [r["baseline"]["cpu_s"] / (count * seconds / poll_interval) * 1000 for r in runs]
    first = runs[0]
    base, ours = first["baseline"], first["ours"]
    note = (
        f"runs: +{' / +'.join(f'{a:.1f}' for a in added)} ms; first run: p99 lag {ours['p99_lag_s'] * 1000:.1f} ms "
        f"vs {base['p99_lag_s'] * 1000:.1f} ms for {count:,} sleeping triggers in the same loop just before; "
        f"{ours['polls'] / ours['wall_s']:.0f} batch polls/s (ideal {count / poll_interval:.0f}/s) in "
        f"{ours['requests'] / ours['wall_s']:.1f} requests/s; loop CPU {ours['cpu_s'] / ours['wall_s']:.0%} of a "
        f"core vs {base['cpu_s'] / base['wall_s']:.0%}"
    )
    max_lag = [r["ours"]["max_lag_s"] * 1000 for r in runs]
    frozen_ours = frozen["ours"]
    gc_note = (
        f"max lag without: {' / '.join(f'{m:.0f}' for m in max_lag)} ms, longest GC pause "
        f"{ours['gc']['longest_pause_s'] * 1000:.0f} ms ({ours['gc']['full_collections']} full collections of "
        f"Airflow's heap); after gc.freeze(): longest GC pause {frozen_ours['gc']['longest_pause_s'] * 1000:.0f} ms "
        f"({frozen_ours['gc']['full_collections']} full collections), p99 added "
        f"{(frozen_ours['p99_lag_s'] - frozen['baseline']['p99_lag_s']) * 1000:.1f} ms"
    )
    return [
        Row(
            BENCHMARK,
            f"triggerer: {what}, p99 loop lag added",
            "ms",
            sum(added) / len(added),
            baseline=sum(base_p99) / len(base_p99),
            baseline_label=f"p99 of {count:,} sleeping triggers",
            ratio=None,
            goal=LAG_GOAL,
            note=note,
            details={"runs": runs},
        ),
        Row(
            BENCHMARK,
            f"triggerer: {what}, CPU per poll",
            "ms",
            sum(cpu) / len(cpu),
            baseline=sum(base_cpu) / len(base_cpu),
            baseline_label="a sleeping trigger's wake-up",
            ratio=None,
            goal=CPU_GOAL,
            note=f"runs: {' / '.join(f'{c:.3f}' for c in cpu)} ms: the loop's CPU above the baseline's, per batch "
            "poll (one trigger learning its batch's state)",
        ),
        Row(
            BENCHMARK,
            f"triggerer: {what}, max loop lag after gc.freeze()",
            "ms",
            frozen_ours["max_lag_s"] * 1000,
            baseline=sum(max_lag) / len(max_lag),
            baseline_label="without",
            ratio=frozen_ours["max_lag_s"] * 1000 / (sum(max_lag) / len(max_lag)),
            note=gc_note,
            details={"frozen": frozen},
        ),
    ]


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    try:
        import airflow_openrouter.triggers.batch  # noqa: F401
    except ImportError as exc:
        return [unavailable(BENCHMARK, "triggerer", "ms", f"not available yet: {exc}", LAG_GOAL)]
    return [*_triggerer_rows(quick), *_last_poll_rows(quick)]
