"""4. Result handling memory: a completed batch of N items with ~2 KB outputs each, fetched page by
page, validated and written to JSONL exactly as the batch operator does it (``iter_batch_results`` ->
``row_from_batch_result`` -> ``ResultsWriter``).

Each size runs in a fresh process; its peak RSS growth is measured against the same process's RSS
just before fetching, with the kernel's high-water mark reset at that point. Memory is flat in the
batch size when the growth for the large batch stays close to the growth for the small one.
"""

from __future__ import annotations

import gc
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

from bench._batches import submit_batches
from bench._common import EmulatorProcess, Goal, Row, Stopwatch, connection_env, run_worker, unavailable

BENCHMARK = "results_memory"
GOAL = Goal("ratio", "<=", 1.5, "growth ratio <= 1.5")
MAX_TOKENS = 600  # the emulator answers with ~85% of max_tokens, ~4 characters each: ~2 KB
MIB = 1024 * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); ``False`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    try:
        return _status_kib("VmHWM") * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kib(field: str) -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in lines if line.startswith(f"{field}:")))


def measure_results(
    base_url: str, api_key: str, batch_ids: list[str], items: int, path: str
) -> dict[str, Any]:
    """Worker: fetch, validate and write every row of ``batch_ids``; RSS growth, rows and timings."""
    os.environ.update(connection_env(base_url, api_key))
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.results import ResultsWriter, row_from_batch_result
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.schemas import output_spec

    spec = output_spec(None)  # text: validated as text, as for an operator without response_format
    with OpenRouterHook() as hook:
        hook.get_key()  # warm-up: connection lookup and HTTP client exist before the baseline
        gc.collect()
        baseline, peak_reset = rss_bytes(), reset_peak_rss()
        with Stopwatch() as watch:
            # The operator keeps this map (custom_id -> index) for the whole fetch; it counts.
            indexes = {f"item-{i}": i for i in range(items)}
            with ResultsWriter(ObjectStoragePath(f"file://{path}"), ItemIds(indexes)) as writer:
                for batch_id in batch_ids:
                    for result in hook.iter_batch_results(batch_id):
                        custom_id = result.custom_id
                        writer.write(row_from_batch_result(result, custom_id, indexes[custom_id], spec))
        peak = peak_rss_bytes()
    return {
        "rows": writer.tally.total,
        "succeeded": writer.tally.counts["succeeded"],
        "baseline_rss": baseline,
        "peak_rss": peak,
        "growth": max(0, peak - baseline),
        "peak_reset": peak_reset,
        "seconds": watch.wall,
        "file_bytes": Path(path).stat().st_size,
    }


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    small, large = (20, 200) if quick else (2_000, 20_000)
    name = f"results memory: peak RSS growth, {large:,} vs {small:,} rows"
    try:
        import airflow_openrouter.batch.results  # noqa: F401
    except ImportError as exc:
        return [unavailable(BENCHMARK, name, "MiB", f"not available yet: {exc}", GOAL)]
    measured = {}
    with EmulatorProcess() as emulator, tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        for items in (small, large):
            ids = run_worker(
                submit_batches,
                **emulator.endpoint,
                items=items,
                per_batch=5_000,
                max_tokens=MAX_TOKENS,
                wait_completed=True,
            )
            measured[items] = run_worker(
                measure_results, **emulator.endpoint, batch_ids=ids, items=items, path=f"{tmp}/{items}.jsonl"
            )
    return [growth_row(BENCHMARK, name, measured, small, large, GOAL)]


def growth_row(
    benchmark: str,
    name: str,
    measured: dict[int, dict[str, Any]],
    small: int,
    large: int,
    goal: Goal,
    note: str = "",
    details: dict[str, Any] | None = None,
) -> Row:
    """The row of a memory benchmark: the peak RSS growth writing *large* rows against *small* rows,
    with the rows per second, bytes per row and growth of each size in the note."""
    growth_small, growth_large = (measured[n]["growth"] / MIB for n in (small, large))
    speed = ", ".join(
        f"{n:,} rows: {m['rows'] / m['seconds']:,.0f} rows/s, {m['file_bytes'] / m['rows'] / 1024:.1f} KiB a row, "
        f"+{m['growth'] / MIB:.1f} MiB"
        for n, m in measured.items()
    )
    return Row(
        benchmark,
        name,
        "MiB",
        growth_large,
        baseline=growth_small,
        baseline_label=f"{small:,} rows",
        ratio=growth_large / growth_small if growth_small else None,
        goal=goal,
        note=speed + note,
        details={**{str(n): m for n, m in measured.items()}, **(details or {})},
    )
