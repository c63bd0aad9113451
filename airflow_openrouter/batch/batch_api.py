"""The ``batch`` engine: OpenRouter's Batch API (about half price; minutes to hours).

A run has two halves, with a wait in between that the operator owns (deferral to
:class:`~airflow_openrouter.triggers.batch.OpenRouterBatchTrigger`, or the same loop on the worker):

* :func:`start` -- re-attach to the batches recorded for these inputs (looking at them once: a batch
  that ended without results is dropped and its items go back to ``todo``), then submit ``todo``
  (:mod:`.submit`): the items never submitted, and those of dropped batches;
* :func:`fetch` -- after the wait, write one row per item from the completed batches (the newest
  batch holding an item wins, so a resubmission replaces the row it was sent for), label the rest,
  and judge the run (:mod:`.failures`). When the verdict is a retryable failure, the items a retry
  should send again go to the record's ``todo``: a retry resubmits exactly those, in a new batch,
  and re-attaches to everything else.

Waits end at :func:`deadline`: ``timeout`` from now, else when the last batch expires -- its
``expires_at`` plus an hour of grace when OpenRouter gave one, else ``created_at`` plus the 24 h
completion window plus the grace.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_openrouter._transport.calls import calls_logged_at
from airflow_openrouter.batch.failures import RunSummary, Verdict, judge
from airflow_openrouter.batch.poll import poll_once
from airflow_openrouter.batch.progress import Progress
from airflow_openrouter.batch.results import ResultsWriter, build_manifest, result_row, row_from_batch_result
from airflow_openrouter.batch.state import reattach_or_start, run_tag
from airflow_openrouter.batch.submit import submit_todo
from airflow_openrouter.batch.watch import LATE_LOOK_S, BatchEvent, BatchWatch
from airflow_openrouter.exceptions import OpenRouterPaymentRequiredError

if TYPE_CHECKING:
    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.spool import RequestSpool
    from airflow_openrouter.batch.state import BatchRecord, RecordStore, SubmittedBatch
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

__all__ = ["Started", "deadline", "fetch", "start"]

_EXPIRY_GRACE_S = 3600.0
_COMPLETION_WINDOW_S = 24 * 3600.0
# When OpenRouter gives neither expires_at nor created_at: as long as the slowest provider (Vertex).
_LONGEST_BATCH_S = 96 * 3600.0


@dataclass(frozen=True)
class Started:
    """What :func:`start` did: the record, the batches submitted now, and -- when nothing was
    submitted and every recorded batch had already finished -- the event to fetch with at once."""

    record: BatchRecord
    submitted: list[SubmittedBatch]
    finished: BatchEvent | None


def start(
    hook: OpenRouterHook, spool: RequestSpool, job: JobOptions, store: RecordStore, log: Any, *, look: bool
) -> Started:
    """Re-attach or start, then submit what is still to do. *look*: poll the recorded batches first."""
    record = reattach_or_start(
        store, fingerprint=spool.fingerprint, model=job.model, total_items=spool.total, log=log
    )
    watch = None
    if record.batches and look:
        # Re-attaching: a re-attach may come long after the batches finished.
        watch = BatchWatch(record.batch_ids, deadline=time.time() + LATE_LOOK_S, created_at=_created(record))
        poll_once(hook, watch, log)
        ended = (watch.outcome() or BatchEvent("completed", ())).ended_without_results()
        if ended:
            log.warning(
                "Batch(es) %s ended without results (%s): submitting their items again.",
                ", ".join(ended),
                ", ".join(
                    f"{watch.snapshot(i).status}: {watch.snapshot(i).error or 'no reason given'}"
                    for i in ended
                ),
            )
            record.drop(ended)
            store.save(record)
            watch.forget(ended)
    submitted = submit_todo(
        hook,
        spool,
        record,
        store,
        tag=run_tag(job.identity.key, spool.fingerprint),
        provider=job.provider,
        log=log,
    )
    finished = watch.outcome() if watch is not None and not submitted else None
    return Started(
        record, submitted, finished if finished and finished.status not in ("timeout", "error") else None
    )


def _created(record: BatchRecord) -> dict[str, int | None]:
    return {b.id: b.created_at for b in record.batches}


def deadline(record: BatchRecord, timeout: float | None, poll_interval: float) -> float:
    """When to stop waiting (see the module docstring); never sooner than two polls from now, so that
    a re-attached task always polls before it can time out."""
    now = time.time()
    if timeout is not None:
        computed = now + timeout
    else:
        computed = max((_expiry_of(b, now) for b in record.batches), default=now + _LONGEST_BATCH_S)
    return max(computed, now + 2 * poll_interval)


def _expiry_of(batch: SubmittedBatch, now: float) -> float:
    if batch.expires_at:
        return batch.expires_at + _EXPIRY_GRACE_S
    if batch.created_at:
        return batch.created_at + _COMPLETION_WINDOW_S + _EXPIRY_GRACE_S
    return now + _LONGEST_BATCH_S


def trigger_kwargs(record: BatchRecord) -> dict[str, Any]:
    """What the trigger needs besides the deadline: the ids and their creation times."""
    return {"batch_ids": record.batch_ids, "created_at": _created(record)}


def fetch(
    hook: OpenRouterHook,
    record: BatchRecord,
    event: BatchEvent,
    job: JobOptions,
    ids: ItemIds,
    store: RecordStore,
    tag: str,
    log: Any,
) -> tuple[dict[str, Any], Verdict]:
    """Write the rows, build the manifest, judge the run, and leave a retry's work in the record."""
    batch_ids = record.batch_ids
    started_at = min((b.created_at for b in record.batches if b.created_at), default=None)
    progress = Progress("rows", len(ids), log, in_flight=False)
    # A results page per few hundred rows: their per-call lines are DEBUG, the progress lines INFO.
    with ResultsWriter(job.results_file, ids, progress) as writer, calls_logged_at(logging.DEBUG):
        for batch in reversed(record.batches):
            if event.status_of(batch.id) == "completed":
                _write_batch_results(hook, batch.id, writer, job, tag, log)
        writer.write_unwritten(lambda custom_id, index: _unfinished_row(record, event, custom_id, index))
    progress.summary()
    summary = RunSummary(
        total=writer.tally.total,
        unsuccessful=writer.tally.unsuccessful,
        retry_count=len(writer.tally.retry_indexes),
        causes=writer.tally.causes,
        output_uri=str(job.results_file),
        engine="batch",
        batches_status=event.status,
        batches_reason=event.reason,
    )
    verdict = judge(summary, job.limits.max_failed_fraction)
    ended = event.ended_without_results()
    if ended or verdict.retryable:
        record.drop(ended)
        if verdict.retryable:
            record.resubmit(writer.tally.retry_indexes)
        store.save(record)
    manifest = build_manifest(
        output_uri=str(job.results_file),
        engine="batch",
        model=record.model,
        tally=writer.tally,
        status=verdict.status,
        batch_ids=batch_ids,
        usage=event.usage,
        started_at=started_at,
    )
    return manifest, verdict


