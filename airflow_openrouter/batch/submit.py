"""Split the rendered requests into batches and submit the ones not submitted yet.

Every item is rendered before anything is sent, so that a template error in item 9,000 fails the
task before the first ``POST /batches``. The rendered requests go to a local spool file, not to
memory: the spool also yields the fingerprint of exactly what will be sent, and the split into
batches of at most 5,000 requests and 200 MB (OpenRouter's limits; one model per batch).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_openrouter.batch.state import SubmittedBatch

if TYPE_CHECKING:
    from airflow_openrouter.batch.items import ItemRequest
    from airflow_openrouter.batch.state import BatchRecord, RecordStore
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import Batch

MAX_REQUESTS_PER_BATCH = 5_000
MAX_BYTES_PER_BATCH = 200 * 1024 * 1024
# Room for what surrounds the requests in the POST body: endpoint, model, provider, brackets.
_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Chunk:
    """One future batch: a contiguous run of items and where its lines sit in the spool."""

    first_index: int
    count: int
    offset: int
    size: int


class RequestSpool:
    """The rendered requests in a local temporary file, one compact JSON line each.

    :param requests: the requests, in item order (rendered lazily, one at a time).
    :param fingerprint_of: what else decides what is sent (model, endpoint, provider); mixed into
        the fingerprint with every line.
    """

    def __init__(
        self,
        requests: Iterable[ItemRequest],
        *,
        fingerprint_of: Mapping[str, Any],
        max_requests: int = MAX_REQUESTS_PER_BATCH,
        max_bytes: int = MAX_BYTES_PER_BATCH,
    ) -> None:
        # Closed by close() (the spool is a context manager); deleted by the OS if the process dies.
        self._file = tempfile.TemporaryFile()  # noqa: SIM115
        self.chunks: list[Chunk] = []
        self.total = 0
        try:
            self.fingerprint = self._spool(requests, fingerprint_of, max_requests, max_bytes)
        except BaseException:
            self._file.close()
            raise

    def _spool(
        self,
        requests: Iterable[ItemRequest],
        fingerprint_of: Mapping[str, Any],
        max_requests: int,
        max_bytes: int,
    ) -> str:
        """Write every request line, cut the chunks, and return the fingerprint of it all."""
        digest = hashlib.sha256(json.dumps(fingerprint_of, sort_keys=True).encode())
        budget = max_bytes - _ENVELOPE_BYTES
        first = offset = size = 0
        for request in requests:
            line = json.dumps(request.line(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            if self.total > first and (self.total - first >= max_requests or size + len(line) > budget):
                self.chunks.append(Chunk(first, self.total - first, offset, size))
                first, offset, size = self.total, offset + size, 0
            self._file.write(line)
            digest.update(line)
            size += len(line)
            self.total += 1
        if self.total > first:
            self.chunks.append(Chunk(first, self.total - first, offset, size))
        return digest.hexdigest()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every request line, in item order."""
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)

    def read(self, chunk: Chunk) -> Iterator[dict[str, Any]]:
        """The request lines of one chunk."""
        self._file.seek(chunk.offset)
        for line in self._file.read(chunk.size).splitlines():
            yield json.loads(line)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RequestSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def submit_missing_batches(
    hook: OpenRouterHook,
    spool: RequestSpool,
    record: BatchRecord,
    store: RecordStore,
    *,
    provider: Mapping[str, Any] | None = None,
    log: Any = None,
) -> list[SubmittedBatch]:
    """Submit the chunks that have no batch in *record* yet; returns the batches submitted now.

    The record is saved right after each ``POST /batches``, before the next chunk is sent: a crash
    mid-way leaves a record of exactly the batches that exist, and the next try submits the rest.
    Chunks are a pure function of the inputs, so a retry's chunks are the record's: a chunk whose first
    item starts a recorded batch is submitted already.

    **An unanswered POST.** Right before each POST the record gets a *pending* marker (the chunk and the
    time). When the POST's answer is lost after the request left (a dropped connection, a timeout, a
    5xx), or a later try finds the marker, the batch may exist all the same: the workspace's batches
    created since then are listed, and the one with this model and this many requests, not recorded
    yet, is adopted instead of paying for a second one. Several candidates fail the task (which one is
    ours cannot be told); none means the POST created nothing, and the chunk is submitted.
    """
    from airflow_openrouter.exceptions import (
        OpenRouterBadRequestError,
        OpenRouterConnectionError,
        OpenRouterServerError,
    )

    submitted = []
    recorded = {b.first_index for b in record.batches}
    for chunk in (c for c in spool.chunks if c.first_index not in recorded):
        pending = record.pending
        batch = None
        if pending is not None and pending.get("first_index") == chunk.first_index:
            batch = _find_unrecorded_batch(hook, record, chunk, pending["posted_at"], log)
        if batch is None:
            posted_at = int(time.time())
            record.pending = {"first_index": chunk.first_index, "count": chunk.count, "posted_at": posted_at}
            store.save(record)
            try:
                batch = hook.create_batch(
                    model=record.model, requests=list(spool.read(chunk)), provider=provider
                )
            except OpenRouterBadRequestError as exc:
                raise exc.with_message(
                    f"The Batch API rejected items {chunk.first_index}..{chunk.first_index + chunk.count - 1} "
                    f"for model {record.model!r}: {exc.message} Batches take text-only chat requests to "
                    "models with a batch variant; for other models or multimodal items use "
                    "engine='concurrent'."
                ) from exc
            except (OpenRouterConnectionError, OpenRouterServerError) as exc:
                if isinstance(exc, OpenRouterConnectionError) and not exc.request_sent:
                    raise
                if log is not None:
                    log.warning(
                        "POST /batches for items %d..%d got no usable answer (%s): looking for the batch it "
                        "may have created.",
                        chunk.first_index,
                        chunk.first_index + chunk.count - 1,
                        exc,
                    )
                batch = _find_unrecorded_batch(hook, record, chunk, posted_at, log)
                if batch is None:
                    raise  # the marker stays: the next try looks again before submitting
        entry = SubmittedBatch(batch.id, chunk.first_index, chunk.count, batch.created_at, batch.expires_at)
        record.batches.append(entry)
        record.batches.sort(key=lambda b: b.first_index)
        record.pending = None
        store.save(record)
        if log is not None:
            log.info(
                "Submitted batch %s: items %d..%d to %s.",
                batch.id,
                chunk.first_index,
                chunk.first_index + chunk.count - 1,
                record.model,
            )
        submitted.append(entry)
    return submitted


