"""Who a task run is, where its files go, and the record that makes a retry re-attach.

**Never pay twice.** The ids of submitted batches are written down right after each ``POST /batches``,
before the next one is sent, together with a fingerprint of everything that was rendered for
submission and the items still to submit (``todo``). A retry or a clear of the same task run (same
dag, task, run and map index -- the try number is deliberately left out) finds the record, and if the
fingerprint matches it re-attaches to the recorded batches and submits only what is still to do: the
items a crash kept it from submitting, and the items of batches that ended without results.

**Where the record lives.** Always in a small JSON file under ``{results dir}/_state/`` (object
storage, so any worker finds it); on Airflow 3.3+ also in the ``task_state_store``, which is read first.
The file is what survives ``[state_store] clear_on_success = True``, which deletes the task state store
rows when the task succeeds: a later clear of the succeeded task still re-attaches to its batches. Both
survive a worker crash; delete the file (and the state) to submit afresh.

**Run tag.** :func:`run_tag` is a short hash of the task run and the fingerprint. Every ``custom_id`` a
batch is submitted with ends with ``~{tag}`` (see :mod:`.submit`), which is how a batch whose creation
answer was lost is proven to be this run's, never a sibling task's or map index's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from airflow_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

__all__ = [
    "BatchRecord",
    "MirroredRecord",
    "ObjectStorageRecord",
    "RecordStore",
    "SubmittedBatch",
    "TaskRunIdentity",
    "TaskStateStoreRecord",
    "reattach_or_start",
    "record_store",
    "run_tag",
]

STATE_KEY = "openrouter_batch"
STATE_DIR = "_state"
# OpenRouter keeps batch inputs and results for 30 days; the record is useless after that.
STATE_RETENTION = timedelta(days=30)
_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9._=-]+")

#: Half-open ``(start, stop)`` ranges of item indexes, sorted and disjoint.
Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TaskRunIdentity:
    """One task run, across its tries: the unit that must never pay twice."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    @classmethod
    def from_context(cls, context: Context) -> TaskRunIdentity:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return cls(ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else map_index)

    @property
    def key(self) -> str:
        """A short, path-safe hash of the identity."""
        raw = "\0".join((self.dag_id, self.task_id, self.run_id, str(self.map_index)))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def results_file(self, output_path: str, suffix: str = ".jsonl") -> ObjectStoragePath:
        """The results file of this run: *output_path* itself when it names a *suffix* file (with
        ``.{map_index}`` before the extension for a mapped task, so that map indexes do not overwrite
        each other), else ``{output_path}/{dag_id}/{task_id}/{run_id}[.{map_index}]{suffix}``."""
        from airflow.sdk import ObjectStoragePath

        base = ObjectStoragePath(output_path)
        if base.name.endswith(suffix):
            if self.map_index >= 0:
                return base.parent / f"{base.name.removesuffix(suffix)}.{self.map_index}{suffix}"
            return base
        stem = _path_safe(self.run_id) + (f".{self.map_index}" if self.map_index >= 0 else "")
        return base / _path_safe(self.dag_id) / _path_safe(self.task_id) / f"{stem}{suffix}"


def _path_safe(text: str) -> str:
    return _UNSAFE_IN_PATH.sub("_", text)


def run_tag(run_key: str, fingerprint: str, attempt: int = 1) -> str:
    """Ten hex characters that only this task run, with these inputs, puts in its custom ids (a
    recovery pass's follow-up batches carry their own: *attempt* is the pass's, see :mod:`.recovery`)."""
    salt = fingerprint if attempt == 1 else f"{fingerprint}#{attempt}"
    return hashlib.sha256(f"{run_key}\0{salt}".encode()).hexdigest()[:10]


# --- ranges of item indexes ------------------------------------------------------------------------


