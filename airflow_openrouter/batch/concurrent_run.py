"""The ``concurrent`` engine for one task run: what is left to send, the sending, the recovery passes,
the results file and the verdict.

:func:`run_job`, in order: skip what an earlier try answered (the :class:`~.checkpoint.Checkpoint`);
let the result cache answer what it can and check the estimate of the rest, plus what earlier tries
were billed, against ``max_cost_usd`` (:mod:`.budget`), before anything is sent; send the rest through
:func:`~.concurrent.send_job_requests`, each outcome saved to the checkpoint as it arrives (a crash
loses at most the requests in flight); run the recovery passes (:mod:`.recovery`); assemble the
results file from every try's rows, newest first, adding new answers to the cache; judge the run
(:mod:`.failures`). No Airflow imports here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from airflow_openrouter.batch.concurrent import Outcome, Request, send_job_requests
from airflow_openrouter.exceptions import CostCapReached

if TYPE_CHECKING:
    from airflow_openrouter.batch.endpoints import ConcurrentRequest
    from airflow_openrouter.batch.failures import Verdict
    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.spool import RequestSpool
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

__all__ = ["item_rows", "run_job"]


def run_job(
    hook: OpenRouterHook, spool: RequestSpool, job: JobOptions, ids: ItemIds, try_number: int, log: Any
) -> tuple[dict[str, Any], Verdict | None]:
    """Run the items an earlier try did not answer, write the results file, and judge the run.

    Before anything is sent: the result cache answers what it can, and the estimate of the rest plus what
    earlier tries were billed must stay under ``max_cost_usd`` (:mod:`.budget`). Every outcome is then
    saved to the checkpoint as it arrives, so a crash loses at most a few rows and a retry skips what is
    done. The results file is assembled from every try's rows, newest first, and the new answers go to
    the cache. A dry run stops after the estimate and returns ``(manifest, None)``.
    """
    from airflow_openrouter.batch.budget import dry_run_manifest, plan, price_info
    from airflow_openrouter.batch.cached import BulkCache
    from airflow_openrouter.batch.checkpoint import Checkpoint
    from airflow_openrouter.batch.failures import RunSummary, judge
    from airflow_openrouter.batch.progress import Progress
    from airflow_openrouter.batch.recovery import RecoveryTally
    from airflow_openrouter.batch.results import build_manifest, result_row

    started_at = time.time()
    endpoint = job.endpoint
    checkpoint = Checkpoint(job.results_file, spool.fingerprint, job.identity.key)
    if checkpoint.done:
        log.info(
            "Resuming: %d of %d items were answered by an earlier try ($%.4f billed); skipping them.",
            len(checkpoint.done),
            len(ids),
            checkpoint.spent_usd,
        )
    earlier_usd = checkpoint.spent_usd + checkpoint.spent_on_other_inputs_usd
    prices = price_info(hook, job, "concurrent", log)
    cache = BulkCache(job, log) if job.result_cache is not None else None
    keys = cache.keys(spool) if cache is not None else None
    # The spool holds the items in index order: line i is item i.
    pending = bytearray(0 if index in checkpoint.done else 1 for index in range(len(ids)))
    # The requests started and not yet settled, by key (a request may carry several items).
    unsettled: dict[str, ConcurrentRequest] = {}
    spent_now = 0.0  # billed by this try

    def todo() -> Iterator[Request]:
        lines = (line for i, line in enumerate(spool) if pending[i])
        for request in endpoint.concurrent_requests(job, lines):
            unsettled[request.key] = request
            # The engine pulls a request only when it starts it (or gives up on it): in flight now.
            for _ in request.custom_ids:
                progress.started()
            # The attribution goes on the wire only: never into the fingerprint or a cache key.
            body = job.attribution.applied(request.body) if job.attribution is not None else request.body
            yield request.key, body

    def settled(outcome: Outcome) -> None:
        request = unsettled.pop(outcome.custom_id)
        nonlocal spent_now
        spent_now += outcome.cost_usd
        for row in item_rows(outcome, request, [ids.indexes[c] for c in request.custom_ids], job):
            parts.write(row)
            progress.settled(
                ok=row["status"] == "succeeded", cost_usd=(row.get("usage") or {}).get("cost") or 0.0
            )

    with checkpoint.writer(try_number) as parts:
        # Step: cache lookup, estimate and cap, before anything is sent (nothing written in a dry run).
        decided = plan(
            spool=spool,
            job=job,
            ids=ids,
            engine="concurrent",
            prices=prices,
            to_send=lambda i: bool(pending[i]),
            earlier_usd=earlier_usd,
            cache=cache,
            keys=keys,
            write_cached=None if job.dry_run else parts.write,
            log=log,
        )
        if job.dry_run:
            return dry_run_manifest(job, "concurrent", len(ids), decided), None
        for index in decided.cached:
            pending[index] = 0
        progress = Progress("items", sum(pending), log)
        systemic = send_job_requests(hook, job, todo(), settled, spent_usd=earlier_usd)
        estimate = decided.estimate.summary()
        held_back = 0
        if systemic is None:
            billed, estimate, held_back = _recover(
                hook, spool, job, ids, checkpoint, parts, prices.price, earlier_usd + spent_now, estimate, log
            )
            spent_now += billed
    progress.summary()
    # Newest rows first: an item retried by this try keeps this try's row. New answers go to the cache.
    missing = "No outcome was recorded for this item."
    recovery = RecoveryTally(job.recovery.max_row_attempts)
    with contextlib.ExitStack() as stack:
        add_to_cache = stack.enter_context(cache.writer(keys)) if cache is not None else None
        writer = stack.enter_context(
            endpoint.writer(job.results_file, ids, on_written=_both(recovery.add, add_to_cache))
        )
        for row in checkpoint.rows_newest_first():
            writer.write(row)
        writer.write_unwritten(
            lambda custom_id, index: result_row(
                custom_id, index, "missing", error=missing, cause="missing", transient=True
            )
        )
    tally = writer.tally
    summary = RunSummary(
        total=tally.total,
        unsuccessful=tally.unsuccessful,
        retry_count=len(tally.retry_indexes),
        causes=tally.causes,
        output_uri=str(job.results_file),
        engine="concurrent",
        systemic=systemic,
        held_back_by_cap=held_back,
    )
    verdict = judge(summary, job.limits.max_failed_fraction)
    manifest = build_manifest(
        output_uri=str(job.results_file),
        engine="concurrent",
        model=job.model,
        tally=tally,
        status=verdict.status,
        started_at=started_at,
        price=prices.price,
        estimate=estimate,
    )
    manifest.update(writer.manifest_fields())
    manifest.update(recovery.manifest_fields(estimate))
    # The rows' usage is their last attempt's: what the earlier attempts were billed is added.
    manifest["cost_usd"] = round(manifest["cost_usd"] + recovery.earlier_cost, 10)
    return manifest, verdict


def _both(
    first: Callable[[dict[str, Any]], None], second: Callable[[dict[str, Any]], None] | None
) -> Callable[[dict[str, Any]], None]:
    if second is None:
        return first

    def both(row: dict[str, Any]) -> None:
        first(row)
        second(row)

    return both


def _recover(
    hook: OpenRouterHook,
    spool: RequestSpool,
    job: JobOptions,
    ids: ItemIds,
    checkpoint: Any,
    parts: Any,
    price: Any,
    spent_usd: float,
    estimate: dict[str, Any],
    log: Any,
) -> tuple[float, dict[str, Any], int]:
    """The recovery passes (:mod:`.recovery`), each from the latest row of every item in the
    checkpoint, their rows to the checkpoint too (a retry resumes mid-recovery); returns their cost,
    the run's estimate fields with theirs added, and how many rows max_cost_usd kept from a pass."""
    from airflow_openrouter.batch.recovery import (
        add_pass_estimate,
        candidates,
        pass_affordable,
        run_concurrent_pass,
    )

    billed = 0.0
    held_back = 0
    for attempt in range(2, job.recovery.max_row_attempts + 1):
        # A new part file: a part's rows are read in order, and the newest row of an item must win.
        parts.close()
        todo = candidates(checkpoint.latest_rows(len(ids)), spool, job)
        if not todo:
            break
        pass_estimate = pass_affordable(todo, job, price, "concurrent", spent_usd + billed, attempt, log)
        if pass_estimate is None:
            held_back = len(todo)
            break
        estimate = add_pass_estimate(estimate, pass_estimate, price)
        log.info(
            "Recovery pass %d: %d rows failed in a way that may pass, or were invalid.",
            attempt - 1,
            len(todo),
        )
        billed += run_concurrent_pass(
            hook, job, ids, todo, parts.write, spent_usd=spent_usd + billed, log=log
        )
    parts.close()
    return billed, estimate, held_back


def item_rows(
    outcome: Outcome, request: ConcurrentRequest, indexes: list[int], job: JobOptions
) -> list[dict[str, Any]]:
    """One row per item of the request: from its answer, or its error (the same for each item)."""
    if outcome.completion is not None:
        return job.endpoint.rows_from_answer(job, request, indexes, outcome.completion)
    return [
        _error_row(outcome, custom_id, index)
        for custom_id, index in zip(request.custom_ids, indexes, strict=True)
    ]


def _error_row(outcome: Outcome, custom_id: str, index: int) -> dict[str, Any]:
    from airflow_openrouter.batch.failures import cause_of
    from airflow_openrouter.batch.results import result_row, row_from_error

    assert outcome.error is not None
    if outcome.started:
        return row_from_error(custom_id, index, outcome.error)
    if isinstance(outcome.error, CostCapReached):
        cause = cause_of(outcome.error)
        return result_row(custom_id, index, "failed", error=str(outcome.error), cause=cause, transient=False)
    error = f"Not started: an earlier item failed with an error that repeats for every item: {outcome.error}"
    cause = f"not started: {cause_of(outcome.error)}"
    return result_row(custom_id, index, "failed", error=error, cause=cause, transient=False)
