"""The ``batch`` engine: OpenRouter's Batch API (about half price; minutes to hours).

A run has two halves, with a wait in between that the operator owns (deferral to
:class:`~airflow_openrouter.triggers.batch.OpenRouterBatchTrigger`, or the same loop on the worker):

* :func:`start` -- re-attach to the batches recorded for these inputs (looking at them once: a batch
  that ended without results is dropped and its items go back to ``todo``); before anything is
  submitted, answer what the result cache can and hold the estimate of the rest to ``max_cost_usd``
  (:mod:`.budget`); then submit ``todo`` (:mod:`.submit`): the items never submitted, and those of
  dropped batches;
* :func:`fetch` -- after the wait, write one row per item from the completed batches (the newest
  batch holding an item wins, so a resubmission replaces the row it was sent for), then the rows the
  cache answered, label the rest, add the new answers to the cache, record what each batch was billed,
  and judge the run (:mod:`.failures`). When the verdict is a retryable failure, the items a retry
  should send again go to the record's ``todo``: a retry resubmits exactly those, in a new batch,
  and re-attaches to everything else. Before judging, when every batch completed and rows can be
  recovered (:mod:`.recovery`), a recovery pass runs: a follow-up batch (:mod:`.followup`; the fetch
  then returns :class:`FollowUp` and the operator waits again), or requests from the worker, after
  which the rows are written again.

Waits end at :func:`deadline`: ``timeout`` from now, else when the last batch expires -- its
``expires_at`` plus an hour of grace when OpenRouter gave one, else ``created_at`` plus the 24 h
completion window plus the grace.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_openrouter._transport.calls import calls_logged_at
from airflow_openrouter.batch.budget import Plan, bitmap, dry_run_manifest, plan, price_info
from airflow_openrouter.batch.cached import BulkCache, ItemKeys
from airflow_openrouter.batch.checkpoint import Checkpoint
from airflow_openrouter.batch.failures import RunSummary, Verdict, judge
from airflow_openrouter.batch.followup import (
    chunk_cost,
    engine_of_pass,
    follow_up,
    pass_todo,
    previous_rows,
    submit_pass,
    worker_recovery_cost,
)
from airflow_openrouter.batch.ids import IndexBits
from airflow_openrouter.batch.poll import poll_once
from airflow_openrouter.batch.progress import Progress
from airflow_openrouter.batch.recovery import (
    RecoveryTally,
    add_pass_estimate,
    kind_of,
    next_attempt,
    pass_affordable,
    run_concurrent_pass,
)
from airflow_openrouter.batch.results import ResultsWriter, build_manifest, result_row
from airflow_openrouter.batch.state import reattach_or_start, run_tag
from airflow_openrouter.batch.submit import submit_todo
from airflow_openrouter.batch.watch import LATE_LOOK_S, BatchEvent, BatchWatch
from airflow_openrouter.cost.prices import ModelPrice
from airflow_openrouter.exceptions import OpenRouterPaymentRequiredError

if TYPE_CHECKING:
    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.spool import RequestSpool
    from airflow_openrouter.batch.state import BatchRecord, RecordStore, SubmittedBatch
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

__all__ = ["FollowUp", "Started", "deadline", "fetch", "start"]

_EXPIRY_GRACE_S = 3600.0
_COMPLETION_WINDOW_S = 24 * 3600.0
# When OpenRouter gives neither expires_at nor created_at: as long as the slowest provider (Vertex).
_LONGEST_BATCH_S = 96 * 3600.0


@dataclass(frozen=True)
class Started:
    """What :func:`start` did: the record, the batches submitted now, and -- when nothing was
    submitted and every recorded batch had already finished (or every item came from the result
    cache) -- the event to fetch with at once. A dry run submits nothing and gives its ``manifest``."""

    record: BatchRecord
    submitted: list[SubmittedBatch]
    finished: BatchEvent | None
    manifest: dict[str, Any] | None = None


@dataclass(frozen=True)
class FollowUp:
    """What :func:`fetch` did instead of finishing: it submitted a recovery pass's follow-up batches
    (recorded); wait for the record's batches again, then fetch."""

    record: BatchRecord
    submitted: list[SubmittedBatch]


