"""Row recovery: after a pass, failed and invalid rows are tried again inside the task, once per pass.

With ``max_row_attempts=n`` (default 2) a run makes at most ``n - 1`` recovery passes after the first.
Which rows a pass takes (:func:`kind_of`), from each item's latest row:

* ``resend``: a row that failed in a way that may pass (``transient``: 5xx, 408/429, timeouts, provider
  errors, ``expired``, ``cancelled``, ``missing``): the same request again;
* ``repair``: an ``invalid_output`` row: the original conversation, the invalid reply and the
  validation errors as a follow-up message -- the chat operator's repair turn
  (:func:`airflow_openrouter.schemas.repair_messages`, one definition for both);
* ``fallback``: with ``fallback_models``, a row that failed with a model or provider error
  (:func:`is_model_error`) is tried on the next model of ``[model, *fallback_models]``;
* nothing for permanent failures (4xx validation, moderation), rows from the result cache, items never
  started (a cost cap or an error that repeats for every item stopped the run), and rows that used up
  their attempts.

A recovered row is the last attempt's: ``attempts`` counts the requests made for the item, ``history``
keeps each earlier attempt's ``status``, ``error``, ``cause``, ``model`` and ``cost``
(:func:`next_attempt`). The manifest's ``recovery`` counts, per pass, the rows sent, the rows recovered
and what the pass cost (:class:`RecoveryTally`).

Where a pass runs: the concurrent engine sends it itself (:func:`run_concurrent_pass`); the batch
engine submits a follow-up batch recorded in the never-pay-twice record before it is sent
(:mod:`.batch_api`), or -- with ``recovery_engine="auto"`` and fewer rows than
:data:`~.options.AUTO_CONCURRENT_BELOW`, or ``"concurrent"`` -- sends it from the worker as the
concurrent engine does. Before any pass, its estimate plus what the task run was billed must stay under
``max_cost_usd``; a pass that would exceed it is not sent (the rows already paid for are kept).
No Airflow imports here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.spool import RequestSpool
    from airflow_openrouter.cost.prices import ModelPrice
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.schemas import OutputSpec

__all__ = [
    "Candidate",
    "RecoveryTally",
    "candidates",
    "is_model_error",
    "kind_of",
    "next_attempt",
    "pass_affordable",
    "run_concurrent_pass",
]

Kind = Literal["resend", "repair", "fallback"]
# Words of a failure that is the model's or its provider's, not the request's (causes and messages of
# both engines: "provider error", "503 server_error", "provider_unavailable", "No endpoints found...").
_MODEL_ERROR_WORDS = ("provider", "overloaded", "unavailable", "no endpoints", "502 ", "503 ")


def models_of(job: JobOptions) -> tuple[str, ...]:
    return (job.model, *job.recovery.fallback_models)


def is_model_error(row: Mapping[str, Any]) -> bool:
    """Whether *row* failed because of its model or provider (another model may answer)."""
    text = f"{row.get('cause') or ''} {row.get('error') or ''}".lower()
    return row["status"] == "failed" and any(word in text for word in _MODEL_ERROR_WORDS)


def _model_of(row: Mapping[str, Any], chain: tuple[str, ...]) -> int:
    """The position in *chain* of the model the row's attempt asked for (served ids may add a date)."""
    served = row.get("model") or chain[0]
    # The longest id the served one starts with ("openai/gpt-4o-mini-2024-07-18" is gpt-4o-mini's,
    # not gpt-4o's).
    matching = [i for i, model in enumerate(chain) if served.startswith(model)]
    return max(matching, key=lambda i: len(chain[i]), default=0)


def kind_of(row: Mapping[str, Any], job: JobOptions) -> Kind | None:
    """What a recovery pass does with the item whose latest row is *row* (see the module docstring)."""
    policy = job.recovery
    status = row["status"]
    if status == "succeeded" or row.get("cached") or (row.get("attempts") or 1) >= policy.max_row_attempts:
        return None
    if status == "invalid_output":
        return "repair" if job.spec.response_format is not None and row.get("output") is not None else None
    if str(row.get("cause") or "").startswith("not started"):
        return None
    chain = models_of(job)
    if len(chain) > 1 and is_model_error(row) and _model_of(row, chain) + 1 < len(chain):
        return "fallback"
    return "resend" if row.get("transient") else None


