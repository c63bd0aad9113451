"""7. The result cache's hit path: a bulk run whose every item was answered before.

What a run does before it sends anything, measured in a fresh process per size: compute every item's
key from its rendered request (the spool), look the keys up in a cache on disk (through
ObjectStoragePath, as on S3), read each entry and write its row (``cached: true``) to a JSONL file,
as the engine writes its part file. Rendering the prompts is not part of it (the engine renders either
way), nor is the engine's results writer.

* **Rows per second** for 100,000 cached rows of ~1 KiB outputs, the best of three runs (goal: at least
  20,000 rows/s), against the floor of any cache: the same entries copied from a plain JSONL file into
  rows (no keys, no lookup).
* **Memory, per row looked up**: the peak RSS growth for 100,000 rows against 10,000 (reported: the
  lookup keeps ~60 bytes a key -- the key, a sorted 20-byte record and the position of its entry --
  never the entries).
* **Memory, in the cache's size**: the same 10,000-key lookup against a cache of 100,000 entries and
  one of 10,000 (goal: growth ratio <= 1.5: the cache is streamed, never loaded).

Each growth is measured against the process's RSS right before the lookup, with the kernel's peak mark
reset there (as in the results-memory benchmark).
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from bench._common import Goal, Row, Stopwatch, run_worker, unavailable
from bench.results_memory import MIB, peak_rss_bytes, reset_peak_rss, rss_bytes

BENCHMARK = "cache_hits"
SPEED_GOAL = Goal("figure", ">=", 20_000, ">= 20,000 rows/s")
FLAT_GOAL = Goal("ratio", "<=", 1.5, "growth ratio <= 1.5")
MODEL = "openai/gpt-4o-mini"
OUTPUT = "The invoice is from Brightline Cloud Hosting GmbH and totals EUR 520.30 for three lines. " * 12


def _prompt(i: int) -> str:
    return f"Extract the fields of document {i}: " + "Lorem ipsum dolor sit amet, consectetur. " * 10


def build(directories: dict[str, int]) -> dict[str, Any]:
    """Worker: for each directory, a cache holding the answers of items 0..n-1 (written as one run would)."""
    from airflow_openrouter.batch.cached import BulkCache

    built = {}
    for directory, cached in directories.items():
        bulk = BulkCache(_job(directory), log=logging.getLogger(BENCHMARK))
        with Stopwatch() as watch, bulk.cache.writer() as writer:
            for i in range(cached):
                body = {"messages": [{"role": "user", "content": _prompt(i)}], "max_tokens": 300}
                row = {"output": OUTPUT, "provider": "OpenAI", "model": MODEL, "generation_id": f"gen-{i:020d}",
                       "usage": {"prompt_tokens": 120, "completion_tokens": 260, "cost": 0.0001}}  # fmt: skip
                writer.add(bulk.key_of(body), bulk.endpoint.cache_entry(row))
        with open(f"{directory}.jsonl", "w") as plain:  # the same entries as a plain JSONL file
            for i in range(cached):
                row = {"output": OUTPUT, "provider": "OpenAI", "model": MODEL, "generation_id": f"gen-{i:020d}",
                       "usage": {"prompt_tokens": 120, "completion_tokens": 260, "cost": 0.0001}}  # fmt: skip
                plain.write(json.dumps(bulk.endpoint.cache_entry(row)) + "\n")
        size = sum(p.stat().st_size for p in Path(directory).rglob("*.orc"))
        built[str(cached)] = {"seconds": watch.wall, "bytes": size}
    return built


def measure_each(runs: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """Worker (--quick): every measurement in this one process (its memory figures mean nothing)."""
    return {name: measure(directory, items) for name, (directory, items) in runs.items()}


def measure(directory: str, items: int) -> dict[str, Any]:
    """Worker: the hit path for items 0..items-1 (see the module docstring)."""
    from airflow_openrouter.batch.cached import BulkCache, ItemKeys
    from airflow_openrouter.batch.items import ItemIds, ItemRequest
    from airflow_openrouter.batch.spool import RequestSpool

    bulk = BulkCache(_job(directory), log=logging.getLogger(BENCHMARK))
    # Warm up (imports, the filesystem object): the engine has done all this before its lookup.
    warm = ItemKeys(bulk.key_of({"messages": []}))
    list(bulk.rows(bulk.lookup(warm, iter([0])), ItemIds({"0": 0})))
    requests = (
        ItemRequest(i, str(i), {"messages": [{"role": "user", "content": _prompt(i)}], "max_tokens": 300})
        for i in range(items)
    )
    with RequestSpool(requests, fingerprint_of={}) as spool, tempfile.NamedTemporaryFile("w") as out:
        ids = ItemIds({str(i): i for i in range(items)})  # the engine holds this whatever the cache
        gc.collect()
        baseline, peak_reset = rss_bytes(), reset_peak_rss()
        watches = [_hit_path(bulk, spool, ids, items, out)]
        peak = peak_rss_bytes()
        # Twice more for the speed: the best of three runs is the least disturbed by a busy machine.
        watches += [_hit_path(bulk, spool, ids, items, out) for _ in range(2)]
    best = min(watches, key=lambda w: w.wall)
    copies = [_plain_copy(f"{directory}.jsonl", items) for _ in range(3)]
    return {
        "plain_copy_seconds": min(copies),
        "rows": items,
        "seconds": best.wall,
        "cpu_seconds": best.cpu,
        "all_seconds": [w.wall for w in watches],
        "growth": max(0, peak - baseline),
        "baseline_rss": baseline,
        "peak_reset": peak_reset,
    }


def _plain_copy(path: str, items: int) -> float:
    """The baseline: the same entries read from a plain JSONL file and written as rows, no lookup."""
    from airflow_openrouter.batch.results import result_row

    with Stopwatch() as watch, open(path) as lines, tempfile.TemporaryFile("w") as out:
        for i, line in zip(range(items), lines, strict=False):  # the first `items` lines
            entry = json.loads(line)
            row = result_row(
                str(i), i, "succeeded", output=entry["output"], usage=entry["usage"], cached=True
            )
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return watch.wall


def _hit_path(bulk: Any, spool: Any, ids: Any, items: int, out: Any) -> Stopwatch:
    with Stopwatch() as watch:
        keys = bulk.keys(spool)
        hits = bulk.lookup(keys, iter(range(items)))
        rows = 0
        for row in bulk.rows(hits, ids):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows += 1
    assert rows == items, f"{rows} of {items} rows came from the cache"
    return watch


def _job(directory: str) -> Any:
    from airflow_openrouter.batch.options import JobOptions, Limits
    from airflow_openrouter.schemas import output_spec

    return JobOptions(
        model=MODEL,
        provider=None,
        requests=None,  # type: ignore[arg-type]  (not used by the cache)
        spec=output_spec(None),
        identity=None,  # type: ignore[arg-type]
        results_file=None,  # type: ignore[arg-type]
        id_field=None,
        limits=Limits(),
        result_cache=f"file://{directory}",
    )


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    small, large = (200, 2_000) if quick else (10_000, 100_000)
    names = (
        f"result cache hit path: {large:,} cached rows",
        f"result cache hit path: peak RSS growth, {large:,} vs {small:,} rows looked up",
        f"result cache hit path: peak RSS growth, {small:,} rows from a cache of {large:,} vs {small:,}",
    )
    try:
        import airflow_openrouter.cache  # noqa: F401
    except ImportError as exc:
        return [unavailable(BENCHMARK, names[0], "rows/s", f"not available yet: {exc}", SPEED_GOAL)]
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        built = run_worker(build, directories={f"{tmp}/{n}": n for n in (small, large)})
        # name -> (cache, items looked up)
        plan = {
            "large": (f"{tmp}/{large}", large),
            "small": (f"{tmp}/{large}", small),
            "small_cache": (f"{tmp}/{small}", small),
        }
        if quick:
            runs = run_worker(measure_each, runs=plan)
        else:  # a fresh process each, for its memory figure
            runs = {name: run_worker(measure, directory=d, items=n) for name, (d, n) in plan.items()}
    large_run, small_run, small_cache = runs["large"], runs["small"], runs["small_cache"]
    speed = large_run["rows"] / large_run["seconds"]
    per_row = (large_run["growth"] - small_run["growth"]) / (large - small)
    note = (
        f"{large_run['rows']:,} rows in {large_run['seconds']:.2f} s ({large_run['cpu_seconds']:.2f} s CPU; "
        f"runs: {', '.join(f'{t:.2f}' for t in large_run['all_seconds'])} s); "
        f"cache of {large:,}: {built[str(large)]['bytes'] / MIB:.0f} MiB on disk, written in "
        f"{built[str(large)]['seconds']:.1f} s"
    )
    return [
        Row(
            BENCHMARK,
            names[0],
            "rows/s",
            speed,
            baseline=large / large_run["plain_copy_seconds"],
            baseline_label="the same rows copied from a plain JSONL file",
            ratio=speed * large_run["plain_copy_seconds"] / large,
            goal=SPEED_GOAL,
            note=note,
            details={"runs": runs, "built": built},
        ),
        Row(
            BENCHMARK,
            names[1],
            "MiB",
            large_run["growth"] / MIB,
            baseline=small_run["growth"] / MIB,
            baseline_label=f"{small:,} rows",
            ratio=large_run["growth"] / small_run["growth"] if small_run["growth"] else None,
            note=f"about {per_row:.0f} bytes a row looked up (keys, sorted records, hit positions; no entries)",
        ),
        Row(
            BENCHMARK,
            names[2],
            "MiB",
            small_run["growth"] / MIB,
            baseline=small_cache["growth"] / MIB,
            baseline_label=f"cache of {small:,}",
            ratio=small_run["growth"] / small_cache["growth"] if small_cache["growth"] else None,
            goal=FLAT_GOAL,
            note="the same lookup against a cache 10 times larger",
        ),
    ]
