"""The poll decision, and the one event it produces.

:class:`BatchWatch` is fed what each poll saw (a batch, or an error) and says when waiting is over.
It does no I/O and reads no clock of its own, so the trigger (async, in the triggerer), the operator's
non-deferrable wait and the sensor's poke all decide the same way.

The outcome is one small JSON event -- ids, statuses, counts, usage and a reason, never results:

``status``
    ``completed`` (every batch completed), ``failed`` / ``expired`` / ``cancelled`` (every batch is
    finished and at least one ended that way; ``failed`` wins over ``expired`` over ``cancelled``),
    ``timeout`` (the deadline passed first) or ``error`` (polling itself kept failing).
``batches``
    one entry per batch id: ``id``, ``status``, ``total``, ``completed``, ``failed``, ``error``
    (and ``payment_required`` when OpenRouter withholds the results until credits are added).
``usage``
    ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` and the billed ``cost`` in USD, summed
    over the completed batches.
``reason``
    why, in words, for anything but ``completed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airflow_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from airflow_openrouter.types import Batch

EVENT_STATUSES = frozenset({"completed", "failed", "expired", "cancelled", "timeout", "error"})
# When batches end in different ways, the event names the worst.
_SEVERITY = ("failed", "expired", "cancelled", "completed")
MAX_CONSECUTIVE_POLL_ERRORS = 5
# OpenRouter may answer 404 for a few seconds after creating a batch (read-after-write lag).
NOT_FOUND_GRACE_S = 120.0


@dataclass
class BatchWatch:
    """Tracks a set of batches until all are finished, the deadline passes, or polling keeps failing.

    :param batch_ids: the batches to wait for.
    :param deadline: wall-clock unix time after which waiting stops (``None``: no deadline).
    :param max_consecutive_errors: poll errors of one batch tolerated in a row (each poll already
        went through the hook's retries).
    :param not_found_grace_s: how long a batch may answer 404 before it counts as gone.
    :param clock: wall-clock seconds (injectable for tests).
    """

    batch_ids: Sequence[str]
    deadline: float | None = None
    max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS
    not_found_grace_s: float = NOT_FOUND_GRACE_S
    clock: Callable[[], float] = time.time
    _seen: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _usage: dict[str, float] = field(default_factory=dict, init=False)
    _errors: dict[str, int] = field(default_factory=dict, init=False)
    _first_not_found: dict[str, float] = field(default_factory=dict, init=False)
    _fatal: str | None = field(default=None, init=False)
    _polled: set[str] = field(default_factory=set, init=False)

    def pending_ids(self) -> list[str]:
        """The batches not known to be finished yet: the ones to poll next."""
        return [i for i in self.batch_ids if self._seen.get(i, {}).get("status") not in _SEVERITY]

    def polled_once(self) -> bool:
        """Whether every batch has been polled at least once (whatever the answer)."""
        return self._polled.issuperset(self.batch_ids)

    def status_of(self, batch_id: str) -> str | None:
        """The status the last poll of *batch_id* saw, if any."""
        return self._seen.get(batch_id, {}).get("status")

    def forget(self, batch_ids: Iterable[str]) -> None:
        """Stop watching *batch_ids* (batches that will be replaced by new ones)."""
        gone = set(batch_ids)
        self.batch_ids = [i for i in self.batch_ids if i not in gone]
        for seen in (self._seen, self._errors, self._first_not_found):
            for batch_id in gone:
                seen.pop(batch_id, None)

    def seconds_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - self.clock()

    def observe(self, batch: Batch) -> None:
        """Record what a poll of one batch returned."""
        self._polled.add(batch.id)
        self._errors.pop(batch.id, None)
        self._first_not_found.pop(batch.id, None)
        counts = batch.request_counts
        self._seen[batch.id] = {
            "id": batch.id,
            "status": batch.status,
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
            "error": batch.error.message if batch.error else None,
        }
        if batch.status == "completed" and batch.usage is not None:
            usage = batch.usage
            for name, value in (
                ("prompt_tokens", usage.prompt_tokens),
                ("completion_tokens", usage.completion_tokens),
                ("total_tokens", usage.total_tokens),
                ("cost", usage.cost or 0.0),
            ):
                self._usage[name] = self._usage.get(name, 0) + value

    def observe_error(self, batch_id: str, error: Exception) -> None:
        """Record that polling one batch failed; decides whether that is worth waiting out."""
        self._polled.add(batch_id)
        from airflow_openrouter._transport import RETRYABLE_STATUSES
        from airflow_openrouter.exceptions import (
            OpenRouterAPIError,
            OpenRouterNotFoundError,
            OpenRouterPaymentRequiredError,
        )

        if isinstance(error, OpenRouterPaymentRequiredError):
            # OpenRouter answers 402 only for a finished batch whose cost exceeds the balance; the
            # results are kept. The worker's fetch reports it, with what to do.
            self._seen[batch_id] = {
                "id": batch_id,
                "status": "completed",
                "error": str(error),
                "payment_required": True,
            }
            return
        if isinstance(error, OpenRouterNotFoundError):
            first = self._first_not_found.setdefault(batch_id, self.clock())
            if self.clock() - first > self.not_found_grace_s:
                self._fatal = f"Batch {batch_id} was not found for {self.not_found_grace_s:g} s: {error}"
            return
        # Connection errors, timeouts, 429 and 5xx may pass; anything else (a bad key, a bug) will not.
        permanent = isinstance(error, OpenRouterAPIError) and error.status not in RETRYABLE_STATUSES
        if permanent or not isinstance(error, OpenRouterError):
            self._fatal = f"Polling batch {batch_id} failed: {error}"
            return
        self._errors[batch_id] = count = self._errors.get(batch_id, 0) + 1
        if count >= self.max_consecutive_errors:
            self._fatal = f"Polling batch {batch_id} failed {count} times in a row; last error: {error}"

    def outcome(self) -> dict[str, Any] | None:
        """The event once waiting is over, else ``None``."""
        if self._fatal is not None:
            return self._event("error", self._fatal)
        if not self.pending_ids():
            worst = min((b["status"] for b in self._seen.values()), key=_SEVERITY.index)
            return self._event(worst, None if worst == "completed" else self._reason(worst))
        # Never a timeout before every batch was polled at least once: a task re-attaching after its
        # deadline must learn that its batches finished long ago, not give up on them unseen.
        if self.seconds_left() <= 0 and self.polled_once():
            return self._event(
                "timeout",
                f"The deadline passed while batch(es) {', '.join(self.pending_ids())} were still running. "
                "They keep running on OpenRouter and will be billed; a retry re-attaches to them.",
            )
        return None

    def _reason(self, status: str) -> str:
        ended = [b for b in self._seen.values() if b["status"] == status]
        details = "; ".join(f"{b['id']}: {b.get('error') or 'no reason given'}" for b in ended)
        return f"{len(ended)} batch(es) {status}: {details}"

    def _event(self, status: str, reason: str | None) -> dict[str, Any]:
        batches = [self._seen.get(i, {"id": i, "status": "unknown"}) for i in self.batch_ids]
        return {"status": status, "batches": batches, "usage": dict(self._usage), "reason": reason}


class _SyncBatchGetter(Protocol):
    def get_batch(self, batch_id: str) -> Batch: ...


def poll_round(hook: _SyncBatchGetter, watch: BatchWatch, log: Any) -> None:
    """Poll every pending batch once, from a worker (the trigger does the same with the async hook)."""
    for batch_id in watch.pending_ids():
        try:
            watch.observe(hook.get_batch(batch_id))
        except OpenRouterError as exc:
            log.warning("Polling batch %s failed: %s", batch_id, exc)
            watch.observe_error(batch_id, exc)


@dataclass(frozen=True)
class BatchEvent:
    """A validated event, as the operator and the sensor read it."""

    status: str
    batches: list[dict[str, Any]]
    usage: dict[str, float]
    reason: str | None

    @classmethod
    def parse(cls, event: Any, *, batch_ids: Iterable[str] = ()) -> BatchEvent:
        """Check an event that crossed the triggerer/worker boundary (through the metadata DB).

        A missing event, an unknown status or a malformed body is an error -- never a success.
        """
        where = f" for batch(es) {', '.join(batch_ids)}" if batch_ids else ""
        if not isinstance(event, Mapping):
            raise OpenRouterError(f"The batch trigger returned no event{where} (got {event!r:.100}).")
        status = event.get("status")
        if status not in EVENT_STATUSES:
            raise OpenRouterError(
                f"The batch trigger returned an unknown status {status!r}{where}; expected one of "
                f"{', '.join(sorted(EVENT_STATUSES))}."
            )
        batches = event.get("batches")
        if not isinstance(batches, list):
            raise OpenRouterError(f"The batch trigger's {status!r} event{where} lists no batches.")
        return cls(status, batches, dict(event.get("usage") or {}), event.get("reason"))

    @property
    def payment_required(self) -> bool:
        return any(b.get("payment_required") for b in self.batches)

    def status_of(self, batch_id: str) -> str:
        return self._batch(batch_id).get("status", "unknown")

    def error_of(self, batch_id: str) -> str | None:
        """OpenRouter's reason for how the batch ended, when it gave one."""
        return self._batch(batch_id).get("error")

    def _batch(self, batch_id: str) -> dict[str, Any]:
        return next((b for b in self.batches if b.get("id") == batch_id), {})
