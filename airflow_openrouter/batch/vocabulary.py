"""The words of bulk generation, defined once: statuses of batches, events, result rows and manifests.

Every status compared anywhere in the operator, the sensor, the trigger, the watch or the results
writer comes from here (batch statuses from :data:`airflow_openrouter.types.BatchStatus`, the API's own).

``SnapshotStatus``
    what one poll saw of one batch: an API :data:`BatchStatus`, ``not_found`` (it answered 404 for
    longer than the read-after-write grace: deleted, or never ours) or ``unknown`` (not polled yet).
``EventStatus``
    how a wait ended: ``completed`` (every batch completed); ``failed`` / ``not_found`` / ``expired`` /
    ``cancelled`` (every batch is finished and at least one ended that way: the first in that order
    wins); ``timeout`` (the deadline passed first) or ``error`` (polling itself kept failing).
``RowStatus``
    what happened to one item: ``succeeded``, ``failed``, ``invalid_output`` (the reply did not match
    the schema), ``expired`` / ``cancelled`` (its batch ended so before the item ran), ``missing`` (no
    result came back for it).
``ManifestStatus``
    how a whole bulk run ended: ``completed`` (every item succeeded), ``completed_with_failures``
    (some did not, within ``max_failed_fraction``: the task succeeded), ``failed`` (the task failed:
    too many items did not succeed, an error that repeats for every item stopped the run, or a batch
    failed), ``expired`` / ``cancelled`` / ``not_found`` (a batch ended so; the task failed retryably
    and a retry resubmits that batch's items), ``dry_run`` (``dry_run=True``: nothing was sent).
"""

from __future__ import annotations

from typing import Literal, get_args

from airflow_openrouter.types import TERMINAL_BATCH_STATUSES, BatchStatus

__all__ = [
    "BATCH_ENDED_WITHOUT_RESULTS",
    "EVENT_STATUSES",
    "ROW_STATUSES",
    "TERMINAL_BATCH_STATUSES",
    "WORST_MANIFEST_STATUS_FIRST",
    "BatchStatus",
    "Engine",
    "EventStatus",
    "ManifestStatus",
    "RowStatus",
    "SnapshotStatus",
]

Engine = Literal["batch", "concurrent"]
SnapshotStatus = BatchStatus | Literal["not_found", "unknown"]
EventStatus = Literal["completed", "failed", "not_found", "expired", "cancelled", "timeout", "error"]
RowStatus = Literal["succeeded", "failed", "invalid_output", "expired", "cancelled", "missing"]
ManifestStatus = Literal[
    "completed", "completed_with_failures", "failed", "expired", "cancelled", "not_found", "dry_run"
]

EVENT_STATUSES: frozenset[EventStatus] = frozenset(get_args(EventStatus))
ROW_STATUSES: tuple[RowStatus, ...] = get_args(RowStatus)
#: Finished without results to fetch, worst first: a later try submits such a batch's items again.
BATCH_ENDED_WITHOUT_RESULTS: tuple[EventStatus, ...] = ("failed", "not_found", "expired", "cancelled")
#: Every manifest status, worst first: how the shards of one job add up (:mod:`.shards`).
WORST_MANIFEST_STATUS_FIRST: tuple[ManifestStatus, ...] = (
    "failed",
    "not_found",
    "expired",
    "cancelled",
    "completed_with_failures",
    "completed",
)
#: Rows that were answered, and billed: never sent again.
ANSWERED_ROW_STATUSES: frozenset[RowStatus] = frozenset({"succeeded", "invalid_output"})
