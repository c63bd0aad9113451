"""The one options object both engines take: what to send, to which model, within which limits, where to.

The operator builds a :class:`JobOptions` once per try from its (rendered) arguments; the engines read
nothing else of the operator's. Frozen: an engine cannot change what the next step sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.endpoints import Endpoint
    from airflow_openrouter.batch.items import RequestBuilder
    from airflow_openrouter.batch.state import TaskRunIdentity
    from airflow_openrouter.cost.attribution import Attribution
    from airflow_openrouter.schemas import OutputSpec

__all__ = ["JobOptions", "Limits", "Recovery", "check_poll_interval"]

#: With ``recovery_engine="auto"``, a recovery pass of fewer rows than this goes through the
#: concurrent engine (no wait for another batch); more rows go into a follow-up batch.
AUTO_CONCURRENT_BELOW = 50


@dataclass(frozen=True)
class Limits:
    """How much a run may do, and how much may go wrong.

    :param max_failed_fraction: the share of items allowed not to succeed.
    :param timeout: batch engine: seconds to wait for the batches (``None``: until they expire).
    :param max_cost_usd: both engines: send nothing when the estimated cost (its upper bound, plus what
        earlier tries of the task run were billed) exceeds this; the concurrent engine also starts no
        new request once the billed cost reaches it.
    :param max_concurrency: concurrent engine: requests in flight at most.
    :param requests_per_minute: concurrent engine: cap on request starts.
    """

    max_failed_fraction: float = 0.0
    timeout: float | None = None
    max_cost_usd: float | None = None
    max_concurrency: int = 16
    requests_per_minute: float | None = None


@dataclass(frozen=True)
class Recovery:
    """How failed and invalid rows are tried again inside the task (see :mod:`.recovery`).

    :param max_row_attempts: attempts per row at most: the first pass plus ``max_row_attempts - 1``
        recovery passes (1: no recovery).
    :param engine: batch engine: ``"batch"`` (a follow-up batch), ``"concurrent"`` (from the worker)
        or ``"auto"`` (concurrent below ``concurrent_below`` rows, else a follow-up batch).
    :param fallback_models: a row that failed with a model or provider error is tried on the next of
        these (after the job's model).
    """

    max_row_attempts: int = 2
    engine: str = "auto"
    fallback_models: tuple[str, ...] = ()
    concurrent_below: int = AUTO_CONCURRENT_BELOW


def _chat() -> Endpoint:
    # Imported when a job is built, not with this module (the trigger imports it at DAG parse).
    from airflow_openrouter.batch.endpoints import CHAT

    return CHAT


@dataclass(frozen=True)
class JobOptions:
    """Everything an engine needs to run one task run's items.

    :param model: the resolved model id.
    :param provider: the user's provider routing preferences (``None``: OpenRouter's default).
    :param requests: renders each item's request body (prompts and request parameters).
    :param spec: what a reply must be; each output is validated against it.
    :param identity: the task run, across tries (the unit that never pays twice).
    :param results_file: where the rows go.
    :param id_field: the item field that keys the rows.
    :param endpoint: what the requests are and how answers become rows (:mod:`.endpoints`): chat
        completions unless told otherwise.
    :param result_cache: the result cache's root (``None``: no cache); see :mod:`.cached`.
    :param result_cache_ttl: seconds a cache entry stays valid (``None``: forever).
    :param dry_run: render, check, look up and estimate; send and write nothing.
    :param attribution: the ``user``/``session_id``/``metadata`` every request carries.
    :param try_number: the task's try (the part files of a try are named after it).
    :param recovery: how failed and invalid rows are tried again inside the task.
    """

    model: str
    provider: Mapping[str, Any] | None
    requests: RequestBuilder
    spec: OutputSpec
    identity: TaskRunIdentity
    results_file: ObjectStoragePath
    id_field: str | None
    limits: Limits
    endpoint: Endpoint = field(default_factory=_chat)
    result_cache: str | ObjectStoragePath | None = None
    result_cache_ttl: float | None = None
    dry_run: bool = False
    attribution: Attribution | None = None
    try_number: int = 1
    recovery: Recovery = field(default_factory=Recovery)


def check_poll_interval(value: Any, name: str = "poll_interval") -> float:
    """*value* as a positive number of seconds, or an error naming the argument."""
    from airflow_openrouter.exceptions import OpenRouterConfigError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OpenRouterConfigError(f"{name} must be a positive number of seconds, got {value!r:.40}.")
    return float(value)