def start(
    hook: OpenRouterHook,
    spool: RequestSpool,
    job: JobOptions,
    store: RecordStore,
    log: Any,
    *,
    look: bool,
    ids: ItemIds,
) -> Started:
    """Re-attach or start, then submit what is still to do. *look*: poll the recorded batches first.

    Between the two, before anything is submitted (:mod:`.budget`): the result cache answers what it
    can (on the first try of these inputs), and the estimate of what is left plus what earlier tries
    committed must stay under ``max_cost_usd``. A dry run stops there, and writes nothing.
    """
    record = reattach_or_start(
        store, fingerprint=spool.fingerprint, model=job.model, total_items=spool.total, log=log
    )
    watch = None
    if record.batches and look and not job.dry_run:
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
    if record.recovering and not job.dry_run:
        # In the middle of a recovery pass: what is left of it comes from its recovery file.
        submitted = submit_pass(hook, job, record, store, log)
    else:
        decided = _plan(hook, spool, job, ids, record, log)
        if job.dry_run:
            return Started(record, [], None, dry_run_manifest(job, "batch", spool.total, decided))
        price = decided.price
        submitted = submit_todo(
            hook,
            spool,
            record,
            store,
            tag=run_tag(job.identity.key, spool.fingerprint),
            provider=job.endpoint.batch_provider(job),
            endpoint=job.endpoint,
            log=log,
            attribution=job.attribution,
            estimate_of=lambda ranges: chunk_cost(spool, ranges, price),
        )
    if not submitted:
        store.save(record)  # e.g. every item came from the cache: the fetch finds the record
    finished = watch.outcome() if watch is not None and not submitted else None
    if not record.batches:
        finished = BatchEvent("completed", ())
    return Started(
        record, submitted, finished if finished and finished.status not in ("timeout", "error") else None
    )


