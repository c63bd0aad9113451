"""The step before anything is sent, in both engines: what is cached, what the rest may cost, and the cap.

:func:`plan` runs the same sequence for the ``batch`` and the ``concurrent`` engine (and their
``dry_run``):

1. look up the items still to send in the result cache (:mod:`.cached`), when there is one;
2. estimate the rest (:mod:`airflow_openrouter.cost.estimate`: ``/models`` prices, read once per task,
   at half price for the Batch API), plus what earlier tries of the task run were billed;
3. log the estimate with its basis, and fail with ``OpenRouterCostLimitError`` when it exceeds
   ``max_cost_usd`` -- nothing has been sent, and in a dry run nothing is written either;
4. write the cached items' rows (they are then done), and estimate again any item whose entry could not
   be read after all (it is sent).

The engine then sends what is left. What the engine sends is not what the fingerprint and the cache
keys are computed from: the attribution fields are added on the way out (:mod:`airflow_openrouter.cost.
attribution`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_openrouter.cost.estimate import JobEstimate, PassCounter, PassEstimate, check_cap
from airflow_openrouter.cost.prices import BATCH_PRICE_FACTOR, ModelPrice, price_of

if TYPE_CHECKING:
    from airflow_openrouter.batch.cached import BulkCache, ItemKeys
    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.spool import RequestSpool
    from airflow_openrouter.batch.vocabulary import Engine
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

__all__ = [
    "FIRST_PASS",
    "Plan",
    "PriceInfo",
    "bitmap",
    "dry_run_manifest",
    "estimate_lines",
    "plan",
    "price_info",
]

FIRST_PASS = "first pass"
BATCH_ASSUMPTION = "x0.5 Batch API (assumed: /models has no batch price)"


@dataclass(frozen=True)
class PriceInfo:
    """The model's price for this task, and what to say about it."""

    price: ModelPrice | None
    note: str | None
    unread: Exception | None = None  # why the model list could not be read, if it could not


def price_info(hook: OpenRouterHook, job: JobOptions, engine: str, log: Any) -> PriceInfo:
    """The model's price from the endpoint's model list (``/models``, ``/embeddings/models``; one
    request), with the note the estimate's basis carries."""
    from airflow_openrouter.exceptions import OpenRouterError

    model, catalogue = job.model, job.endpoint.model_catalogue
    notes = [BATCH_ASSUMPTION] if engine == "batch" else []
    try:
        price = price_of(model, job.endpoint.models(hook))
    except OpenRouterError as exc:
        log.warning(
            "Could not read %s for the price of %s (%s): the cost is not estimated.", catalogue, model, exc
        )
        note = "; ".join([f"unknown price: {catalogue} could not be read ({exc})", *notes])
        return PriceInfo(None, note, unread=exc)
    if price is None:
        log.warning(
            "%s is not listed in %s: its price is unknown, the cost is not estimated.", model, catalogue
        )
        return PriceInfo(None, "; ".join([f"unknown price: {model} is not listed in {catalogue}", *notes]))
    if price.listed_as != model:
        notes.insert(0, f"priced as {price.listed_as}")
    return PriceInfo(price, "; ".join(notes) or None)


def price_factor(engine: str) -> Decimal:
    return BATCH_PRICE_FACTOR if engine == "batch" else Decimal(1)


def estimate_lines(
    lines: Iterable[dict[str, Any]], price: ModelPrice | None, engine: str, name: str = FIRST_PASS
) -> PassEstimate:
    """One pass over request lines (``{"custom_id", "body"}``)."""
    counter = PassCounter(name, price, price_factor=price_factor(engine))
    for line in lines:
        counter.add(line["custom_id"], line["body"])
    return counter.result()


