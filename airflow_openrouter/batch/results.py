"""Result rows, the JSONL file they go to, and the manifest that goes to XCom. Shared by both engines.

One row per input item, whatever happened to it::

    {"custom_id": "doc-17", "index": 17, "status": "succeeded", "output": {...} | "text",
     "error": null, "usage": {"prompt_tokens": 41, "completion_tokens": 12, "cost": 0.0000123}}

``status`` is one of :data:`ROW_STATUSES`. An ``invalid_output`` row keeps the model's raw text in
``output`` and the validation errors in ``error``. Rows are written as they are produced and never
held: the writer keeps a set of the indexes it has written, so memory stays flat as batches grow.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.schemas import OutputSpec
    from airflow_openrouter.types import BatchResult, ChatCompletion

ROW_STATUSES = ("succeeded", "failed", "invalid_output", "expired", "cancelled", "missing")
MANIFEST_BATCH_IDS = 10  # the manifest lists this many batch ids, plus their count


def result_row(
    custom_id: str,
    index: int,
    status: str,
    *,
    output: Any = None,
    error: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "index": index,
        "status": status,
        "output": output,
        "error": error,
        "usage": dict(usage) if usage is not None else None,
    }


def row_from_completion(
    custom_id: str, index: int, completion: ChatCompletion, spec: OutputSpec
) -> dict[str, Any]:
    """The row of a completion: ``succeeded`` with the validated output, or ``invalid_output``."""
    from airflow_openrouter.exceptions import OpenRouterOutputValidationError

    usage = completion.usage
    row_usage = (
        {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost": usage.cost,
        }
        if usage is not None
        else None
    )
    text = completion.content
    try:
        output = spec.parse(text)
    except OpenRouterOutputValidationError as exc:
        return result_row(
            custom_id, index, "invalid_output", output=text, error="; ".join(exc.errors), usage=row_usage
        )
    return result_row(custom_id, index, "succeeded", output=output, usage=row_usage)


def row_from_batch_result(result: BatchResult, index: int, spec: OutputSpec) -> dict[str, Any]:
    """The row of one line of a finished batch."""
    if result.error is not None:
        return result_row(result.custom_id, index, "failed", error=result.error.message or result.error.type)
    completion = result.completion()
    if completion is None:
        status_code = result.response.status_code if result.response else None
        return result_row(
            result.custom_id, index, "failed", error=f"The request failed (HTTP {status_code})."
        )
    return row_from_completion(result.custom_id, index, completion, spec)


@dataclass
class Tally:
    """Counts per status, token totals and cost of the rows written, plus who answered."""

    counts: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    provider: str | None = None

    def add(self, row: Mapping[str, Any]) -> None:
        self.counts[row["status"]] += 1
        usage = row.get("usage") or {}
        self.prompt_tokens += usage.get("prompt_tokens") or 0
        self.completion_tokens += usage.get("completion_tokens") or 0
        self.cost += usage.get("cost") or 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unsuccessful(self) -> int:
        """Items that did not produce a valid output: failed, invalid, lost or never run."""
        return self.total - self.counts["succeeded"]


class ResultsWriter:
    """Streams rows into one JSONL file, exactly one per item.

    :param path: the JSONL file (local or remote; written in one pass, so ``s3://`` works).
    :param indexes: ``custom_id -> index`` of every item.
    """

    def __init__(self, path: ObjectStoragePath, indexes: Mapping[str, int]) -> None:
        self.path = path
        self.indexes = indexes
        self.tally = Tally()
        self._written: set[int] = set()
        self._file: TextIO | None = None

    def __enter__(self) -> ResultsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def has_written(self, index: int) -> bool:
        return index in self._written

    def write(self, row: Mapping[str, Any], *, provider: str | None = None) -> bool:
        """Write *row* unless its item already has one; returns whether it was written."""
        assert self._file is not None, "use ResultsWriter as a context manager"
        if row["index"] in self._written:
            return False
        self._written.add(row["index"])
        self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self.tally.add(row)
        self.tally.provider = self.tally.provider or provider
        return True

    def write_unwritten(self, outcome_of: Callable[[int], tuple[str, str]]) -> None:
        """A row for every item without one yet; *outcome_of(index)* gives its ``(status, error)``."""
        for custom_id, index in self.indexes.items():
            if index not in self._written:
                status, error = outcome_of(index)
                self.write(result_row(custom_id, index, status, error=error))


def build_manifest(
    *,
    output_uri: str,
    engine: str,
    model: str | None,
    tally: Tally,
    batch_ids: list[str] | None = None,
    usage: Mapping[str, float] | None = None,
    started_at: float | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The small (< 2 KB) XCom value that describes a run; the rows themselves stay in ``output_uri``.

    :param usage: billed totals reported for the whole run (the Batch API's); default: the rows' sums.
    :param started_at: unix time the run started (the first submission), for the timings.
    """
    finished_at = time.time()
    usage = usage or {}
    prompt_tokens = int(usage.get("prompt_tokens", tally.prompt_tokens))
    completion_tokens = int(usage.get("completion_tokens", tally.completion_tokens))
    ids = batch_ids or []
    return {
        "output_uri": output_uri,
        "engine": engine,
        "status": status,
        "model": model,
        "provider": tally.provider,
        "total": tally.total,
        "counts": {name: tally.counts[name] for name in ROW_STATUSES},
        "batch_ids": ids[:MANIFEST_BATCH_IDS],
        "batch_count": len(ids),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost_usd": round(float(usage.get("cost", tally.cost)), 8),
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "duration_s": round(finished_at - started_at, 3) if started_at is not None else None,
    }


def failure_reason(tally: Tally, max_failed_fraction: float) -> str | None:
    """Why the run fails, when more items went wrong than *max_failed_fraction* allows."""
    if tally.total == 0 or tally.unsuccessful / tally.total <= max_failed_fraction:
        return None
    by_status = ", ".join(f"{tally.counts[s]} {s}" for s in ROW_STATUSES[1:] if tally.counts[s])
    return (
        f"{tally.unsuccessful} of {tally.total} items did not succeed ({by_status}), more than "
        f"max_failed_fraction={max_failed_fraction:g} allows."
    )


def _iso(unix_time: float | None) -> str | None:
    return None if unix_time is None else datetime.fromtimestamp(unix_time, tz=timezone.utc).isoformat()