def as_ranges(indexes: Iterable[int] | Iterable[Sequence[int]]) -> Ranges:
    """Sorted, merged ranges from item indexes or from ``(start, stop)`` pairs (a JSON list of lists)."""
    pairs = sorted((i, i + 1) if isinstance(i, int) else (int(i[0]), int(i[1])) for i in indexes)
    merged: list[list[int]] = []
    for start, stop in pairs:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        elif stop > start:
            merged.append([start, stop])
    return tuple((a, b) for a, b in merged)


def without(ranges: Ranges, removed: Ranges) -> Ranges:
    """*ranges* minus *removed*."""
    kept: list[tuple[int, int]] = []
    for start, stop in ranges:
        cursor = start
        for a, b in removed:
            if b <= cursor or a >= stop:
                continue
            if a > cursor:
                kept.append((cursor, a))
            cursor = max(cursor, b)
        if cursor < stop:
            kept.append((cursor, stop))
    return tuple(kept)


def size_of(ranges: Ranges) -> int:
    return sum(b - a for a, b in ranges)


def describe(ranges: Ranges, limit: int = 3) -> str:
    """``"items 0..4999"``, ``"items 3, 7..9 and 2 more ranges"``."""
    parts = [f"{a}" if b == a + 1 else f"{a}..{b - 1}" for a, b in ranges[:limit]]
    more = f" and {len(ranges) - limit} more ranges" if len(ranges) > limit else ""
    return f"item{'s' if size_of(ranges) != 1 else ''} {', '.join(parts)}{more}"


# --- the record ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedBatch:
    """One submitted batch and the items it holds.

    :param estimated_usd: its cost's upper bound when it was submitted: what it counts against
        ``max_cost_usd`` until its billed cost is known (see :attr:`BatchRecord.billed`).
    :param attempt: 1 for the first pass, else the recovery pass's attempt (a follow-up batch).
    """

    id: str
    ranges: Ranges
    created_at: int | None = None
    expires_at: int | None = None
    estimated_usd: float | None = None
    attempt: int = 1

    @property
    def count(self) -> int:
        return size_of(self.ranges)

    def holds(self, index: int) -> bool:
        return any(a <= index < b for a, b in self.ranges)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ranges": [list(r) for r in self.ranges],
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "estimated_usd": self.estimated_usd,
            "attempt": self.attempt,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubmittedBatch:
        if "ranges" in data:
            ranges = as_ranges(data["ranges"])
        else:  # a record written before resubmissions of single items existed
            ranges = ((data["first_index"], data["first_index"] + data["count"]),)
        return cls(
            data["id"],
            ranges,
            data.get("created_at"),
            data.get("expires_at"),
            data.get("estimated_usd"),
            int(data.get("attempt") or 1),
        )


