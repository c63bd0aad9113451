"""Who a task run is, where its files go, and the record that makes a retry re-attach.

**Never pay twice.** The ids of submitted batches are written down right after each ``POST /batches``,
before the next one is sent, together with a fingerprint of everything that was rendered for
submission. A retry or a clear of the same task run (same dag, task, run and map index -- the try
number is deliberately left out) finds the record, and if the fingerprint matches it re-attaches to
the recorded batches and submits only the ones a crash kept it from submitting.

Where the record lives: in Airflow's ``task_state_store`` (Airflow 3.3+), which retries and clears of
a task instance share; on older Airflow, in a small JSON file under ``{results dir}/_state/``. Both
survive a worker crash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from airflow_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

STATE_KEY = "openrouter_batch"
STATE_DIR = "_state"
# OpenRouter keeps batch inputs and results for 30 days; the record is useless after that.
STATE_RETENTION = timedelta(days=30)
_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9._=-]+")


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

    def results_file(self, output_path: str) -> ObjectStoragePath:
        """The JSONL file of this run: *output_path* itself when it names a ``.jsonl`` file (with
        ``.{map_index}`` before the extension for a mapped task, so that map indexes do not overwrite
        each other), else ``{output_path}/{dag_id}/{task_id}/{run_id}[.{map_index}].jsonl``."""
        from airflow.sdk import ObjectStoragePath

        base = ObjectStoragePath(output_path)
        if base.name.endswith(".jsonl"):
            if self.map_index >= 0:
                return base.parent / f"{base.name.removesuffix('.jsonl')}.{self.map_index}.jsonl"
            return base
        stem = _path_safe(self.run_id) + (f".{self.map_index}" if self.map_index >= 0 else "")
        return base / _path_safe(self.dag_id) / _path_safe(self.task_id) / f"{stem}.jsonl"


def _path_safe(text: str) -> str:
    return _UNSAFE_IN_PATH.sub("_", text)


@dataclass(frozen=True)
class SubmittedBatch:
    """One submitted batch and the contiguous range of items it holds."""

    id: str
    first_index: int
    count: int
    created_at: int | None = None
    expires_at: int | None = None

    def indexes(self) -> range:
        return range(self.first_index, self.first_index + self.count)


@dataclass
class BatchRecord:
    """What was submitted for a task run, and for which inputs."""

    fingerprint: str
    model: str
    total_items: int
    batches: list[SubmittedBatch] = field(default_factory=list)
    # Saved right before a POST /batches: ``{"first_index", "count", "posted_at"}`` of the chunk being
    # sent. Found by a later try, it means the POST may have created a batch nobody heard of.
    pending: dict[str, int] | None = None

    @property
    def batch_ids(self) -> list[str]:
        return [b.id for b in self.batches]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> BatchRecord | None:
        """The record, or ``None`` for anything that is not one (an old or foreign value)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                fingerprint=data["fingerprint"],
                model=data["model"],
                total_items=data["total_items"],
                batches=[SubmittedBatch(**b) for b in data["batches"]],
                pending=data.get("pending"),
            )
        except (KeyError, TypeError):
            return None


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
    """The record as a small JSON file beside the results (Airflow < 3.3)."""

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


def record_store(context: Context, identity: TaskRunIdentity, results_file: ObjectStoragePath) -> RecordStore:
    """The task state store where Airflow has one, else a JSON file in ``_state/`` beside the results."""
    store = context.get("task_state_store")
    if store is not None:
        return TaskStateStoreRecord(store)
    return ObjectStorageRecord(results_file.parent / STATE_DIR / f"{identity.key}.json")


class _Logger(Protocol):
    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


def reattach_or_start(
    store: RecordStore, *, fingerprint: str, model: str, total_items: int, log: _Logger
) -> BatchRecord:
    """The recorded batches when the inputs are unchanged; otherwise a fresh, empty record.

    A fresh record is only saved once its first batch is submitted, so changed inputs that then fail
    to render or submit leave the old record in place.
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
            "The earlier batches keep running and are billed.",
            ", ".join(recorded.batch_ids),
        )
    return BatchRecord(fingerprint=fingerprint, model=model, total_items=total_items)