def bitmap(indexes: Iterable[int], size: int) -> bytearray:
    """A set of item indexes as bits (one bit an item, not a Python set)."""
    bits = bytearray((size + 7) // 8)
    for i in indexes:
        bits[i >> 3] |= 1 << (i & 7)
    return bits


def _in(bits: bytearray, i: int) -> bool:
    return bool(bits[i >> 3] & (1 << (i & 7)))


@dataclass
class Plan:
    """What :func:`plan` decided: the estimate, and the items now answered from the cache."""

    estimate: JobEstimate
    price: ModelPrice | None = None
    cached: list[int] = field(default_factory=list)  # indexes whose cached row was written
    would_cache: int = 0  # dry run: items the cache would answer


def plan(
    *,
    spool: RequestSpool,
    job: JobOptions,
    ids: ItemIds,
    engine: str,
    prices: PriceInfo,
    to_send: Callable[[int], bool],
    earlier_usd: float,
    cache: BulkCache | None,
    keys: ItemKeys | None,
    write_cached: Callable[[dict[str, Any]], None] | None,
    log: Any,
) -> Plan:
    """Steps 1-4 of the module docstring. *to_send*: whether item *i* still needs an answer;
    *write_cached* is ``None`` in a dry run (nothing is written)."""
    hits = None
    if cache is not None and keys is not None:
        hits = cache.lookup(keys, (i for i in range(spool.total) if to_send(i)))
    hit_bits = bitmap(hits.positions() if hits is not None else (), spool.total)

    def sending(skip: bytearray) -> Iterator[dict[str, Any]]:
        return (line for i, line in enumerate(spool) if to_send(i) and not _in(skip, i))

    first = estimate_lines(sending(hit_bits), prices.price, engine)
    estimate = JobEstimate(
        job.model,
        prices.price,
        (first,),
        earlier_usd=round(earlier_usd, 12),
        cached=len(hits) if hits is not None else 0,
        price_note=prices.note,
    )
    _log(estimate, job.limits.max_cost_usd, log, dry=write_cached is None)
    verb = "submitted" if engine == "batch" else "sent"
    _raise_if_unreadable(prices, job.limits.max_cost_usd, estimate, verb)
    check_cap(estimate, job.limits.max_cost_usd, verb=verb)
    if write_cached is None or hits is None:
        return Plan(estimate, prices.price, would_cache=estimate.cached)
    written = []
    for row in cache.rows(hits, ids) if cache is not None else ():
        write_cached(row)
        written.append(row["index"])
    if len(written) == estimate.cached:
        return Plan(estimate, prices.price, written)
    # Entries that could not be read after all: those items are sent, so they count.
    first = estimate_lines(sending(bitmap(written, spool.total)), prices.price, engine)
    estimate = JobEstimate(job.model, prices.price, (first,), estimate.earlier_usd, len(written), prices.note)
    check_cap(estimate, job.limits.max_cost_usd, verb=verb)
    return Plan(estimate, prices.price, written)


def _raise_if_unreadable(prices: PriceInfo, cap: float | None, estimate: JobEstimate, verb: str) -> None:
    """A cap that cannot be checked because the model list could not be read stops the run for the
    true cause: a permanent error (a wrong key, say) as itself, a passing one (a 503 after the hook's
    retries) retryably -- never as an unknown model's permanent cost error. Nothing to send: no check."""
    from airflow_openrouter._compat import AirflowFailException
    from airflow_openrouter.exceptions import OpenRouterError

    exc = prices.unread
    if exc is None or cap is None or not estimate.items:
        return
    if isinstance(exc, AirflowFailException):
        raise exc
    raise OpenRouterError(
        f"max_cost_usd=${cap:g} cannot be checked, so nothing was {verb}: the price of {estimate.model} is "
        f"an {prices.note}. A retry reads the prices again."
    ) from exc


def dry_run_manifest(job: JobOptions, engine: Engine, total: int, decided: Plan) -> dict[str, Any]:
    """The manifest of a dry run: nothing sent or written; ``total`` items, ``cached`` of them found in
    the result cache, and the estimate of the rest."""
    from airflow_openrouter.batch.results import Tally, build_manifest

    manifest = build_manifest(
        output_uri=str(job.results_file),
        engine=engine,
        model=job.model,
        tally=Tally(),
        status="dry_run",
        price=decided.price,
        estimate=decided.estimate.summary(),
    )
    manifest.update(total=total, cached=decided.would_cache, duration_s=None, started_at=None)
    return manifest


def _log(estimate: JobEstimate, cap: float | None, log: Any, *, dry: bool) -> None:
    total = estimate.total_usd
    figure = f"up to ${total:.6f}" if total is not None else "unknown"
    capped = f" (max_cost_usd ${cap:g})" if cap is not None else ""
    prefix = "Dry run: nothing is sent. " if dry else ""
    log.info("%sEstimated cost: %s%s. Basis: %s.", prefix, figure, capped, estimate.basis())
