"""Why items failed, and what a bulk task does about it: succeed, fail retryably, or fail for good.

**Causes.** Every unsuccessful row carries a short ``cause`` (``"401 authentication"``, ``"503
server_error"``, ``"timeout"``, ``"invalid output"``, ``"batch expired"``...) and whether it is
``transient``: whether the same request may succeed later (5xx, 408, 429, timeouts, connection errors,
rows of expired, cancelled or vanished batches, missing rows), as :attr:`OpenRouterError.transient`
decides for errors. Validation errors (4xx), invalid output and moderation are permanent.

**The verdict** (:func:`judge`), in this order:

1. an error that repeats for every item (:attr:`OpenRouterError.systemic`: a bad key, no credits, a
   forbidden or unknown model) stopped the run: fail for good, with that error's type and advice;
2. a batch failed: fail for good; a batch expired, was cancelled or vanished: fail retryably (the
   retry resubmits its items);
3. more items did not succeed than ``max_failed_fraction`` allows: fail retryably when any failure is
   transient (the message says how many items the retry sends again), for good when all are permanent;
4. else succeed (``completed``, or ``completed_with_failures``).

Every failure message ends with the top causes and their counts (``Causes: 401 authentication ×200.``).
"""  # noqa: RUF002

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from airflow_openrouter.exceptions import (
    TRANSIENT_STATUSES,
    CostCapReached,
    OpenRouterAPIError,
    OpenRouterConnectionError,
    OpenRouterOutputValidationError,
    OpenRouterPermissionDeniedError,
    OpenRouterTimeoutError,
)

if TYPE_CHECKING:
    from airflow_openrouter.batch.vocabulary import Engine, EventStatus, ManifestStatus
    from airflow_openrouter.types import BatchItemError

__all__ = ["Verdict", "as_permanent", "cause_of", "causes_text", "item_error_cause", "judge", "sentence"]

TOP_CAUSES = 5
#: The cause of a row the running cost cap kept from being sent.
COST_CAP_CAUSE = "not started: cost cap"
# OpenRouter's canonical error types (``error.error_type``) after which the same request may succeed.
_TRANSIENT_ITEM_ERROR_TYPES = frozenset(
    {"rate_limit_exceeded", "provider_overloaded", "provider_unavailable", "server", "timeout", "unmapped"}
)
_LABELS = {
    400: "bad_request",
    401: "authentication",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    422: "unprocessable",
    429: "rate_limit",
}


def sentence(text: str) -> str:
    """*text* ending with a full stop (OpenRouter's messages often have none), ready for more text."""
    text = text.strip()
    return text if not text or text[-1] in ".!?" else f"{text}."


def cause_of(error: BaseException) -> str:
    """A short label of *error*, for counting: ``"401 authentication"``, ``"timeout"``, ..."""
    if isinstance(error, OpenRouterTimeoutError):
        return "timeout"
    if isinstance(error, OpenRouterConnectionError):
        return "connection error"
    if isinstance(error, OpenRouterPermissionDeniedError) and error.reasons:
        return "403 moderation"
    if isinstance(error, OpenRouterAPIError):
        if error.status is None:
            return "provider error"
        label = _LABELS.get(error.status, "server_error" if error.status >= 500 else "error")
        return f"{error.status} {label}"
    if isinstance(error, OpenRouterOutputValidationError):
        return "invalid output"
    if isinstance(error, CostCapReached):
        return COST_CAP_CAUSE
    return type(error).__name__


def item_error_cause(error: BatchItemError | None, status_code: int | None = None) -> tuple[str, bool]:
    """``(cause, transient)`` of a failed Batch API result row."""
    if error is None:
        code = status_code or 0
        return (
            f"{code} {_LABELS.get(code, 'server_error' if code >= 500 else 'error')}",
            code in TRANSIENT_STATUSES,
        )
    kind = error.error_type or error.type or "error"
    transient = kind in _TRANSIENT_ITEM_ERROR_TYPES or any(
        word in kind for word in ("server", "timeout", "rate_limit", "overloaded", "unavailable")
    )
    return kind, transient


def causes_text(causes: Mapping[str, int], limit: int = TOP_CAUSES) -> str:
    """``"Causes: 401 authentication ×200, timeout ×3."``, the most frequent first."""  # noqa: RUF002
    top = Counter(causes).most_common(limit)
    more = len(causes) - len(top)
    times = "\u00d7"  # the multiplication sign, as in "401 authentication (times) 200"
    listed = ", ".join(f"{cause} {times}{count}" for cause, count in top) + (
        f", {more} more" if more > 0 else ""
    )
    return f"Causes: {listed}." if listed else ""


@dataclass(frozen=True)
class Verdict:
    """How a bulk run ends. ``message`` is ``None`` when the task succeeds.

    :param error: when an error that repeats for every item stopped the run, its first occurrence:
        the task fails with that error's type (see :func:`as_permanent`).
    """

    status: ManifestStatus
    message: str | None = None
    retryable: bool = False
    error: OpenRouterAPIError | None = None


