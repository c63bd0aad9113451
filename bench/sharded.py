"""7. Sharded runs: 100,000 items through the concurrent engine, as one task and as 4 mapped shards,
against one emulator that takes 200 ms per request, in the same run.

The shards are simulated as Airflow would run them on 4 workers, without the scheduler: the input is
split with :func:`~airflow_openrouter.batch.shards.split_jsonl`, then 4 processes start at once, each
running ``OpenRouterBatchOperator(engine="concurrent", items=<its shard's URI>).execute()`` for its map
index -- the operator's own path: ids, rendering, spool, requests, checkpoint, results file. The
unsharded task is the same operator over the whole file in one process. Both use 64 requests in flight
per task, so one task is bound by 64 / 0.2 s = 320 items/s and four by 1,280/s -- unless the CPU is the
bound first: on a machine of few cores the four shard processes share them with the emulator, so the
gain is smaller than it would be on four workers of their own (the note gives the core count).

Wall time of the sharded run: the split's, plus from the first shard's ``execute()`` to the end of the
last one; of the unsharded run: its ``execute()``. Neither counts its processes' start-up.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench._common import EmulatorProcess, Row, connection_env, run_worker

BENCHMARK = "sharded"
LATENCY_S = 0.2
CONCURRENCY = 64
SHARDS = 4
MODEL = "openai/gpt-4-1106-preview"


def write_items(path: str, items: int) -> None:
    """Worker: the input, one small document a line."""
    with open(path, "w", encoding="utf-8") as out:
        for i in range(items):
            out.write(json.dumps({"id": f"doc-{i}", "text": f"Ticket {i}: the printer is on fire."}) + "\n")


def split(items_uri: str, out: str) -> dict[str, Any]:
    """Worker: the split task."""
    from airflow_openrouter.batch.shards import split_jsonl

    started = time.time()
    shards = split_jsonl(items_uri, shards=SHARDS, out=out)
    return {"shards": shards, "started": started, "finished": time.time()}


def run_task(base_url: str, api_key: str, items_uri: str, results: str, map_index: int) -> dict[str, Any]:
    """Worker: one task run of the concurrent engine over *items_uri*, as a worker runs it."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.operators.batch import OpenRouterBatchOperator

    class TaskInstance:
        dag_id, task_id, run_id, try_number = "bench_sharded", "classify", "bench", 1

        def __init__(self) -> None:
            self.map_index = map_index

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    operator = OpenRouterBatchOperator(
        task_id="classify",
        engine="concurrent",
        items=items_uri,
        id_field="id",
        prompt="Classify this ticket: {{ item.text }}",
        model=MODEL,
        max_tokens=16,
        max_concurrency=CONCURRENCY,
        output_path=results,
    )
    started, cpu = time.time(), time.process_time()
    manifest = operator.execute({"ti": TaskInstance()})
    return {
        "started": started,
        "finished": time.time(),
        "cpu_s": time.process_time() - cpu,
        "succeeded": manifest["counts"]["succeeded"],
        "total": manifest["total"],
    }


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    items, latency = (1_000, 0.05) if quick else (100_000, LATENCY_S)
    name = f"sharded: {items:,} items, {SHARDS} mapped shards vs one task, concurrent engine, wall time"
    with (
        EmulatorProcess(latency_ms=latency * 1000) as emulator,
        tempfile.TemporaryDirectory(prefix="bench-sharded-") as tmp,
    ):
        items_path = f"{tmp}/items.jsonl"
        run_worker(write_items, path=items_path, items=items)
        one = run_worker(
            run_task,
            **emulator.endpoint,
            items_uri=f"file://{items_path}",
            results=f"file://{tmp}/one",
            map_index=-1,
            timeout=3600,
        )
        cut = run_worker(split, items_uri=f"file://{items_path}", out=f"file://{tmp}/shards")
        with ThreadPoolExecutor(SHARDS) as pool:  # the four workers, started together
            shards = list(
                pool.map(
                    lambda k: run_worker(
                        run_task,
                        **emulator.endpoint,
                        items_uri=cut["shards"][k],
                        results=f"file://{tmp}/sharded",
                        map_index=k,
                        timeout=3600,
                    ),
                    range(len(cut["shards"])),
                )
            )
    one_wall = one["finished"] - one["started"]
    # Both from the operator's execute() on, so that neither pays its processes' start-up (Python and
    # Airflow imports: seconds, four at once on a small machine); the split counts as its own task.
    split_s = cut["finished"] - cut["started"]
    sharded_wall = split_s + max(s["finished"] for s in shards) - min(s["started"] for s in shards)
    succeeded = sum(s["succeeded"] for s in shards)
    overlap = min(s["finished"] for s in shards) - max(s["started"] for s in shards)
    note = (
        f"one task {one_wall:.1f} s ({one['succeeded']:,} succeeded, {one['cpu_s'] / items * 1000:.2f} ms CPU "
        f"an item); {SHARDS} shards {sharded_wall:.1f} s including the split ({split_s:.1f} s; "
        f"{succeeded:,} succeeded; all four ran together for {max(0.0, overlap):.1f} s); "
        f"{os.cpu_count()} cores shared by the shards and the emulator; "
        f"{CONCURRENCY} in flight per task, {latency * 1000:.0f} ms a request; shards simulated as {SHARDS} "
        "processes running the operator on their shard's URI (no scheduler)"
    )
    return [
        Row(
            BENCHMARK,
            name,
            "s",
            sharded_wall,
            baseline=one_wall,
            baseline_label="one unsharded task",
            ratio=sharded_wall / one_wall if one_wall else None,
            note=note,
            details={"one": one, "split": cut, "shards": shards},
        )
    ]