def _write_batch_results(
    hook: OpenRouterHook, batch_id: str, writer: ResultsWriter, job: JobOptions, tag: str, log: Any
) -> None:
    suffix = f"~{tag}"
    try:
        for result in hook.iter_batch_results(batch_id):
            # A batch recorded before run tags existed carries the bare custom id.
            custom_id = result.custom_id.removesuffix(suffix)
            index = writer.ids.index_of(custom_id)
            if index is None:
                log.warning("Batch %s returned unknown custom_id %r; ignored.", batch_id, result.custom_id)
                continue
            writer.write(row_from_batch_result(result, custom_id, index, job.spec))
    except OpenRouterPaymentRequiredError as exc:
        raise exc.with_message(
            f"Batch {batch_id} has finished, but OpenRouter withholds its results until the account has "
            "enough credits (HTTP 402). Add credits at https://openrouter.ai/settings/credits, then retry "
            "the task: it fetches the same results without submitting anything again."
        ) from exc


def _unfinished_row(record: BatchRecord, event: BatchEvent, custom_id: str, index: int) -> dict[str, Any]:
    """The row of an item that has no result, from how the batch holding it ended."""
    batch = record.holder_of(index)
    if batch is None:  # e.g. its batch was dropped by an earlier try and not resubmitted yet
        return result_row(
            custom_id, index, "missing", error="No batch holds this item.", cause="missing", transient=True
        )
    status = event.status_of(batch.id)
    if status == "completed":
        error = f"Batch {batch.id} completed without a result for this item."
        return result_row(custom_id, index, "missing", error=error, cause="missing", transient=True)
    if status in ("expired", "cancelled"):
        error = f"Batch {batch.id} was {status} before this item was processed; a retry resubmits it."
        return result_row(custom_id, index, status, error=error, cause=f"batch {status}", transient=True)
    if status == "not_found":
        error = (
            f"Batch {batch.id} was {event.error_of(batch.id) or 'not found'}; a retry resubmits this item."
        )
        return result_row(custom_id, index, "missing", error=error, cause="batch not found", transient=True)
    reason = event.error_of(batch.id) or "no reason given"
    error = f"Batch {batch.id} {status}: {reason}"
    return result_row(
        custom_id, index, "failed", error=error, cause=f"batch {status}", transient=status != "failed"
    )