@dataclass(frozen=True)
class RunSummary:
    """What :func:`judge` reads: counts of the rows written, and how the batches ended."""

    total: int
    unsuccessful: int
    retry_count: int  # unsuccessful rows whose failure is transient: what a retry sends again
    causes: Mapping[str, int]
    output_uri: str
    engine: Engine
    systemic: OpenRouterAPIError | None = None
    batches_status: EventStatus = "completed"
    batches_reason: str | None = None
    #: Rows a recovery pass would have taken, not sent because the pass would exceed max_cost_usd.
    held_back_by_cap: int = 0


def judge(run: RunSummary, max_failed_fraction: float) -> Verdict:
    """The verdict on a finished run (see the module docstring)."""
    causes = causes_text(run.causes)
    results = f"Results: {run.output_uri}."
    if run.systemic is not None:
        not_started = run.causes.get(f"not started: {cause_of(run.systemic)}", 0)
        message = (
            f"{sentence(run.systemic.message)} This error comes back for every item, so the run stopped "
            f"after the first occurrence ({not_started} items were not started). Fix the cause, then "
            f"clear the task: items already answered are kept. {results} {causes}"
        )
        return Verdict("failed", message, error=run.systemic)
    if run.batches_status == "failed":
        message = (
            f"{sentence(run.batches_reason or 'A batch failed.')} {results} Not retried: a failed batch "
            "usually fails the same way again. Fix the cause, then clear the task: that resubmits only the "
            f"items of the failed batch(es) and keeps the completed ones. {causes}"
        )
        return Verdict("failed", message.strip())
    if run.batches_status != "completed":
        status = (
            run.batches_status if run.batches_status in ("expired", "cancelled", "not_found") else "failed"
        )
        message = (
            f"{sentence(run.batches_reason or f'A batch {status}.')} {results} A retry (or a clear) resubmits "
            f"only the items of the {status.replace('_', ' ')} batch(es) and keeps the completed ones. {causes}"
        )
        return Verdict(cast("ManifestStatus", status), message.strip(), retryable=True)
    if run.total == 0 or run.unsuccessful == 0:
        return Verdict("completed")
    if run.unsuccessful / run.total <= max_failed_fraction:
        return Verdict("completed_with_failures")
    too_many = (
        f"{run.unsuccessful} of {run.total} items did not succeed, more than "
        f"max_failed_fraction={max_failed_fraction:g} allows."
    )
    one_cause_for_all = run.unsuccessful == run.total and len(run.causes) == 1
    raise_fraction = "" if one_cause_for_all else " or raise max_failed_fraction"
    held_back = (
        f" A recovery pass of {run.held_back_by_cap} rows was not sent because it would exceed "
        "max_cost_usd: raise max_cost_usd, then clear the task to recover them."
        if run.held_back_by_cap
        else ""
    )
    if run.retry_count:
        resend = (
            "sends those items again"
            if run.engine == "concurrent"
            else "resubmits those items in a new batch"
        )
        message = (
            f"{too_many} {run.retry_count} of them failed in a way that may pass (see the causes): a retry "
            f"{resend} and keeps every item that succeeded.{held_back} {results} {causes}"
        )
        return Verdict("failed", message, retryable=True)
    capped = run.causes.get(COST_CAP_CAUSE, 0)
    if capped:  # not the inputs' fault: the budget ran out before these items were sent
        message = (
            f"{too_many} {capped} of them were not started because the billed cost reached max_cost_usd: "
            "raise max_cost_usd, then clear the task; it sends only the items without an answer and keeps "
            f"the others. {results} {causes}"
        )
        return Verdict("failed", message)
    if held_back:  # the repairs that would recover them were priced out, not refused by the model
        return Verdict("failed", f"{too_many}{held_back} {results} {causes}")
    message = (
        f"{too_many} Every failure is permanent, so a retry would fail the same way: fix the inputs "
        f"(changed inputs are submitted afresh){raise_fraction}. {results} {causes}"
    )
    return Verdict("failed", message)


def as_permanent(error: OpenRouterAPIError, message: str) -> OpenRouterAPIError:
    """*error*, with *message*, as an instance of its own class that is also Airflow's
    ``AirflowFailException``: the task fails without retries, and still raises the typed error
    (``except OpenRouterAuthenticationError`` and ``on_failure_callback`` see its class)."""
    permanent = error.with_message(message)
    permanent.__class__ = _permanent_class(type(error))
    return permanent


_PERMANENT: dict[type[OpenRouterAPIError], type[OpenRouterAPIError]] = {}


def _permanent_class(cls: type[OpenRouterAPIError]) -> type[OpenRouterAPIError]:
    from airflow_openrouter._compat import AirflowFailException

    if cls not in _PERMANENT:
        attributes: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        _PERMANENT[cls] = type(cls.__name__, (cls, AirflowFailException), attributes)
    return _PERMANENT[cls]
