"""Waiting for batches: the decision each poll feeds, and the one event waiting ends with.

:class:`BatchWatch` is fed what each poll saw (by :func:`~.poll.poll_round`) and says when waiting is
over. It does no I/O and reads only the clock it is given, so the trigger (in the triggerer), the
operator's re-attach look and the sensor's poke all decide the same way.

**Bounded by the deadline.** :meth:`BatchWatch.round_budget` is the time left to the deadline, which
bounds every poll round; a batch the round did not reach counts as polled, and the event is
``timeout``. The one exception: a watch that starts past its deadline still gets one look of at most
:data:`LATE_LOOK_S`, so that a task re-attaching long after its deadline learns that its batches
finished instead of giving up on them unseen.

**A 404** right after creation is OpenRouter's read-after-write lag and is waited out. A batch that
still answers 404 :data:`NOT_FOUND_GRACE_S` after it was created (or, when its creation time is not
known, after the watcher started or first saw the 404) is gone -- deleted, or never this workspace's --
and ends as ``not_found``, like a batch that ended without results.

The event (:class:`BatchEvent`, sent as a plain dict between triggerer and worker) carries ids,
statuses, counts, usage summed over completed batches, and a reason -- never results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from airflow_openrouter.batch.failures import sentence
from airflow_openrouter.batch.vocabulary import (
    BATCH_ENDED_WITHOUT_RESULTS,
    EVENT_STATUSES,
    TERMINAL_BATCH_STATUSES,
    EventStatus,
    SnapshotStatus,
)
from airflow_openrouter.exceptions import (
    OpenRouterError,
    OpenRouterNotFoundError,
    OpenRouterPaymentRequiredError,
)

if TYPE_CHECKING:
    from airflow_openrouter.types import Batch

__all__ = ["BatchEvent", "BatchSnapshot", "BatchWatch"]

MAX_CONSECUTIVE_POLL_ERRORS = 5
# OpenRouter may answer 404 for a few seconds after creating a batch (read-after-write lag).
NOT_FOUND_GRACE_S = 120.0
# A watch that starts past its deadline still looks once, for at most this long.
LATE_LOOK_S = 60.0
_FINISHED: frozenset[str] = frozenset(TERMINAL_BATCH_STATUSES) | {"not_found"}


@dataclass(frozen=True)
class BatchSnapshot:
    """What the last poll saw of one batch."""

    id: str
    status: SnapshotStatus = "unknown"
    total: int = 0
    completed: int = 0
    failed: int = 0
    error: str | None = None

    @classmethod
    def of(cls, batch: Batch) -> BatchSnapshot:
        counts = batch.request_counts
        error = batch.error.message if batch.error else None
        status = cast("SnapshotStatus", batch.status)
        return cls(batch.id, status, counts.total, counts.completed, counts.failed, error)

    @property
    def finished(self) -> bool:
        return self.status in _FINISHED

    def progress(self) -> tuple[str, int, int, int]:
        """What a change worth an INFO line is made of."""
        return (self.status, self.total, self.completed, self.failed)

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "total": self.total,
            "completed": self.completed,
            "failed": self.failed,
            "error": self.error,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> BatchSnapshot:
        return cls(
            id=str(data.get("id")),
            status=cast("SnapshotStatus", data.get("status", "unknown")),
            total=int(data.get("total") or 0),
            completed=int(data.get("completed") or 0),
            failed=int(data.get("failed") or 0),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class BatchEvent:
    """How waiting ended; crosses the triggerer/worker boundary as :meth:`to_payload`."""

    status: EventStatus
    batches: tuple[BatchSnapshot, ...]
    usage: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "batches": [b.to_payload() for b in self.batches],
            "usage": dict(self.usage),
            "reason": self.reason,
        }

    @classmethod
    def from_payload(cls, payload: Any, *, batch_ids: Iterable[str] = ()) -> BatchEvent:
        """Check an event that crossed the triggerer/worker boundary (through the metadata DB).

        A missing event, an unknown status or a malformed body is an error -- never a success.
        """
        ids = list(batch_ids)
        where = f" for batch(es) {', '.join(ids)}" if ids else ""
        if not isinstance(payload, Mapping):
            raise OpenRouterError(f"The batch trigger returned no event{where} (got {payload!r:.100}).")
        status = payload.get("status")
        if status not in EVENT_STATUSES:
            raise OpenRouterError(
                f"The batch trigger returned an unknown status {status!r}{where}; expected one of "
                f"{', '.join(sorted(EVENT_STATUSES))}."
            )
        batches = payload.get("batches")
        if not isinstance(batches, list) or not all(isinstance(b, Mapping) for b in batches):
            raise OpenRouterError(f"The batch trigger's {status!r} event{where} lists no batches.")
        snapshots = tuple(BatchSnapshot.from_payload(b) for b in batches)
        return cls(status, snapshots, dict(payload.get("usage") or {}), payload.get("reason"))

    def snapshot(self, batch_id: str) -> BatchSnapshot:
        return next((b for b in self.batches if b.id == batch_id), BatchSnapshot(batch_id))

    def status_of(self, batch_id: str) -> SnapshotStatus:
        return self.snapshot(batch_id).status

    def error_of(self, batch_id: str) -> str | None:
        """OpenRouter's reason for how the batch ended, when it gave one."""
        return self.snapshot(batch_id).error

    def ended_without_results(self) -> list[str]:
        """The batches that finished without results to fetch (failed, not found, expired, cancelled)."""
        return [b.id for b in self.batches if b.status in BATCH_ENDED_WITHOUT_RESULTS]


