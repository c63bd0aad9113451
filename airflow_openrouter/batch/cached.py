"""The result cache in a bulk run: find the items already answered before sending, add new answers after.

Both engines take the same two steps around their own sending, for every endpoint (see
:mod:`airflow_openrouter.cache` for the storage; what is endpoint-specific -- the key, the entry, the row
an entry becomes -- the job's :class:`~.endpoints.Endpoint` says):

1. **Before sending** -- :meth:`BulkCache.keys` computes every item's key from its rendered request (the
   spool line) with :meth:`~.endpoints.Endpoint.cache_keys`: for chat, the messages, ``response_format``
   and parameters, the model, the user's provider routing, the output schema and the repair policy
   (:func:`~airflow_openrouter.cache.chat_key_material`; a bulk row is never repaired); for embeddings,
   the model and the input's request body (:func:`~airflow_openrouter.cache.embeddings_key_material`).
   :meth:`BulkCache.lookup` finds the ``succeeded`` entries, and :meth:`BulkCache.rows` turns them into
   result rows (``cached: true``, cost 0, ``usage.cost_saved``); the engine writes them to its part
   files and sends only the rest.
2. **After the results** -- every ``succeeded`` row that was not itself from the cache is added
   (:meth:`BulkCache.writer`): one new segment per run. ``failed`` and ``invalid_output`` rows are never
   cached.

A cache that cannot be read or written never fails a run whose results are paid for: a lookup error is
raised before anything is sent (it names ``result_cache``), a write error after the results is logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_openrouter.cache import CacheHits, CacheWriter, ResultCache
from airflow_openrouter.cache._records import KEY_BYTES

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.endpoints import Endpoint
    from airflow_openrouter.batch.items import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.spool import RequestSpool

__all__ = ["READ_ERRORS", "BulkCache", "ItemKeys", "cache_read_error"]

KEYS_FILE = "cache-keys.bin"
#: Failures to read the cache that a retry would meet again: the path or its permissions are wrong.
_WRONG_PATH = (ValueError, NotADirectoryError, IsADirectoryError, PermissionError)


#: What a cache that cannot be read raises (see :func:`cache_read_error`).
READ_ERRORS = (OSError, ValueError)


def cache_read_error(result_cache: Any, exc: Exception) -> Exception:
    """The error of a cache that cannot be read, before anything is sent, naming ``result_cache``: a
    path that is wrong, or not allowed, is a configuration error (permanent); any other failure to read
    (the storage unreachable, say) may pass, and a retry looks again."""
    from airflow_openrouter.exceptions import OpenRouterConfigError, OpenRouterError

    what = f"result_cache {result_cache!s} cannot be read ({type(exc).__name__}: {exc}); nothing was sent."
    if isinstance(exc, _WRONG_PATH):
        return OpenRouterConfigError(f"{what} Fix the path or its connection, or pass result_cache=False.")
    return OpenRouterError(
        f"{what} A retry reads it again; if it keeps failing, check the storage, or pass result_cache=False."
    )


class ItemKeys:
    """The cache key of every item, by index: 16 bytes each in one buffer."""

    def __init__(self, data: bytes | bytearray) -> None:
        if len(data) % KEY_BYTES:
            raise ValueError("not a keys file")
        self._data = bytes(data)

    def __len__(self) -> int:
        return len(self._data) // KEY_BYTES

    def __getitem__(self, index: int) -> bytes:
        return self._data[index * KEY_BYTES : (index + 1) * KEY_BYTES]

    def save(self, directory: ObjectStoragePath) -> None:
        """Beside the run's part files: the fetch after a deferral adds new answers by these keys."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / KEYS_FILE).write_bytes(self._data)

    @classmethod
    def load(cls, directory: ObjectStoragePath, total: int) -> ItemKeys | None:
        path = directory / KEYS_FILE
        if not path.exists():
            return None
        keys = cls(path.read_bytes())
        return keys if len(keys) == total else None


