"""Result rows, the JSONL file they go to, and the manifest that goes to XCom. Shared by both engines.

One row per input item, whatever happened to it::

    {"custom_id": "doc-17", "id": "doc-17", "index": 17, "status": "succeeded", "output": {...} | "text",
     "error": null, "cause": null, "transient": null, "provider": "OpenAI",
     "model": "openai/gpt-4o-mini-2024-07-18", "generation_id": "gen-...", "cached": false,
     "usage": {"prompt_tokens": 41, "completion_tokens": 12, "total_tokens": 53, "cached_tokens": 0,
               "reasoning_tokens": 0, "cost": 0.0000123, "cost_details": {...}, "is_byok": false}}

``status`` is a :data:`~.vocabulary.RowStatus`. ``custom_id`` is the item's id as a string (the
``id_field`` value, else the index); ``id`` is that value as the item had it (an integer stays an
integer). An unsuccessful row says why in ``error``, with a short ``cause`` and whether a retry may
succeed (``transient``; see :mod:`.failures`). An ``invalid_output`` row keeps the model's raw text in
``output``. ``usage``, ``model`` (as served) and ``generation_id`` are the exact ledger of the answer
(:mod:`airflow_openrouter.cost.ledger`); a row served from the result cache has ``cached: true``.
``attempts`` counts the requests made for the item (recovery passes included, see :mod:`.recovery`) and
``history`` lists each earlier attempt's ``status``, ``error``, ``cause``, ``model`` and ``cost``: the
row itself is the last attempt's.
Rows are written as they are produced and never held: the writer keeps one bit per item (written or
not) beside the items' compact :class:`~.ids.ItemIds`, so memory stays flat as batches grow.
"""

from __future__ import annotations

import json
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from airflow_openrouter.batch.failures import cause_of, item_error_cause
from airflow_openrouter.batch.ids import IndexBits
from airflow_openrouter.batch.vocabulary import ROW_STATUSES
from airflow_openrouter.cost.ledger import Ledger, answer_fields, row_usage

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.ids import ItemIds
    from airflow_openrouter.batch.progress import Progress
    from airflow_openrouter.batch.vocabulary import Engine, ManifestStatus, RowStatus
    from airflow_openrouter.cost.prices import ModelPrice
    from airflow_openrouter.schemas import OutputSpec
    from airflow_openrouter.types import BatchResult, ChatCompletion

__all__ = [
    "ResultsWriter",
    "Tally",
    "build_manifest",
    "result_row",
    "row_from_batch_result",
    "row_from_completion",
    "row_from_failed_batch_result",
]

MANIFEST_BATCH_IDS = 10  # the manifest lists this many batch ids, plus their count
MANIFEST_TOP = 10  # and this many providers and error causes


def result_row(
    custom_id: str,
    index: int,
    status: RowStatus,
    *,
    output: Any = None,
    error: str | None = None,
    cause: str | None = None,
    transient: bool | None = None,
    provider: str | None = None,
    usage: Mapping[str, Any] | None = None,
    model: str | None = None,
    generation_id: str | None = None,
    cached: bool = False,
    attempts: int = 1,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "id": None,  # filled in by the writer, which knows the item's original id
        "index": index,
        "status": status,
        "output": output,
        "error": error,
        "cause": cause,
        "transient": transient,
        "provider": provider,
        "model": model,
        "generation_id": generation_id,
        "cached": cached,
        "usage": dict(usage) if usage is not None else None,
        "attempts": attempts,
        "history": history or [],
    }


def row_from_completion(
    custom_id: str, index: int, completion: ChatCompletion, spec: OutputSpec
) -> dict[str, Any]:
    """The row of a completion: ``succeeded`` with the validated output, or ``invalid_output``."""
    from airflow_openrouter.exceptions import OpenRouterOutputValidationError

    ledger = {**answer_fields(completion), "usage": row_usage(completion.usage)}
    text = completion.content
    try:
        output = spec.parse(text)
    except OpenRouterOutputValidationError as exc:
        error = "; ".join(exc.errors)
        return result_row(
            custom_id,
            index,
            "invalid_output",
            output=text,
            error=error,
            cause=cause_of(exc),
            transient=False,
            **ledger,
        )
    return result_row(custom_id, index, "succeeded", output=output, **ledger)


def row_from_error(custom_id: str, index: int, error: Exception) -> dict[str, Any]:
    """The row of a request that failed (the concurrent engine)."""
    transient = bool(getattr(error, "transient", False))
    return result_row(
        custom_id, index, "failed", error=str(error), cause=cause_of(error), transient=transient
    )


def row_from_batch_result(
    result: BatchResult, custom_id: str, index: int, spec: OutputSpec
) -> dict[str, Any]:
    """The row of one line of a finished batch (*custom_id*: the item's, without the run tag)."""
    completion = result.completion()
    if result.error is not None or completion is None:
        return row_from_failed_batch_result(result, custom_id, index)
    return row_from_completion(custom_id, index, completion, spec)


def row_from_failed_batch_result(result: BatchResult, custom_id: str, index: int) -> dict[str, Any]:
    """The row of a batch line that failed (an ``error``, or an HTTP status of 400 or more); the
    same for every endpoint."""
    status_code = result.response.status_code if result.response else None
    cause, transient = item_error_cause(result.error, status_code)
    message = (result.error.message or result.error.type) if result.error else None
    error = message or f"The request failed (HTTP {status_code})."
    return result_row(custom_id, index, "failed", error=error, cause=cause, transient=transient)