@dataclass(frozen=True)
class Candidate:
    """One item of a recovery pass: its request line for this attempt, the model, the previous row."""

    index: int
    line: dict[str, Any]
    model: str
    previous: dict[str, Any]


def candidates(latest: Iterable[dict[str, Any]], spool: RequestSpool, job: JobOptions) -> list[Candidate]:
    """The items of the next pass, from the latest row of every item (*latest*), in item order."""
    from airflow_openrouter.batch.spool import Chunk
    from airflow_openrouter.batch.state import as_ranges

    chosen: dict[int, tuple[Kind, dict[str, Any]]] = {}
    for row in latest:
        kind = kind_of(row, job)
        if kind is not None:
            chosen[row["index"]] = (kind, row)
    if not chosen:
        return []
    chain = models_of(job)
    out = []
    indexes = sorted(chosen)
    for index, line in zip(indexes, spool.read(Chunk(as_ranges(indexes))), strict=True):
        kind, previous = chosen[index]
        position = _model_of(previous, chain)
        model = chain[position + 1] if kind == "fallback" else chain[position]
        body = repair_body(line["body"], previous, job.spec) if kind == "repair" else line["body"]
        out.append(Candidate(index, {"custom_id": line["custom_id"], "body": body}, model, previous))
    return out


def repair_body(body: Mapping[str, Any], previous: Mapping[str, Any], spec: OutputSpec) -> dict[str, Any]:
    """*body* with the chat operator's repair turn appended: the invalid reply and why it is invalid."""
    from airflow_openrouter.exceptions import OpenRouterOutputValidationError
    from airflow_openrouter.schemas import repair_messages

    reply = previous.get("output")
    text = reply if isinstance(reply, str) else None
    try:
        spec.parse(text)
        errors = [str(previous.get("error") or "the reply does not match the schema")]
    except OpenRouterOutputValidationError as exc:  # the very errors the row was judged by
        errors = list(exc.errors)
    return {**body, "messages": [*body["messages"], *repair_messages(text, errors)]}


def history_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """What ``history`` keeps of an earlier attempt."""
    return {
        "attempt": row.get("attempts") or 1,
        "status": row["status"],
        "error": row.get("error"),
        "cause": row.get("cause"),
        "model": row.get("model"),
        "generation_id": row.get("generation_id"),
        "cost": (row.get("usage") or {}).get("cost") or 0.0,
    }


def next_attempt(row: dict[str, Any], previous: Mapping[str, Any], model: str) -> dict[str, Any]:
    """*row* (the answer of this attempt) as the item's row: attempts counted, the previous one in
    ``history``; a failed attempt names the model it asked for (the fallback chain reads it)."""
    row["attempts"] = (previous.get("attempts") or 1) + 1
    row["history"] = [*(previous.get("history") or []), history_entry(previous)]
    row["model"] = row.get("model") or model
    return row


# --- the cost cap of a pass ------------------------------------------------------------------------


def pass_affordable(
    passes: list[Candidate],
    job: JobOptions,
    price: ModelPrice | None,
    engine: str,
    spent_usd: float,
    attempt: int,
    log: Any,
) -> Any:
    """The pass's estimate (a :class:`~airflow_openrouter.cost.estimate.PassEstimate`) when it stays
    under ``max_cost_usd`` with what the task run was billed (*spent_usd*); ``None`` when it does not
    (the pass is then not sent, and says so)."""
    from airflow_openrouter.batch.budget import estimate_lines
    from airflow_openrouter.cost.estimate import JobEstimate, check_cap
    from airflow_openrouter.exceptions import OpenRouterCostLimitError

    estimate = estimate_lines((c.line for c in passes), price, engine, name=f"recovery pass {attempt - 1}")
    whole = JobEstimate(job.model, price, (estimate,), earlier_usd=round(spent_usd, 12))
    try:
        check_cap(whole, job.limits.max_cost_usd)
    except OpenRouterCostLimitError as exc:
        log.warning("Recovery pass %d of %d rows is not sent: %s", attempt - 1, len(passes), exc)
        return None
    return estimate


def add_pass_estimate(
    summary: Mapping[str, Any] | None, estimate: Any, price: ModelPrice | None
) -> dict[str, Any]:
    """The manifest's estimate fields (*summary*) with a recovery pass added: ``estimated_cost_usd``
    includes its upper bound (when known), and ``recovery_passes`` lists each pass's bound and basis."""
    out = dict(summary or {})
    cost = float(estimate.cost(price)) if price is not None and not estimate.unbounded else None
    total = out.get("estimated_cost_usd")
    out["estimated_cost_usd"] = None if total is None or cost is None else float(f"{total + cost:.10g}")
    passes = [*out.get("recovery_passes", ()), {"estimated_cost_usd": cost, "basis": estimate.describe()}]
    out["recovery_passes"] = passes
    return out