class BulkCache:
    """The result cache of one bulk run (see the module docstring)."""

    def __init__(self, job: JobOptions, log: Any) -> None:
        assert job.result_cache is not None
        self.job = job
        self.log = log
        self.endpoint = job.endpoint
        self.cache = ResultCache(job.result_cache, namespace=job.model, ttl=job.result_cache_ttl)
        self.key_of = job.endpoint.cache_keys(job)

    def keys(self, spool: RequestSpool) -> ItemKeys:
        data = bytearray()
        key_of = self.key_of
        for line in spool:
            data += key_of(line["body"])
        return ItemKeys(data)

    def lookup(self, keys: ItemKeys, wanted: Iterator[int]) -> CacheHits:
        """The entries of the items *wanted* (indexes). Raises a clear error when the cache cannot be
        read at all: nothing has been sent yet. A path that is wrong, or not allowed, is a configuration
        error (permanent); any other failure to read (the storage unreachable, say) may pass, and a
        retry looks again."""
        try:
            hits = self.cache.lookup((i, keys[i]) for i in wanted)
        except READ_ERRORS as exc:
            raise cache_read_error(self.job.result_cache, exc) from exc
        if len(hits):
            self.log.info("Result cache %s: %d item(s) already answered.", self.cache.directory, len(hits))
        return hits

    def rows(self, hits: CacheHits, ids: ItemIds) -> Iterator[dict[str, Any]]:
        """The result row of every entry found (skipping entries that are not succeeded rows)."""
        custom_ids = _CustomIds(ids)
        for hit in hits.entries():
            entry = hit.entry
            if not isinstance(entry, Mapping) or entry.get("status") != "succeeded":
                continue
            yield self.endpoint.row_from_cache(entry, custom_ids[hit.position], hit.position)

    @contextlib.contextmanager
    def writer(self, keys: ItemKeys | None) -> Iterator[_RowAdder]:
        """Adds the new ``succeeded`` rows written inside the block; one segment at its end."""
        writer = self.cache.writer()
        adder = _RowAdder(
            writer, keys, self.endpoint, self.log, fallbacks=bool(self.job.recovery.fallback_models)
        )
        try:
            yield adder
        finally:
            try:
                writer.close()
            except Exception as exc:  # the results are written and paid for: a cache failure is not fatal
                self.log.warning(
                    "Result cache %s: could not add %d new answer(s) (%s: %s); the next run pays for them "
                    "again.",
                    self.cache.directory,
                    writer.count,
                    type(exc).__name__,
                    exc,
                )
            else:
                if writer.count:
                    self.log.info(
                        "Result cache %s: added %d new answer(s) (%s).",
                        self.cache.directory,
                        writer.count,
                        writer.segment,
                    )


class _RowAdder:
    """Called with every row written to the results file: keeps the new successes."""

    def __init__(
        self,
        writer: CacheWriter,
        keys: ItemKeys | None,
        endpoint: Endpoint,
        log: Any,
        *,
        fallbacks: bool = False,
    ) -> None:
        self._writer = writer
        self._keys = keys
        self._entry = endpoint.cache_entry
        self._log = log
        self._fallbacks = fallbacks

    def __call__(self, row: Mapping[str, Any]) -> None:
        if self._keys is None or row.get("status") != "succeeded" or row.get("cached"):
            return
        if not self._as_keyed(row):
            return
        try:
            self._writer.add(self._keys[row["index"]], self._entry(row))
        except Exception as exc:  # called while the results file is written: it must not stop that
            self._keys = None  # no more entries: the segment keeps those added so far
            self._log.warning(
                "Result cache: could not keep more answers (%s: %s); the results are written, and the next "
                "run pays again for the answers not kept.",
                type(exc).__name__,
                exc,
            )

    def _as_keyed(self, row: Mapping[str, Any]) -> bool:
        """Whether the answer is one of the request its key describes: not a repaired reply (the key
        says never repaired) nor, possibly, another model's (with ``fallback_models``)."""
        history = row.get("history") or ()
        if not history:
            return True
        return not self._fallbacks and all(h.get("status") != "invalid_output" for h in history)


class _CustomIds:
    """index -> custom_id, as a list of the strings ``ItemIds`` already holds (8 bytes an item): the
    ids are indexed in item order, so the list is in index order."""

    def __init__(self, ids: ItemIds) -> None:
        self._ids = ids
        self._by_index: list[str] | dict[int, str] = list(ids.indexes)

    def __getitem__(self, index: int) -> str:
        by_index = self._by_index
        if (
            isinstance(by_index, list)
            and index < len(by_index)
            and self._ids.indexes[by_index[index]] == index
        ):
            return by_index[index]
        if isinstance(by_index, list):  # ids not in index order (built by hand): map them once
            self._by_index = by_index = {i: c for c, i in self._ids.indexes.items()}
        return by_index[index]