@dataclass
class BatchWatch:
    """Tracks a set of batches until all are finished, the deadline passes, or polling keeps failing.

    :param batch_ids: the batches to wait for.
    :param deadline: wall-clock unix time after which waiting stops (``None``: no deadline).
    :param created_at: unix creation time of the batches known to the caller; they are polled through
        the list endpoint, and their 404 grace counts from their creation.
    :param not_found_since: when the caller started watching (the sensor's start): the 404 grace of a
        batch of unknown creation time counts from here, or from its first 404 if that is earlier.
    :param max_consecutive_errors: poll errors of one batch tolerated in a row (each poll already
        went through the hook's retries).
    :param not_found_grace_s: how long a batch may answer 404 before it counts as gone.
    :param clock: wall-clock seconds (injectable for tests).
    """

    batch_ids: Sequence[str]
    deadline: float | None = None
    created_at: dict[str, int | None] = field(default_factory=dict)
    not_found_since: float | None = None
    max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS
    not_found_grace_s: float = NOT_FOUND_GRACE_S
    clock: Callable[[], float] = time.time
    _seen: dict[str, BatchSnapshot] = field(default_factory=dict, init=False)
    _usage: dict[str, float] = field(default_factory=dict, init=False)
    _errors: dict[str, int] = field(default_factory=dict, init=False)
    _first_not_found: dict[str, float] = field(default_factory=dict, init=False)
    _fatal: str | None = field(default=None, init=False)
    _polled: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.batch_ids = list(self.batch_ids)
        self.created_at = dict(self.created_at)

    def pending_ids(self) -> list[str]:
        """The batches not known to be finished yet: the ones to poll next."""
        return [i for i in self.batch_ids if not self.snapshot(i).finished]

    def polled_once(self) -> bool:
        """Whether every batch has been polled at least once (whatever the answer)."""
        return self._polled.issuperset(self.batch_ids)

    def snapshot(self, batch_id: str) -> BatchSnapshot:
        return self._seen.get(batch_id) or BatchSnapshot(batch_id)

    def forget(self, batch_ids: Iterable[str]) -> None:
        """Stop watching *batch_ids* (batches that will be replaced by new ones)."""
        gone = set(batch_ids)
        self.batch_ids = [i for i in self.batch_ids if i not in gone]
        for seen in (self._seen, self._errors, self._first_not_found):
            for batch_id in gone:
                seen.pop(batch_id, None)

    def seconds_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - self.clock()

    def round_budget(self) -> float | None:
        """How long the next poll round may take: the time left to the deadline (see the module)."""
        if self.deadline is None:
            return None
        left = self.seconds_left()
        return left if left > 0 or self.polled_once() else LATE_LOOK_S

    def observe(self, batch: Batch) -> bool:
        """Record what a poll of one batch returned; whether its state or counts changed."""
        self._polled.add(batch.id)
        self._errors.pop(batch.id, None)
        self._first_not_found.pop(batch.id, None)
        if batch.created_at:
            self.created_at[batch.id] = batch.created_at
        before = self._seen.get(batch.id)
        snapshot = self._seen[batch.id] = BatchSnapshot.of(batch)
        if batch.status == "completed" and batch.usage is not None and not (before and before.finished):
            usage = batch.usage
            for name, value in (
                ("prompt_tokens", usage.prompt_tokens),
                ("completion_tokens", usage.completion_tokens),
                ("total_tokens", usage.total_tokens),
                ("cost", usage.cost or 0.0),
            ):
                self._usage[name] = self._usage.get(name, 0) + value
        return before is None or before.progress() != snapshot.progress()

    def observe_error(self, batch_id: str, error: Exception) -> None:
        """Record that polling one batch failed; decides whether that is worth waiting out."""
        self._polled.add(batch_id)
        if isinstance(error, OpenRouterPaymentRequiredError):
            # OpenRouter answers 402 only for a finished batch whose cost exceeds the balance; the
            # results are kept. The worker's fetch reports it, with what to do.
            self._seen[batch_id] = BatchSnapshot(batch_id, "completed", error=str(error))
            return
        if isinstance(error, OpenRouterNotFoundError):
            now = self.clock()
            anchors = [self._first_not_found.setdefault(batch_id, now), self.not_found_since]
            anchors.append(self.created_at.get(batch_id))
            since = min(a for a in anchors if a is not None)
            if now - since > self.not_found_grace_s:
                self._seen[batch_id] = BatchSnapshot(
                    batch_id,
                    "not_found",
                    error=f"not found for more than {self.not_found_grace_s:g} s since it was created or "
                    f"first looked for ({sentence(str(error))}) It was deleted, or is not this workspace's",
                )
            return
        # Connection errors, timeouts, 429 and 5xx may pass; anything else (a bad key, a bug) will not.
        if not (isinstance(error, OpenRouterError) and error.transient):
            self._fatal = f"Polling batch {batch_id} failed: {error}"
            return
        self._errors[batch_id] = count = self._errors.get(batch_id, 0) + 1
        if count >= self.max_consecutive_errors:
            self._fatal = f"Polling batch {batch_id} failed {count} times in a row; last error: {error}"

    def observe_cut(self, batch_ids: Iterable[str]) -> None:
        """The deadline ended a round before these batches answered: they count as polled."""
        self._polled.update(batch_ids)

    def outcome(self) -> BatchEvent | None:
        """The event once waiting is over, else ``None``."""
        if self._fatal is not None:
            return self._event("error", sentence(self._fatal))
        if not self.pending_ids():
            statuses = {self.snapshot(i).status for i in self.batch_ids}
            worst: EventStatus = next((s for s in BATCH_ENDED_WITHOUT_RESULTS if s in statuses), "completed")
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
        ended = [self.snapshot(i) for i in self.batch_ids if self.snapshot(i).status == status]
        details = "; ".join(f"{b.id}: {b.error or 'no reason given'}" for b in ended)
        return sentence(f"{len(ended)} batch(es) {status.replace('_', ' ')}: {details}")

    def _event(self, status: EventStatus, reason: str | None) -> BatchEvent:
        snapshots = tuple(self.snapshot(i) for i in self.batch_ids)
        return BatchEvent(status, snapshots, dict(self._usage), reason)