def _plan(
    hook: OpenRouterHook, spool: RequestSpool, job: JobOptions, ids: ItemIds, record: BatchRecord, log: Any
) -> Plan:
    """Cache lookup (once per inputs), estimate and cap; leaves what a later try needs in the record."""
    cache = BulkCache(job, log) if job.result_cache is not None and not record.looked_up else None
    keys = cache.keys(spool) if cache is not None else None
    todo = bitmap((i for a, b in record.todo for i in range(a, b)), spool.total)
    checkpoint = Checkpoint(job.results_file, spool.fingerprint, job.identity.key)
    with checkpoint.writer(job.try_number) as parts:
        decided = plan(
            spool=spool,
            job=job,
            ids=ids,
            engine="batch",
            prices=price_info(hook, job, "batch", log),
            to_send=lambda i: bool(todo[i >> 3] & (1 << (i & 7))),
            # What the batches committed, and what recovery passes from the worker were billed.
            earlier_usd=record.committed_usd() + worker_recovery_cost(checkpoint),
            cache=cache,
            keys=keys,
            write_cached=None if job.dry_run else parts.write,
            log=log,
        )
    if job.dry_run:
        return decided
    if cache is not None and keys is not None:
        keys.save(checkpoint.directory)
        record.mark_cached(decided.cached)
    if record.todo or record.estimate is None:
        record.estimate = decided.estimate.summary()
        record.price = decided.price.to_json() if decided.price is not None else None
    return decided


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
    log: Any,
    spool_of: Callable[[], RequestSpool] | None = None,
) -> tuple[dict[str, Any], Verdict] | FollowUp:
    """Write the rows, then run a recovery pass when one is due (returning :class:`FollowUp` when it
    is a follow-up batch), else build the manifest, judge the run, and leave a retry's work in the
    record.

    :param spool_of: renders the run's requests again (a context-managed spool), for a recovery pass.
    """
    checkpoint = Checkpoint(job.results_file, record.fingerprint, job.identity.key)
    cached = IndexBits(len(ids))  # successes already added to the result cache (by an earlier write)
    held_back = 0  # rows of a recovery pass that max_cost_usd kept from being sent
    for _ in range(job.recovery.max_row_attempts):
        writer, recovery, due = _write_rows(hook, record, event, job, ids, checkpoint, cached, log)
        todo = pass_todo(job, record, event, due, spool_of, log)
        if not todo:
            break
        attempt = max(c.previous.get("attempts") or 1 for c in todo) + 1
        price = ModelPrice.from_json(record.price)
        engine = engine_of_pass(job, len(todo))
        spent = record.committed_usd() + worker_recovery_cost(checkpoint)
        pass_estimate = pass_affordable(todo, job, price, engine, spent, attempt, log)
        if pass_estimate is None:
            held_back = len(todo)
            break
        record.estimate = add_pass_estimate(record.estimate, pass_estimate, price)
        if engine == "batch":
            return FollowUp(record, follow_up(hook, job, record, store, checkpoint, todo, attempt, log))
        log.info("Recovery pass %d: sending %d rows from the worker.", attempt - 1, len(todo))
        # Recorded before anything is sent: a retry's resubmission (a later batch) wins over these rows.
        record.worker_pass_after = len(record.batches)
        store.save(record)
        with checkpoint.writer(job.try_number) as parts:
            run_concurrent_pass(hook, job, ids, todo, parts.write, spent_usd=spent, log=log)
        checkpoint = Checkpoint(job.results_file, record.fingerprint, job.identity.key)
    ended = event.ended_without_results()
    # The recovery is over (a retry's todo comes from the run's spool), unless a follow-up batch ended
    # without results: a retry then resubmits that pass from its recovery file (its repair turns, under
    # its own run tag), not the items' first requests.
    record.recovering = max((b.attempt for b in record.batches if b.id in ended and b.attempt > 1), default=0)
    summary = RunSummary(
        total=writer.tally.total,
        unsuccessful=writer.tally.unsuccessful,
        retry_count=len(writer.tally.retry_indexes),
        causes=writer.tally.causes,
        output_uri=str(job.results_file),
        engine="batch",
        batches_status=event.status,
        batches_reason=event.reason,
        held_back_by_cap=held_back,
    )
    verdict = judge(summary, job.limits.max_failed_fraction)
    # Before the ended batches are dropped: the manifest names them.
    batch_ids = record.batch_ids
    started_at = min((b.created_at for b in record.batches if b.created_at), default=None)
    record.drop(ended)
    if verdict.retryable and not record.recovering:  # (a pass's todo holds only its own items)
        record.resubmit(writer.tally.retry_indexes)
    store.save(record)  # always: what each batch was billed counts against a later try's budget
    manifest = build_manifest(
        output_uri=str(job.results_file),
        engine="batch",
        model=record.model,
        tally=writer.tally,
        status=verdict.status,
        batch_ids=batch_ids,
        usage=event.usage,
        started_at=started_at,
        price=ModelPrice.from_json(record.price),
        estimate=record.estimate,
    )
    manifest.update(writer.manifest_fields())
    manifest.update(recovery.manifest_fields(record.estimate))
    if event.usage and "cost" in event.usage:
        # The batches' billed totals do not include the rows a recovery pass sent from the worker.
        extra = worker_recovery_cost(checkpoint)
    else:  # the rows' sums: add what their superseded attempts were billed
        extra = recovery.earlier_cost
    manifest["cost_usd"] = round(manifest["cost_usd"] + extra, 10)
    return manifest, verdict