# How far before the POST to look for the batch it created (clocks differ).
_CLOCK_SKEW_S = 60
_MAX_LIST_PAGES = 20


def _find_unrecorded_batch(
    hook: OpenRouterHook, record: BatchRecord, chunk: Chunk, posted_at: int, log: Any
) -> Batch | None:
    """The one batch created since *posted_at* for this model and this chunk's size that the record does
    not know; ``None`` when there is none; fails the task when there are several."""
    from airflow_openrouter._compat import AirflowFailException

    known = set(record.batch_ids)
    candidates: list[Batch] = []
    after: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        page = hook.list_batches(limit=100, after=after, created_after=posted_at - _CLOCK_SKEW_S)
        candidates += [
            b
            for b in page.data
            if b.model == record.model and b.request_counts.total == chunk.count and b.id not in known
        ]
        if not page.has_more or not page.last_id:
            break
        after = page.last_id
    items = f"items {chunk.first_index}..{chunk.first_index + chunk.count - 1}"
    if len(candidates) > 1:
        raise AirflowFailException(
            f"An earlier POST /batches for {items} got no answer, and batches "
            f"{', '.join(b.id for b in candidates)} all match it (model {record.model}, {chunk.count} "
            "requests, created since). Which one is this task's cannot be told, so nothing is submitted "
            "again. Check them on openrouter.ai; to submit afresh, change the inputs or delete the "
            "record (see the log)."
        )
    if candidates:
        if log is not None:
            log.warning(
                "Adopting batch %s for %s: an earlier POST /batches created it, but its answer was lost.",
                candidates[0].id,
                items,
            )
        return candidates[0]
    if log is not None:
        log.info("No batch was created for %s by the earlier POST: submitting it.", items)
    return None