@dataclass
class BatchRecord:
    """What was submitted for a task run, for which inputs, and what is still to submit.

    :param batches: in submission order; for an item in several batches (a resubmission), the last
        one holds its result.
    :param todo: items that still need a batch: never submitted, or their batch ended without results,
        or their result failed in a way that may pass.
    :param pending: saved right before a POST /batches: ``{"ranges", "posted_at"}`` of the chunk being
        sent. Found by a later try, it means the POST may have created a batch nobody heard of.
    :param cached: items answered from the result cache when the record started (never submitted; their
        rows are in the run's part files). ``looked_up``: whether the cache was consulted already.
    :param billed: what each fetched batch was billed (by id; kept when a batch is dropped).
    :param carried_usd: what this task run's earlier records (other inputs) were billed or committed.
    :param estimate: the manifest's estimate fields, from the try that submitted (``estimated_cost_usd``,
        ``estimate_basis``), and ``price``: the model's list price then (for ``list_price_usd``).
    :param recovering: the attempt of the recovery pass under way (0: none). While it is set, ``todo``
        and ``pending`` are items of that pass, whose requests are in its recovery file (see
        :mod:`.followup`), recorded before its first follow-up batch is submitted.
    :param worker_pass_after: how many batches the record held when a recovery pass last sent rows from
        the worker (``None``: none did): those rows win over these batches' rows, and lose to the rows of
        a batch submitted later (a retry's resubmission of a row the worker pass failed again).
    """

    fingerprint: str
    model: str
    total_items: int
    batches: list[SubmittedBatch] = field(default_factory=list)
    todo: Ranges = ()
    pending: dict[str, Any] | None = None
    cached: Ranges = ()
    looked_up: bool = False
    billed: dict[str, float] = field(default_factory=dict)
    carried_usd: float = 0.0
    estimate: dict[str, Any] | None = None
    price: dict[str, Any] | None = None
    recovering: int = 0
    worker_pass_after: int | None = None

    @classmethod
    def start(cls, fingerprint: str, model: str, total_items: int, carried_usd: float = 0.0) -> BatchRecord:
        return cls(
            fingerprint,
            model,
            total_items,
            todo=((0, total_items),) if total_items else (),
            carried_usd=carried_usd,
        )

    def committed_usd(self) -> float:
        """What this task run has spent or committed: the billed cost of fetched batches, the estimate
        of the ones not fetched yet, and what earlier records carried over."""
        unbilled = sum(b.estimated_usd or 0.0 for b in self.batches if b.id not in self.billed)
        return self.carried_usd + sum(self.billed.values()) + unbilled

    def mark_cached(self, indexes: Iterable[int]) -> None:
        """Items answered from the result cache: never to be submitted."""
        self.cached = as_ranges(indexes)
        self.todo = without(self.todo, self.cached)
        self.looked_up = True

    @property
    def batch_ids(self) -> list[str]:
        return [b.id for b in self.batches]

    def holder_of(self, index: int) -> SubmittedBatch | None:
        """The batch that holds the result of item *index*: the last submitted one that has it."""
        return next((b for b in reversed(self.batches) if b.holds(index)), None)

    def add(self, batch: SubmittedBatch) -> None:
        self.batches.append(batch)
        self.todo = without(self.todo, batch.ranges)
        self.pending = None

    def drop(self, batch_ids: Iterable[str]) -> list[SubmittedBatch]:
        """Forget batches that ended without results; their items are to submit again."""
        gone = set(batch_ids)
        dropped = [b for b in self.batches if b.id in gone]
        self.batches = [b for b in self.batches if b.id not in gone]
        self.resubmit([r for b in dropped for r in b.ranges])
        return dropped

    def resubmit(self, indexes: Iterable[int] | Iterable[Sequence[int]]) -> None:
        self.todo = as_ranges([*self.todo, *as_ranges(indexes)])

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "total_items": self.total_items,
            "batches": [b.to_json() for b in self.batches],
            "todo": [list(r) for r in self.todo],
            "pending": self.pending,
            "cached": [list(r) for r in self.cached],
            "looked_up": self.looked_up,
            "billed": self.billed,
            "carried_usd": self.carried_usd,
            "estimate": self.estimate,
            "price": self.price,
            "recovering": self.recovering,
            "worker_pass_after": self.worker_pass_after,
        }

    @classmethod
    def from_json(cls, data: Any) -> BatchRecord | None:
        """The record, or ``None`` for anything that is not one (an old or foreign value)."""
        if not isinstance(data, dict):
            return None
        try:
            batches = [SubmittedBatch.from_json(b) for b in data["batches"]]
            total = int(data["total_items"])
            if "todo" in data:
                todo = as_ranges(data["todo"])
            else:  # written before ``todo``: everything no batch holds
                todo = without(((0, total),), as_ranges([r for b in batches for r in b.ranges]))
            pending = data.get("pending")
            if pending and "ranges" not in pending:
                first, count = pending["first_index"], pending["count"]
                pending = {"ranges": [[first, first + count]], "posted_at": pending["posted_at"]}
            return cls(
                data["fingerprint"],
                data["model"],
                total,
                batches,
                todo,
                pending,
                cached=as_ranges(data.get("cached") or ()),
                looked_up=bool(data.get("looked_up")),
                billed={str(k): float(v) for k, v in (data.get("billed") or {}).items()},
                carried_usd=float(data.get("carried_usd") or 0.0),
                estimate=data.get("estimate"),
                price=data.get("price"),
                recovering=int(data.get("recovering") or 0),
                worker_pass_after=data.get("worker_pass_after"),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return None


# --- where the record is kept ----------------------------------------------------------------------


class RecordStore(Protocol):
    """Where the :class:`BatchRecord` of one task run is kept."""

    location: str

    def load(self) -> BatchRecord | None: ...

    def save(self, record: BatchRecord) -> None: ...


class TaskStateStoreRecord:
    """The record in Airflow's task state store (3.3+): shared by every try of the task instance."""

    location = "the task state store"

    def __init__(self, store: Any) -> None:
        self._store = store

    def load(self) -> BatchRecord | None:
        return BatchRecord.from_json(self._store.get(STATE_KEY))

    def save(self, record: BatchRecord) -> None:
        self._store.set(STATE_KEY, record.to_json(), retention=STATE_RETENTION)


class ObjectStorageRecord:
    """The record as a small JSON file beside the results."""

    def __init__(self, path: ObjectStoragePath) -> None:
        self._path = path
        self.location = str(path)

    def load(self) -> BatchRecord | None:
        if not self._path.exists():
            return None
        try:
            data = json.loads(self._path.read_text())
        except ValueError:
            # Guessing here could submit (and pay for) the batches a second time.
            raise OpenRouterError(
                f"The batch record {self.location} is not valid JSON. Check on openrouter.ai that its "
                "batches are not running, then delete the file to submit afresh."
            ) from None
        return BatchRecord.from_json(data)

    def save(self, record: BatchRecord) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash mid-write never leaves a torn record behind.
        partial = self._path.with_name(f"{self._path.name}.partial")
        partial.write_text(json.dumps(record.to_json()))
        partial.rename(self._path)


class MirroredRecord:
    """Saved to both stores, read from the first that has it (see the module docstring)."""

    def __init__(self, primary: RecordStore, mirror: RecordStore) -> None:
        self._stores = (primary, mirror)
        self.location = f"{primary.location} (and {mirror.location})"

    def load(self) -> BatchRecord | None:
        return next((r for r in (s.load() for s in self._stores) if r is not None), None)

    def save(self, record: BatchRecord) -> None:
        for store in self._stores:
            store.save(record)


def record_store(context: Context, identity: TaskRunIdentity, results_file: ObjectStoragePath) -> RecordStore:
    """The JSON file in ``_state/`` beside the results, mirrored in the task state store where
    Airflow has one."""
    file = ObjectStorageRecord(results_file.parent / STATE_DIR / f"{identity.key}.json")
    store = context.get("task_state_store")
    return file if store is None else MirroredRecord(TaskStateStoreRecord(store), file)


class _Logger(Protocol):
    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


def reattach_or_start(
    store: RecordStore, *, fingerprint: str, model: str, total_items: int, log: _Logger
) -> BatchRecord:
    """The recorded batches when the inputs are unchanged; otherwise a fresh, empty record.

    A fresh record is only saved once its first batch is about to be submitted, so changed inputs
    that then fail to render or submit leave the old record in place.
    """
    recorded = store.load()
    if recorded is not None and recorded.fingerprint == fingerprint:
        log.info(
            "Re-attaching to %d batch(es) already submitted for these inputs (%s): nothing is submitted "
            "twice. Record: %s.",
            len(recorded.batches),
            ", ".join(recorded.batch_ids) or "none yet",
            store.location,
        )
        return recorded
    if recorded is not None and recorded.batches:
        log.warning(
            "The inputs changed since batch(es) %s were submitted for this task run: submitting afresh. "
            "The earlier batches keep running and are billed (and count against max_cost_usd).",
            ", ".join(recorded.batch_ids),
        )
    carried = recorded.committed_usd() if recorded is not None else 0.0
    return BatchRecord.start(fingerprint, model, total_items, carried_usd=carried)