def _write_rows(
    hook: OpenRouterHook,
    record: BatchRecord,
    event: BatchEvent,
    job: JobOptions,
    ids: ItemIds,
    checkpoint: Checkpoint,
    cached: IndexBits,
    log: Any,
) -> tuple[ResultsWriter, RecoveryTally, list[dict[str, Any]]]:
    """Write the results file: rows recovered from the worker first, then the batches' rows (the
    newest batch first; a follow-up batch's rows with their history), then the cached rows, then a
    row for every item left. Returns the writer, the recovery tally and the rows a pass could take."""
    cache = BulkCache(job, log) if job.result_cache is not None else None
    progress = Progress("rows", len(ids), log, in_flight=False)
    recovery = RecoveryTally(job.recovery.max_row_attempts)
    due: list[dict[str, Any]] = []

    def on_written(row: dict[str, Any]) -> None:
        recovery.add(row)
        if kind_of(row, job) is not None:
            due.append(row)
        if add_to_cache is not None and row["index"] not in cached:
            add_to_cache(row)
            if row["status"] == "succeeded":
                cached.add(row["index"])

    with contextlib.ExitStack() as stack:
        # A results page per few hundred rows: their per-call lines are DEBUG, the progress lines INFO.
        stack.enter_context(calls_logged_at(logging.DEBUG))
        # Step: new answers go to the result cache as they are written (by the keys of the submission).
        keys = ItemKeys.load(checkpoint.directory, record.total_items) if cache is not None else None
        if cache is not None and keys is None:
            log.info(
                "No cache keys were recorded when these batches were submitted: their answers are not cached."
            )
        add_to_cache = stack.enter_context(cache.writer(keys)) if cache is not None else None
        writer = stack.enter_context(
            job.endpoint.writer(job.results_file, ids, on_written=on_written, progress=progress)
        )
        # Rows recovered from the worker win over the batches submitted before that pass, and lose to
        # those submitted after it (a retry resubmitting a row the pass failed again: that row's
        # attempt follows the worker's).
        worker: dict[int, dict[str, Any]] = {}
        for row in checkpoint.rows_newest_first():
            if (row.get("attempts") or 1) > 1:
                worker.setdefault(row["index"], row)
        split = len(record.batches) if record.worker_pass_after is None else record.worker_pass_after
        after_worker = {
            i: {"previous": row, "model": row.get("model") or job.model} for i, row in worker.items()
        }
        passes = previous_rows(checkpoint.directory, record)

        def write_batches(batches: list[SubmittedBatch], later: bool) -> None:
            for batch in reversed(batches):
                if event.status_of(batch.id) == "completed":
                    entries = passes.get(batch.attempt, after_worker if later else {})
                    record.billed[batch.id] = _write_batch_results(
                        hook, batch, writer, job, entries, record.fingerprint, log
                    )

        write_batches(record.batches[split:], later=True)
        for row in worker.values():
            writer.write(row)
        write_batches(record.batches[:split], later=False)
        for row in checkpoint.rows_newest_first():  # the rows answered from the result cache
            writer.write(row)
        writer.write_unwritten(lambda custom_id, index: _unfinished_row(record, event, custom_id, index))
    progress.summary()
    return writer, recovery, due


def _write_batch_results(
    hook: OpenRouterHook,
    batch: SubmittedBatch,
    writer: ResultsWriter,
    job: JobOptions,
    entries: Mapping[int, dict[str, Any]],
    fingerprint: str,
    log: Any,
) -> float:
    """Write the batch's rows; returns what the batch was billed (every row, written or not).
    *entries*: for a follow-up batch, its recovery file's entries (the previous rows) by index."""
    suffix = f"~{run_tag(job.identity.key, fingerprint, batch.attempt)}"
    batch_id = batch.id
    billed = 0.0
    try:
        for result in hook.iter_batch_results(batch_id):
            # A batch recorded before run tags existed carries the bare custom id.
            custom_id = result.custom_id.removesuffix(suffix)
            index = writer.ids.index_of(custom_id)
            if index is None:
                log.warning("Batch %s returned unknown custom_id %r; ignored.", batch_id, result.custom_id)
                continue
            row = job.endpoint.row_from_batch_result(job, result, custom_id, index)
            billed += (row["usage"] or {}).get("cost") or 0.0
            entry = entries.get(index)
            if entry is not None:
                row = next_attempt(row, entry["previous"], entry["model"])
            writer.write(row)
    except OpenRouterPaymentRequiredError as exc:
        raise exc.with_message(
            f"Batch {batch_id} has finished, but OpenRouter withholds its results until the account has "
            "enough credits (HTTP 402). Add credits at https://openrouter.ai/settings/credits, then retry "
            "the task: it fetches the same results without submitting anything again."
        ) from exc
    return billed


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
