"""The batch engine's recovery pass (:mod:`.recovery`): follow-up batches that never pay twice.

A pass is written down before anything of it is submitted, in this order:

1. its *recovery file*, ``recovery/{attempt}.jsonl`` in the run's checkpoint directory: one line per
   item of the pass, ``{"index", "model", "line", "previous"}`` (the request line of this attempt -- the
   same request, or the repair turn -- and the item's previous row, which becomes its ``history``);
   written to a ``.partial`` file, then renamed;
2. the record: ``recovering`` is the pass's attempt and ``todo`` its items;
3. the follow-up batches, by :func:`~.submit.submit_todo` over a :class:`PassSpool` of the file: one
   chunk never mixes models (a fallback model gets a batch of its own), each batch is saved in the
   record right after its POST (``attempt`` is the pass's), and its custom ids carry the pass's own run
   tag (:func:`~.state.run_tag` with the attempt), so a lost POST's batch is proven exactly as the first
   pass's are.

A retry or a clear in the middle finds the record: :func:`~.batch_api.start` re-attaches to the
follow-up batches and submits from the recovery file only what the record says is left.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_openrouter.batch.budget import estimate_lines
from airflow_openrouter.batch.checkpoint import Checkpoint
from airflow_openrouter.batch.recovery import candidates
from airflow_openrouter.batch.spool import MAX_BYTES_PER_BATCH, MAX_REQUESTS_PER_BATCH, Chunk
from airflow_openrouter.batch.state import as_ranges, run_tag
from airflow_openrouter.batch.submit import submit_todo
from airflow_openrouter.cost.prices import ModelPrice

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.recovery import Candidate
    from airflow_openrouter.batch.spool import RequestSpool
    from airflow_openrouter.batch.state import BatchRecord, Ranges, RecordStore, SubmittedBatch
    from airflow_openrouter.batch.watch import BatchEvent
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

__all__ = [
    "PassSpool",
    "chunk_cost",
    "engine_of_pass",
    "follow_up",
    "load_pass",
    "pass_todo",
    "previous_rows",
    "submit_pass",
    "worker_recovery_cost",
    "write_pass",
]

# Room for what surrounds the requests in the POST body (as in :mod:`.spool`).
_ENVELOPE_BYTES = 64 * 1024


def _file(directory: ObjectStoragePath, attempt: int) -> ObjectStoragePath:
    # In a folder of its own: the checkpoint reads every ``*.jsonl`` file of *directory* as rows.
    return directory / "recovery" / f"{attempt}.jsonl"


def write_pass(directory: ObjectStoragePath, attempt: int, todo: Iterable[Candidate]) -> None:
    """Step 1 of the module docstring: the pass's recovery file, whole or not at all."""
    final = _file(directory, attempt)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.parent / f"{final.name}.partial"
    with partial.open("w", encoding="utf-8") as out:
        for c in todo:
            entry = {"index": c.index, "model": c.model, "line": c.line, "previous": c.previous}
            out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
    partial.rename(final)


def load_pass(directory: ObjectStoragePath, attempt: int) -> dict[int, dict[str, Any]]:
    """The entries of a pass's recovery file, by item index (empty when there is none)."""
    path = _file(directory, attempt)
    if not path.exists():
        return {}
    with path.open("r", encoding="utf-8") as lines:
        entries = (json.loads(line) for line in lines if line.strip())
        return {entry["index"]: entry for entry in entries}


def previous_rows(directory: ObjectStoragePath, record: BatchRecord) -> dict[int, dict[int, dict[str, Any]]]:
    """``attempt -> index -> entry`` of every pass that has follow-up batches in the record."""
    attempts = {b.attempt for b in record.batches if b.attempt > 1}
    return {attempt: load_pass(directory, attempt) for attempt in sorted(attempts)}