@dataclass
class Tally:
    """What the rows written add up to: counts per status, tokens, cost, providers and causes."""

    counts: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    providers: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    #: Indexes of unsuccessful items whose failure may pass: what a retry would send again.
    retry_indexes: array[int] = field(default_factory=lambda: array("q"))
    #: Cost fields of the manifest (cached rows, cost by status, list price).
    ledger: Ledger = field(default_factory=Ledger)

    def add(self, row: Mapping[str, Any]) -> None:
        self.ledger.add(row)
        self.counts[row["status"]] += 1
        usage = row.get("usage") or {}
        self.prompt_tokens += usage.get("prompt_tokens") or 0
        self.completion_tokens += usage.get("completion_tokens") or 0
        self.cost += usage.get("cost") or 0.0
        if row.get("provider"):
            self.providers[row["provider"]] += 1
        if row["status"] != "succeeded":
            self.causes[row.get("cause") or row["status"]] += 1
            # A row written before causes existed (an old checkpoint) is sent again, as it was then.
            if row.get("transient", row["status"] == "failed"):
                self.retry_indexes.append(row["index"])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unsuccessful(self) -> int:
        """Items that did not produce a valid output: failed, invalid, lost or never run."""
        return self.total - self.counts["succeeded"]

    @property
    def provider(self) -> str | None:
        """The provider that served the most rows."""
        return self.providers.most_common(1)[0][0] if self.providers else None


class ResultsWriter:
    """Streams rows into one JSONL file, exactly one per item.

    :param path: the JSONL file (local or remote; written in one pass, so ``s3://`` works).
    :param ids: the items' ids (:func:`~.items.index_custom_ids`).
    :param on_written: called with every row written (e.g. to add new answers to the result cache).
    :param progress: counts each row written, for the progress lines of a long fetch.
    """

    def __init__(
        self,
        path: ObjectStoragePath,
        ids: ItemIds,
        on_written: Callable[[dict[str, Any]], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.path = path
        self.ids = ids
        self._on_written = on_written
        self.progress = progress
        self.tally = Tally()
        self._written = IndexBits(len(ids))
        self._file: TextIO | None = None

    def __enter__(self) -> ResultsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, row: dict[str, Any]) -> bool:
        """Write *row* unless its item already has one; returns whether it was written."""
        if row["index"] in self._written:
            return False
        self._written.add(row["index"])
        row["id"] = self.ids.original(row["custom_id"], row["index"])
        self._emit(row)
        self.tally.add(row)
        if self._on_written is not None:
            self._on_written(row)
        if self.progress is not None:
            self.progress.settled(
                ok=row["status"] == "succeeded", cost_usd=(row.get("usage") or {}).get("cost") or 0.0
            )
        return True

    def _emit(self, row: dict[str, Any]) -> None:
        """Put one row in the file (a subclass may write another format: see :mod:`.vectors`)."""
        assert self._file is not None, "use ResultsWriter as a context manager"
        self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def manifest_fields(self) -> dict[str, Any]:
        """Keys this writer adds to the manifest (e.g. the vectors' ``dimensions``)."""
        return {}

    def write_unwritten(self, row_for: Callable[[str, int], dict[str, Any]]) -> None:
        """A row for every item without one yet: ``row_for(custom_id, index)``."""
        if len(self._written) >= len(self.ids):
            return  # (the custom ids are read again from the items only when some item has no row)
        for custom_id, index in self.ids.items():
            if index not in self._written:
                self.write(row_for(custom_id, index))


def build_manifest(
    *,
    output_uri: str,
    engine: Engine,
    model: str | None,
    tally: Tally,
    status: ManifestStatus,
    batch_ids: list[str] | None = None,
    usage: Mapping[str, float] | None = None,
    started_at: float | None = None,
    price: ModelPrice | None = None,
    estimate: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The small (< 2 KB) XCom value that describes a run; the rows themselves stay in ``output_uri``.
    Both engines fill every key.

    :param usage: billed totals reported for the whole run (the Batch API's); default: the rows' sums.
        Tokens are always the rows' sums (rows from the result cache included: their tokens are what
        their outputs took, at no cost now).
    :param started_at: unix time the run started (the first submission), for the timings.
    :param price: the model's sync list price, for ``list_price_usd``.
    :param estimate: ``estimated_cost_usd`` and ``estimate_basis`` (see :mod:`airflow_openrouter.cost`).
    """
    finished_at = time.time()
    usage = usage or {}
    prompt_tokens = tally.prompt_tokens
    completion_tokens = tally.completion_tokens
    ids = batch_ids or []
    return {
        "output_uri": output_uri,
        "engine": engine,
        "status": status,
        "model": model,
        "provider": tally.provider,
        "providers": dict(tally.providers.most_common(MANIFEST_TOP)),
        "total": tally.total,
        "counts": {name: tally.counts[name] for name in ROW_STATUSES},
        "errors": dict(tally.causes.most_common(MANIFEST_TOP)),
        "batch_ids": ids[:MANIFEST_BATCH_IDS],
        "batch_count": len(ids),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost_usd": round(float(usage.get("cost", tally.cost)), 10),
        **tally.ledger.manifest_fields(price),
        "estimated_cost_usd": (estimate or {}).get("estimated_cost_usd"),
        "estimate_basis": (estimate or {}).get("estimate_basis"),
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "duration_s": round(finished_at - started_at, 3) if started_at is not None else None,
    }


def _iso(unix_time: float | None) -> str | None:
    return None if unix_time is None else datetime.fromtimestamp(unix_time, tz=timezone.utc).isoformat()
