"""4. Result handling memory: completed batches of N items with ~2 KB outputs each, fetched page by
page, validated and written to JSONL exactly as the batch operator does it (the items' ids read from
their JSONL input by ``index_custom_ids``, then ``iter_batch_results`` -> ``row_from_batch_result`` ->
``ResultsWriter``).

Each size runs in a fresh process (twice; the smaller figure counts); its peak RSS growth is measured
against the same process's RSS just before reading the ids, with the kernel's high-water mark reset at
that point. Memory is flat in the batch size when the growth for 20,000 rows stays close to the growth
for 2,000, and the growth for 200,000 rows (40 batches of 5,000) close to that for 20,000.
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
GOALS = (
    Goal("ratio", "<=", 1.2, "growth ratio <= 1.2"),
    Goal("ratio", "<=", 1.5, "growth ratio <= 1.5"),
)
HUGE_BATCHES = 40
REPEATS = 2
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

    from airflow_openrouter.batch.items import index_custom_ids
    from airflow_openrouter.batch.results import ResultsWriter, result_row, row_from_batch_result
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.schemas import output_spec

    spec = output_spec(None)  # text: validated as text, as for an operator without response_format
    items_file = Path(f"{path}.items.jsonl")  # the input, as a JSONL file of documents with ids
    with items_file.open("w") as lines:  # line by line: no large string may inflate the baseline
        for i in range(items):
            lines.write(f'{{"id": "item-{i}", "text": "Document {i}."}}\n')
    with OpenRouterHook() as hook:
        # Warm-up, so that the baseline already has what any size pays once: the connection lookup, the
        # HTTP client, and the object-storage and JSON code paths of reading items and writing rows.
        hook.get_key()
        warm_up = Path(f"{path}.warm-up.jsonl")
        warm_up.write_text('{"id": "warm-up"}\n')
        with ResultsWriter(
            ObjectStoragePath(f"file://{warm_up}"), index_custom_ids(f"file://{warm_up}", "id")
        ) as writer:
            # One row written: Airflow's first write through an ObjectStoragePath reports lineage, which
            # loads every installed plugin once (common-ai's pulls in the API server's app: ~40 MiB).
            writer.write(result_row("warm-up", 0, "succeeded", output="warm-up"))
        gc.collect()
        baseline, peak_reset = rss_bytes(), reset_peak_rss()
        with Stopwatch() as watch:
            # The operator reads the items' ids (custom_id -> index) again from its input and keeps them
            # for the whole fetch; they count.
            ids = index_custom_ids(f"file://{items_file}", "id")
            with ResultsWriter(ObjectStoragePath(f"file://{path}"), ids) as writer:
                for batch_id in batch_ids:
                    for result in hook.iter_batch_results(batch_id):
                        custom_id = result.custom_id
                        index = ids.index_of(custom_id)
                        assert index is not None, custom_id
                        writer.write(row_from_batch_result(result, custom_id, index, spec))
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
    small, large, huge = (20, 200, 2_000) if quick else (2_000, 20_000, 200_000)
    names = (
        f"results memory: peak RSS growth, {large:,} vs {small:,} rows",
        f"results memory: peak RSS growth, {huge:,} rows ({HUGE_BATCHES} batches) vs {large:,}",
    )
    try:
        import airflow_openrouter.batch.results  # noqa: F401
    except ImportError as exc:
        return [
            unavailable(BENCHMARK, name, "MiB", f"not available yet: {exc}", goal)
            for name, goal in zip(names, GOALS, strict=True)
        ]
    measured: dict[int, dict[str, Any]] = {}
    with EmulatorProcess() as emulator, tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        for items, per_batch in ((small, 5_000), (large, 5_000), (huge, huge // HUGE_BATCHES)):
            ids = run_worker(
                submit_batches,
                **emulator.endpoint,
                items=items,
                per_batch=per_batch,
                max_tokens=MAX_TOKENS,
                wait_completed=True,
            )
            # Each size twice, each in a fresh process: the smaller growth is the one with less noise
            # from the allocator (a peak can only be inflated by it).
            runs = [
                run_worker(
                    measure_results,
                    **emulator.endpoint,
                    batch_ids=ids,
                    items=items,
                    path=f"{tmp}/{items}.jsonl",
                )
                for _ in range(1 if quick else REPEATS)
            ]
            measured[items] = {**min(runs, key=lambda m: m["growth"]), "growths": [m["growth"] for m in runs]}
    growth = {n: m["growth"] / MIB for n, m in measured.items()}

    def note(sizes: tuple[int, ...]) -> str:
        return ", ".join(
            f"{n:,} rows: {measured[n]['rows'] / measured[n]['seconds']:,.0f} rows/s, "
            f"{measured[n]['file_bytes'] / measured[n]['rows'] / 1024:.1f} KiB a row, "
            f"+{' / '.join(f'{g / MIB:.1f}' for g in measured[n]['growths'])} MiB"
            for n in sizes
        )

    pairs = ((large, small), (huge, large))
    return [
        Row(
            BENCHMARK,
            name,
            "MiB",
            growth[figure],
            baseline=growth[baseline],
            baseline_label=f"{baseline:,} rows",
            ratio=growth[figure] / growth[baseline] if growth[baseline] else None,
            goal=goal,
            note=note((baseline, figure)),
            details={str(n): measured[n] for n in (figure, baseline)},
        )
        for name, goal, (figure, baseline) in zip(names, GOALS, pairs, strict=True)
    ]


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
