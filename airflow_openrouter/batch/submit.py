"""Submit what a task run still has to submit, and find the batch of a ``POST /batches`` whose answer was lost.

The record is saved right after each ``POST /batches``, before the next chunk is sent: a crash mid-way
leaves a record of exactly the batches that exist, and the next try submits the rest (the record's
``todo``). Every request goes out with ``custom_id = "{item's custom_id}~{run tag}"``
(:func:`~.state.run_tag`).

**An unanswered POST.** Right before each POST the record gets a *pending* marker (the chunk's items
and the time). When the POST's answer is lost after the request left (a dropped connection, a
timeout, a 5xx), or a later try finds the marker, the batch may exist all the same. The workspace's
batches created since then, with this model and this many requests and not recorded, are the
candidates; a candidate is adopted only when it is *proven* ours: its results carry this chunk's
custom ids with this run's tag. Same model and size prove nothing (a sibling task, or the next map
index, submits look-alikes all the time).

* A completed candidate is read (the first result rows): ours is adopted, another's is ignored.
* A candidate that failed, expired or was cancelled has no results: if it was ours, its items would be
  submitted again anyway, so it is ignored.
* A candidate still running cannot be proven yet (results exist only once a batch is finished): the
  try fails *retryably*, naming the candidates, and submits nothing; a later try looks again.
* No candidate (left): the POST created nothing, and the chunk is submitted.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Container, Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from airflow_openrouter.batch.failures import as_permanent, sentence
from airflow_openrouter.batch.state import SubmittedBatch, as_ranges, describe
from airflow_openrouter.exceptions import (
    OpenRouterAPIError,
    OpenRouterBadRequestError,
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterServerError,
)

if TYPE_CHECKING:
    from airflow_openrouter.batch.endpoints import Endpoint
    from airflow_openrouter.batch.followup import PassSpool
    from airflow_openrouter.batch.spool import Chunk, RequestSpool
    from airflow_openrouter.batch.state import BatchRecord, Ranges, RecordStore
    from airflow_openrouter.cost.attribution import Attribution
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import Batch

__all__ = ["find_proven_batch", "submit_todo", "tagged"]

# How far before the POST to look for the batch it created (clocks differ).
_CLOCK_SKEW_S = 60
_MAX_LIST_PAGES = 20
_PROOF_ROWS = 20
_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def tagged(
    lines: Iterator[dict[str, Any]], tag: str, attribution: Attribution | None = None
) -> Iterator[dict[str, Any]]:
    """Request lines with the run tag appended to their custom ids (and, in what is submitted, the
    attribution fields in their bodies: never in what a proof of ownership compares)."""
    for line in lines:
        body = line["body"] if attribution is None else attribution.applied(line["body"], batch=True)
        yield {"custom_id": f"{line['custom_id']}~{tag}", "body": body}


def submit_todo(
    hook: OpenRouterHook,
    spool: RequestSpool | PassSpool,
    record: BatchRecord,
    store: RecordStore,
    *,
    tag: str,
    provider: Mapping[str, Any] | None = None,
    endpoint: Endpoint | None = None,
    log: Any,
    attribution: Attribution | None = None,
    estimate_of: Callable[[Ranges], float | None] | None = None,
    attempt: int = 1,
) -> list[SubmittedBatch]:
    """Submit the record's ``todo`` in chunks; returns the batches submitted (or adopted) now.

    :param spool: the request lines: the run's spool, or a recovery pass's (:mod:`.followup`; each of
        its chunks names its own model).
    :param endpoint: what the requests are (default: chat completions).
    :param attribution: added to every request body as it is submitted (see :mod:`airflow_openrouter.
        cost.attribution`).
    :param estimate_of: the cost upper bound of a chunk's items, recorded with its batch.
    :param attempt: the batches' attempt: 1, or the recovery pass's.
    """
    if endpoint is None:
        from airflow_openrouter.batch.endpoints import CHAT

        endpoint = CHAT
    submitted = []
    estimate_of = estimate_of or (lambda ranges: None)
    if record.pending is not None:
        # An earlier POST of this run got no answer: settle it before cutting anything new.
        chunk_ranges = as_ranges(record.pending["ranges"])
        batch = _find_lost_batch(hook, spool, record, chunk_ranges, record.pending["posted_at"], tag, log)
        record.pending = None
        if batch is not None:
            estimated = estimate_of(chunk_ranges)
            entry = _record(record, store, batch, chunk_ranges, log, "Adopted", estimated, attempt)
            submitted.append(entry)
    for chunk in spool.cut(record.todo):
        estimated = estimate_of(chunk.ranges)
        batch = _post(hook, spool, record, store, chunk, tag, provider, endpoint, log, attribution)
        submitted.append(_record(record, store, batch, chunk.ranges, log, "Submitted", estimated, attempt))
    return submitted


def _model_of(spool: RequestSpool | PassSpool, record: BatchRecord, chunk: Chunk) -> str:
    model_of = getattr(spool, "model_of", None)
    return model_of(chunk) if model_of is not None else record.model


def _record(
    record: BatchRecord,
    store: RecordStore,
    batch: Batch,
    ranges: Any,
    log: Any,
    verb: str,
    estimated_usd: float | None = None,
    attempt: int = 1,
) -> SubmittedBatch:
    entry = SubmittedBatch(batch.id, ranges, batch.created_at, batch.expires_at, estimated_usd, attempt)
    record.add(entry)
    store.save(record)
    what = f" (recovery pass {attempt - 1})" if attempt > 1 else ""
    log.info("%s batch %s%s: %s to %s.", verb, batch.id, what, describe(ranges), batch.model or record.model)
    return entry


def _post(
    hook: OpenRouterHook,
    spool: RequestSpool | PassSpool,
    record: BatchRecord,
    store: RecordStore,
    chunk: Chunk,
    tag: str,
    provider: Mapping[str, Any] | None,
    endpoint: Endpoint,
    log: Any,
    attribution: Attribution | None = None,
) -> Batch:
    posted_at = int(time.time())
    record.pending = {"ranges": [list(r) for r in chunk.ranges], "posted_at": posted_at}
    store.save(record)
    try:
        return hook.create_batch(
            model=_model_of(spool, record, chunk),
            requests=list(tagged(spool.read(chunk), tag, attribution)),
            provider=provider,
            endpoint=endpoint.path,
        )
    except (OpenRouterConnectionError, OpenRouterServerError) as exc:
        if isinstance(exc, OpenRouterConnectionError) and not exc.request_sent:
            _settled(record, store)  # it never left: nothing was created
            raise
        log.warning(
            "POST /batches for %s got no usable answer (%s): looking for the batch it may have created.",
            describe(chunk.ranges),
            exc,
        )
        batch = _find_lost_batch(hook, spool, record, chunk.ranges, posted_at, tag, log)
        if batch is None:
            raise  # the marker stays: the next try looks again before submitting
        return batch
    except OpenRouterAPIError as exc:
        _settled(record, store)  # OpenRouter answered with a refusal: it created nothing
        if isinstance(exc, OpenRouterBadRequestError):
            model = _model_of(spool, record, chunk)
            raise as_permanent(exc, _rejected(hook, endpoint, model, chunk, exc)) from exc
        if exc.systemic:
            raise as_permanent(
                exc,
                f"{sentence(exc.message)} POST /batches for {describe(chunk.ranges)} was refused; nothing was "
                "submitted or billed. Every batch would be refused the same way: fix the key, credits or "
                "model, then clear the task.",
            ) from exc
        raise


def _settled(record: BatchRecord, store: RecordStore) -> None:
    record.pending = None
    store.save(record)


def _rejected(
    hook: OpenRouterHook, endpoint: Endpoint, model: str, chunk: Chunk, exc: OpenRouterAPIError
) -> str:
    """What a 400 on POST /batches means: an unknown model (with the closest ids), or a request the
    Batch API does not take."""
    rejected = f"The Batch API rejected {describe(chunk.ranges)} for model {model!r}: {sentence(exc.message)}"
    try:
        ids = [m.id for m in endpoint.models(hook)]
    except OpenRouterError:
        ids = []
    if ids and model not in ids and model.split(":")[0] not in ids:
        close = difflib.get_close_matches(model, ids, n=3, cutoff=0.5)
        hint = f" The closest ids: {', '.join(close)}." if close else ""
        return (
            f"{rejected} Model {model!r} is unknown to OpenRouter (it is not in {endpoint.model_catalogue})."
            f"{hint} Fix model=..."
        )
    return f"{rejected} {endpoint.batch_advice}"


def _find_lost_batch(
    hook: OpenRouterHook,
    spool: RequestSpool | PassSpool,
    record: BatchRecord,
    ranges: Any,
    posted_at: int,
    tag: str,
    log: Any,
) -> Batch | None:
    """The batch an unanswered POST of *ranges* created, proven ours (see :func:`find_proven_batch`)."""
    from airflow_openrouter.batch.spool import Chunk

    chunk = Chunk(ranges)
    return find_proven_batch(
        hook,
        ours={line["custom_id"] for line in tagged(spool.read(chunk), tag)},
        posted_at=posted_at,
        model=_model_of(spool, record, chunk),
        count=chunk.count,
        known=set(record.batch_ids),
        what=describe(ranges),
        log=log,
    )


def find_proven_batch(
    hook: OpenRouterHook,
    *,
    ours: Container[str],
    posted_at: float,
    model: str | None,
    count: int | None,
    known: Container[str] = (),
    what: str,
    log: Any,
) -> Batch | None:
    """The batch an unanswered ``POST /batches`` created, proven ours; ``None`` when there is none;
    raises a retryable error while a candidate is still running (see the module docstring).

    :param ours: the custom ids the POST carried, run tag included (a set, or any container).
    :param posted_at: unix time of the POST; batches created since (less the clock skew) are candidates.
    :param model: / :param count: only batches of this model and this many requests are candidates
        (``None``: any); they narrow the search, never prove anything.
    :param known: ids of batches already recorded (never candidates).
    :param what: what the POST held, for the messages (``"items 0-5"``).
    """
    adopted: list[Batch] = []
    unproven: list[Batch] = []
    for candidate in _candidates(hook, model, count, posted_at, known):
        proof = _prove(hook, candidate, ours)
        log.info(
            "Batch %s (%s, %d requests): %s.",
            candidate.id,
            candidate.status,
            candidate.request_counts.total,
            proof,
        )
        if proof == "ours":
            adopted.append(candidate)
        elif proof == "unknown":
            unproven.append(candidate)
    if adopted:
        if len(adopted) > 1:
            log.warning(
                "Batches %s all carry this run's custom ids (several unanswered POSTs created them); "
                "adopting %s, the others are billed without being used.",
                ", ".join(b.id for b in adopted),
                adopted[0].id,
            )
        log.warning(
            "Adopting batch %s for %s: an earlier POST /batches created it, but its answer was lost.",
            adopted[0].id,
            what,
        )
        return adopted[0]
    if unproven:
        shape = ", ".join(
            [
                *([f"model {model}"] if model else []),
                *([f"{count} requests"] if count is not None else []),
                "created since",
            ]
        )
        raise OpenRouterError(
            f"An earlier POST /batches for {what} got no answer, and batch(es) "
            f"{', '.join(b.id for b in unproven)} ({shape}) may be the one it created. Which task a batch "
            "belongs to shows only in its results, once it has finished, so nothing is submitted now: a "
            "retry looks again and adopts the batch if it carries this run's custom ids, or submits the "
            "items. Check them on openrouter.ai."
        )
    log.info("No batch was created for %s by the earlier POST: submitting it.", what)
    return None


def _candidates(
    hook: OpenRouterHook, model: str | None, count: int | None, posted_at: float, known: Container[str]
) -> Iterator[Batch]:
    after: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        page = hook.list_batches(limit=100, after=after, created_after=int(posted_at) - _CLOCK_SKEW_S)
        for batch in page.data:
            if (
                (model is None or batch.model == model)
                and (count is None or batch.request_counts.total == count)
                and batch.id not in known
            ):
                yield batch
        if not page.has_more or not page.last_id:
            return
        after = page.last_id


def _prove(
    hook: OpenRouterHook, candidate: Batch, ours: Container[str]
) -> Literal["ours", "not ours", "unknown"]:
    if candidate.status in _RUNNING:
        return "unknown"
    if candidate.status != "completed":
        return "not ours"  # no results: ours or not, its items would be submitted again
    try:
        rows = list(islice(hook.iter_batch_results(candidate.id, page_size=_PROOF_ROWS), _PROOF_ROWS))
    except OpenRouterError:
        return "unknown"  # e.g. 402: results withheld until credits are added
    return "ours" if any(row.custom_id in ours for row in rows) else "not ours"