class PassSpool:
    """The request lines of one pass, as :func:`~.submit.submit_todo` reads a
    :class:`~.spool.RequestSpool`: by ranges of item indexes, cut into chunks of one model each."""

    def __init__(
        self,
        entries: Mapping[int, dict[str, Any]],
        *,
        max_requests: int = MAX_REQUESTS_PER_BATCH,
        max_bytes: int = MAX_BYTES_PER_BATCH,
    ) -> None:
        self._entries = entries
        self._max_requests = max_requests
        self._budget = max_bytes - _ENVELOPE_BYTES

    def __len__(self) -> int:
        return len(self._entries)

    def _indexes(self, ranges: Ranges) -> Iterator[int]:
        for start, stop in ranges:
            yield from (i for i in range(start, stop) if i in self._entries)

    def cut(self, ranges: Ranges) -> list[Chunk]:
        """The pass's items in *ranges*, in chunks of one model, at most ``max_requests`` requests and
        ``max_bytes`` bytes each, in item order within a model."""
        by_model: dict[str, list[int]] = {}
        for index in self._indexes(ranges):
            by_model.setdefault(self._entries[index]["model"], []).append(index)
        chunks = []
        for indexes in by_model.values():
            current: list[int] = []
            size = 0
            for index in indexes:
                line = len(json.dumps(self._entries[index]["line"], separators=(",", ":"))) + 1
                if current and (len(current) >= self._max_requests or size + line > self._budget):
                    chunks.append(Chunk(as_ranges(current)))
                    current, size = [], 0
                current.append(index)
                size += line
            if current:
                chunks.append(Chunk(as_ranges(current)))
        return chunks

    def read(self, chunk: Chunk) -> Iterator[dict[str, Any]]:
        """The request lines of one chunk."""
        for index in self._indexes(chunk.ranges):
            yield self._entries[index]["line"]

    def model_of(self, chunk: Chunk) -> str:
        return str(self._entries[chunk.first_index]["model"])


# --- the pass, step by step ----------------------------------------------------------------------


def chunk_cost(spool: RequestSpool | PassSpool, ranges: Ranges, price: ModelPrice | None) -> float | None:
    """The upper bound of what one chunk's batch may cost (recorded with it, for the budget)."""
    if price is None:
        return None
    return float(estimate_lines(spool.read(Chunk(ranges)), price, "batch").cost(price))


def submit_pass(
    hook: OpenRouterHook, job: JobOptions, record: BatchRecord, store: RecordStore, log: Any
) -> list[SubmittedBatch]:
    """Submit what is left of the recovery pass under way (the record's ``todo``), from its file."""
    attempt = record.recovering
    directory = Checkpoint(job.results_file, record.fingerprint, job.identity.key).directory
    spool = PassSpool(load_pass(directory, attempt))
    price = ModelPrice.from_json(record.price)
    return submit_todo(
        hook,
        spool,
        record,
        store,
        tag=run_tag(job.identity.key, record.fingerprint, attempt),
        provider=job.endpoint.batch_provider(job),
        endpoint=job.endpoint,
        log=log,
        attribution=job.attribution,
        estimate_of=lambda ranges: chunk_cost(spool, ranges, price),
        attempt=attempt,
    )


def pass_todo(
    job: JobOptions,
    record: BatchRecord,
    event: BatchEvent,
    due: list[dict[str, Any]],
    spool_of: Callable[[], RequestSpool] | None,
    log: Any,
) -> list[Candidate]:
    """The items of the next recovery pass: none unless every batch completed (a batch that ended
    without results is resubmitted by a retry, see :func:`~.batch_api.fetch`) and the inputs are unchanged."""
    if not due or event.status != "completed" or spool_of is None:
        return []
    spool = spool_of()
    if spool.fingerprint != record.fingerprint:
        log.warning("The inputs changed since the batches were submitted: no recovery pass.")
        return []
    return candidates(due, spool, job)


def engine_of_pass(job: JobOptions, rows: int) -> str:
    engine = job.recovery.engine
    if engine == "auto":
        return "concurrent" if rows < job.recovery.concurrent_below else "batch"
    return engine


def follow_up(
    hook: OpenRouterHook,
    job: JobOptions,
    record: BatchRecord,
    store: RecordStore,
    checkpoint: Checkpoint,
    todo: list[Candidate],
    attempt: int,
    log: Any,
) -> list[SubmittedBatch]:
    """Record the recovery pass (its file, then the record), then submit its follow-up batches."""
    write_pass(checkpoint.directory, attempt, todo)
    record.recovering = attempt
    record.todo = as_ranges(c.index for c in todo)
    store.save(record)
    log.info(
        "Recovery pass %d: %d rows failed in a way that may pass, or were invalid: submitting a "
        "follow-up batch for them.",
        attempt - 1,
        len(todo),
    )
    return submit_pass(hook, job, record, store, log)


def worker_recovery_cost(checkpoint: Checkpoint) -> float:
    """What the rows a recovery pass sent from the worker were billed."""
    return sum(
        (row.get("usage") or {}).get("cost") or 0.0
        for row in checkpoint.rows_newest_first()
        if (row.get("attempts") or 1) > 1
    )
