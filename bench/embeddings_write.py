"""8. Writing vectors: N rows of 1,536-dimensional float32 vectors through the embedding operator's
Parquet writer, exactly as the engines hand it rows (``vector_row`` -> ``ParquetVectorWriter``).

Each size runs in a fresh process; its peak RSS growth is measured against the same process's RSS just
before writing, with the kernel's high-water mark reset at that point (as ``results_memory`` does).
Memory is flat in the number of rows when the growth for 100,000 rows stays close to the growth for
10,000: the writer holds one row group (about 16 MiB of vectors), never the table. The note adds the
rows per second, the bytes per row, and the JSONL writer's rows per second on the small size.
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from typing import Any

from bench._common import Goal, Row, run_worker, unavailable
from bench.results_memory import growth_row, peak_rss_bytes, reset_peak_rss, rss_bytes

BENCHMARK = "embeddings_write"
GOAL = Goal("ratio", "<=", 1.5, "growth ratio <= 1.5")
DIMENSIONS = 1536


def measure_write(rows: int, path: str, dimensions: int = DIMENSIONS) -> dict[str, Any]:
    """Worker: write *rows* vector rows to *path* (its extension picks the format). Each row gets its own
    random vector, base64 as from the wire (random bits do not compress: a file of real vectors is a
    little smaller); only the writer's time is counted."""
    import base64
    import random
    import time

    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.embeddings import vector_row
    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.vectors import vector_writer

    rng = random.Random(7)
    size = 4 * dimensions

    def row(i: int) -> dict[str, Any]:
        vector = base64.b64encode(rng.randbytes(size)).decode()
        return vector_row(f"doc-{i}", i, vector, "openai/text-embedding-3-small", 9, 1.8e-7)

    # The engines keep this map (custom_id -> index) for the whole write; it counts.
    ids = ItemIds({f"doc-{i}": i for i in range(rows)}, id_field="id")
    with vector_writer(
        ObjectStoragePath(f"file://{path}.warmup{Path(path).suffix}"), ItemIds({"doc-0": 0})
    ) as warm:
        warm.write(row(0))  # imports pyarrow, opens a file: before the baseline
    gc.collect()
    baseline, peak_reset = rss_bytes(), reset_peak_rss()
    writing = 0.0
    with vector_writer(ObjectStoragePath(f"file://{path}"), ids) as writer:
        for i in range(rows):
            next_row = row(i)
            started = time.perf_counter()
            writer.write(next_row)
            writing += time.perf_counter() - started
        started = time.perf_counter()
    writing += time.perf_counter() - started  # the last row group and the footer
    peak = peak_rss_bytes()
    return {
        "rows": writer.tally.total,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "growth": max(0, peak - baseline),
        "peak_reset": peak_reset,
        "seconds": writing,
        "file_bytes": Path(path).stat().st_size,
    }


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    small, large = (100, 1_000) if quick else (10_000, 100_000)
    name = f"embeddings write: Parquet peak RSS growth, {large:,} vs {small:,} rows of {DIMENSIONS} dims"
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        return [unavailable(BENCHMARK, name, "MiB", f"pyarrow is not installed: {exc}", GOAL)]
    with tempfile.TemporaryDirectory(prefix="bench-vectors-") as tmp:
        measured = {n: run_worker(measure_write, rows=n, path=f"{tmp}/{n}.parquet") for n in (small, large)}
        jsonl = run_worker(measure_write, rows=small, path=f"{tmp}/{small}.jsonl")
    note = (
        f"; JSONL, {small:,} rows: {jsonl['rows'] / jsonl['seconds']:,.0f} rows/s, "
        f"{jsonl['file_bytes'] / jsonl['rows'] / 1024:.1f} KiB a row"
    )
    return [growth_row(BENCHMARK, name, measured, small, large, GOAL, note, {f"jsonl {small}": jsonl})]