# --- a pass from the worker (both engines) ---------------------------------------------------------


def run_concurrent_pass(
    hook: OpenRouterHook,
    job: JobOptions,
    ids: ItemIds,
    passes: list[Candidate],
    write: Callable[[dict[str, Any]], None],
    *,
    spent_usd: float,
    log: Any,
) -> float:
    """Send the pass's requests as the concurrent engine does (one run per model) and write each new
    row with :func:`next_attempt`; returns what the pass was billed. Items the cost cap (or an error
    that repeats for every item) kept from starting keep their previous row."""
    billed = 0.0
    by_model: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in passes:
        by_model[candidate.model].append(candidate)
    for model, group in by_model.items():
        log.info("Recovery: sending %d rows again to %s.", len(group), model)
        model_job = job if model == job.model else replace(job, model=model)
        billed += _send_group(hook, model_job, ids, group, write, spent_usd=spent_usd + billed)
    return billed


def _send_group(
    hook: OpenRouterHook,
    job: JobOptions,
    ids: ItemIds,
    group: list[Candidate],
    write: Callable[[dict[str, Any]], None],
    *,
    spent_usd: float,
) -> float:
    from airflow_openrouter.batch.concurrent import Outcome, Request, send_job_requests
    from airflow_openrouter.batch.concurrent_run import item_rows

    previous = {c.line["custom_id"]: c for c in group}
    unsettled: dict[str, Any] = {}
    billed = 0.0

    def todo() -> Iterator[Request]:
        for request in job.endpoint.concurrent_requests(job, (c.line for c in group)):
            unsettled[request.key] = request
            body = job.attribution.applied(request.body) if job.attribution is not None else request.body
            yield request.key, body

    def settled(outcome: Outcome) -> None:
        nonlocal billed
        request = unsettled.pop(outcome.custom_id)
        billed += outcome.cost_usd
        if not outcome.started:
            return
        indexes = [ids.indexes[c] for c in request.custom_ids]
        for row in item_rows(outcome, request, indexes, job):
            write(next_attempt(row, previous[row["custom_id"]].previous, job.model))

    send_job_requests(hook, job, todo(), settled, spent_usd=spent_usd)
    return billed


# --- the manifest ----------------------------------------------------------------------------------


@dataclass
class RecoveryTally:
    """What the recovery passes did, from the final rows (fed by the results writer)."""

    max_row_attempts: int = 1
    rows: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    recovered: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    cost: defaultdict[int, float] = field(default_factory=lambda: defaultdict(float))
    #: what the superseded attempts of every row were billed (not in the rows' own ``usage``)
    earlier_cost: float = 0.0

    def add(self, row: Mapping[str, Any]) -> None:
        for entry in row.get("history") or ():
            self.earlier_cost += entry.get("cost") or 0.0
            if entry["attempt"] > 1:
                self.rows[entry["attempt"]] += 1
                self.cost[entry["attempt"]] += entry.get("cost") or 0.0
        attempts = row.get("attempts") or 1
        if attempts > 1:
            self.rows[attempts] += 1
            self.cost[attempts] += (row.get("usage") or {}).get("cost") or 0.0
            self.recovered[attempts] += row["status"] == "succeeded"

    def manifest_fields(self, estimate: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The manifest's ``recovery``; *estimate*: the run's estimate fields (see
        :func:`add_pass_estimate`), whose ``recovery_passes`` it lists."""
        passes = [
            {
                "attempt": attempt,
                "rows": self.rows[attempt],
                "recovered": self.recovered[attempt],
                "cost_usd": round(self.cost[attempt], 10),
            }
            for attempt in sorted(self.rows)
        ]
        return {
            "recovery": {
                "max_row_attempts": self.max_row_attempts,
                "rows": sum(p["rows"] for p in passes if p["attempt"] == 2),
                "recovered": sum(p["recovered"] for p in passes),
                "cost_usd": round(sum(self.cost.values()), 10),
                "passes": passes,
                "estimates": list((estimate or {}).get("recovery_passes", ())),
            }
        }
