"""The result cache: entries by key, in a few immutable segment files per namespace on object storage.

**Layout.** ``{root}/v1/{namespace}/seg-{created ms}-{random}.orc``: one segment per writer (a task run),
each an immutable file of entries sorted by key with a compact index (see :mod:`._segment`). There is
no object per key and no shared file anyone rewrites, so concurrent writers (the map indexes of one
task, several DAGs sharing a cache) cannot corrupt each other: each writes its own uniquely named
segment, once.

**Lookups** (:mod:`._lookup`) sort the wanted keys (20 bytes each, see :mod:`._records`) and join them with every live
segment's index: a streamed merge for a large lookup, a binary search for a few keys. An entry older
than ``ttl`` is a miss; among several entries for a key the newest wins. Entries are then read front
to back per segment (data and index share the key order). Memory grows with the number of keys looked
up (about 40 bytes each), never with the size of the cache.

**Robust to torn files.** A segment whose trailer is missing or does not match its size (a writer
killed mid-write, a half-uploaded object) is skipped with a warning, and everything else stays
readable. An entry that is not valid JSON is a miss.

**Compaction.** When a namespace holds more than :data:`MAX_SEGMENTS` live segments, the writer that
notices merges the smallest into one new segment whose header *supersedes* them; readers ignore
superseded segments, and the writer deletes them once the superseding segment is more than
:data:`DELETE_AFTER_S` old (so no reader still reading them loses them). Two writers compacting at
once only produce duplicate entries, which lookups resolve (newest wins) and the next compaction drops.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import struct
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from airflow_openrouter.cache._lookup import POSITION, WANTED_WIDTH, CacheHit, CacheHits, Segment
from airflow_openrouter.cache._records import KEY_BYTES, Records, sort_records
from airflow_openrouter.cache._segment import TornSegment, iter_index, read_info, write_segment

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = ["CacheHit", "CacheHits", "CacheWriter", "ResultCache"]

log = logging.getLogger(__name__)

FORMAT_DIR = "v1"
SEGMENT_SUFFIX = ".orc"
#: Live segments per namespace above which a writer compacts.
MAX_SEGMENTS = 16
#: A superseded segment is deleted once its successor is this old (readers finish long before).
DELETE_AFTER_S = 3600.0
#: A torn segment (a killed writer's) is deleted once it is this old.
TORN_DELETE_AFTER_S = 24 * 3600.0
_PENDING = struct.Struct(">16sIQII")  # key, sequence, offset in the temp file, length, created
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEGMENT_NAME = re.compile(r"^seg-(\d{13})-[0-9a-f]{12}\.orc$")


class ResultCache:
    """Entries (JSON values) by 16-byte key in one *namespace* under *root*.

    :param root: an ``ObjectStoragePath`` (or its URI) shared by every writer and reader.
    :param namespace: entries are found only within their namespace (the operators use the model id).
    :param ttl: seconds an entry stays valid (``None``: forever); older entries are misses.
    :param clock: unix seconds (injectable for tests).
    """

    def __init__(
        self,
        root: ObjectStoragePath | str,
        namespace: str,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from airflow.sdk import ObjectStoragePath

        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.root = root if isinstance(root, ObjectStoragePath) else ObjectStoragePath(root)
        self.namespace = namespace
        self.ttl = ttl
        self.clock = clock
        self.directory = self.root / FORMAT_DIR / namespace_directory(namespace)

    def __repr__(self) -> str:
        return f"ResultCache({str(self.directory)!r})"

    # --- reading -----------------------------------------------------------------------------------

    def lookup(self, keys: Iterable[tuple[int, bytes]]) -> CacheHits:
        """Find the entries of ``(position, key)`` pairs (a position is the caller's index, < 2**32).

        Keys may repeat (two items with the same request): each position gets the entry. Nothing is read
        beyond the segments' indexes until :meth:`CacheHits.entries` is iterated.
        """
        wanted = sort_records((key + POSITION.pack(position) for position, key in keys), WANTED_WIDTH)
        hits = CacheHits(wanted)
        if not len(wanted):
            return hits
        not_before = self.clock() - self.ttl if self.ttl is not None else -math.inf
        for number, segment in enumerate(self.live_segments()):
            try:
                with segment.path.open("rb") as file:
                    hits.join(number, segment, file, not_before)
            except (OSError, TornSegment) as exc:  # deleted meanwhile, or unreadable: its keys miss
                log.warning("Result cache segment %s skipped: %s", segment.path, exc)
        return hits

    def get(self, key: bytes) -> CacheHit | None:
        """The entry of one key (position 0), or ``None``."""
        return next(self.lookup([(0, key)]).entries(), None)

    def put(self, key: bytes, entry: Any) -> str | None:
        """Store one entry (one small segment; compaction keeps their number bounded)."""
        with self.writer() as writer:
            writer.add(key, entry)
        return writer.segment

    def live_segments(self) -> list[Segment]:
        """The whole segments of the namespace that no other whole segment supersedes, oldest first."""
        whole, _torn = self._scan()
        superseded = {name for segment in whole for name in segment.info.supersedes}
        return [s for s in whole if s.info.name not in superseded]

    def _scan(self) -> tuple[list[Segment], list[ObjectStoragePath]]:
        whole: list[Segment] = []
        torn: list[ObjectStoragePath] = []
        for path in self._segment_paths():
            try:
                with path.open("rb") as file:
                    whole.append(Segment(path, read_info(path.name, file)))
            except FileNotFoundError:
                continue  # deleted by a compaction since the listing
            except TornSegment as exc:
                log.warning("Result cache: ignoring %s (%s).", path, exc)
                torn.append(path)
        return whole, torn

    def _segment_paths(self) -> list[ObjectStoragePath]:
        with contextlib.suppress(Exception):  # listings may be cached by the filesystem: see others' writes
            self.directory.fs.invalidate_cache(self.directory.path)
        if not self.directory.exists():
            return []
        return sorted(
            (p for p in self.directory.iterdir() if _SEGMENT_NAME.match(p.name)), key=lambda p: p.name
        )

    # --- writing -----------------------------------------------------------------------------------

    def writer(self) -> CacheWriter:
        """A writer of new entries: they become one segment when it is closed (use it as a context)."""
        return CacheWriter(self)

    def _new_segment_path(self) -> ObjectStoragePath:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"seg-{int(self.clock() * 1000):013d}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"

    def _write(self, entries: Iterable[tuple[bytes, bytes, int]], supersedes: Iterable[str] = ()) -> str:
        path = self._new_segment_path()
        try:
            with path.open("wb") as file:
                write_segment(
                    file,
                    namespace=self.namespace,
                    created=self.clock(),
                    entries=entries,
                    supersedes=supersedes,
                )
        except BaseException:
            with contextlib.suppress(Exception):
                path.unlink()  # a partial segment is never read, but need not stay either
            raise
        return path.name

    def compact(self, max_segments: int = MAX_SEGMENTS) -> str | None:
        """Merge the smallest live segments when there are more than *max_segments*; delete what
        earlier compactions superseded long enough ago. Returns the new segment's name, if any."""
        whole, torn = self._scan()
        self._collect_garbage(whole, torn)
        existing = {s.info.name for s in whole}
        superseded = {name for s in whole for name in s.info.supersedes}
        live = [s for s in whole if s.info.name not in superseded]
        if len(live) <= max_segments:
            return None
        chosen = sorted(live, key=lambda s: s.info.entries)[: len(live) - max_segments // 2 + 1]
        # Transitively: so that deleting a superseded merged segment never revives what it merged.
        covered = {s.info.name for s in chosen} | {n for s in chosen for n in s.info.supersedes}
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(s.path.open("rb")) for s in chosen]
            merged = _merged_entries(chosen, files)
            name = self._write(merged, supersedes=covered & existing)
        log.info("Result cache %s: merged %d segments into %s.", self.directory, len(chosen), name)
        return name

    def _collect_garbage(self, whole: list[Segment], torn: list[ObjectStoragePath]) -> None:
        now = self.clock()
        doomed = {name for s in whole if now - s.info.created > DELETE_AFTER_S for name in s.info.supersedes}
        for s in whole:
            if s.info.name in doomed:
                _delete(s.path)
        for path in torn:
            match = _SEGMENT_NAME.match(path.name)
            if match and now - int(match.group(1)) / 1000 > TORN_DELETE_AFTER_S:
                _delete(path)


class CacheWriter:
    """Collects new entries in a local temporary file; :meth:`close` writes them as one segment.

    Use it as a context manager; entries added before an exception are still written (they are results
    already paid for). A key added twice keeps its last entry.
    """

    def __init__(self, cache: ResultCache) -> None:
        self._cache = cache
        self._spool: IO[bytes] | None = None
        self._pending = bytearray()
        self._size = 0
        self.count = 0
        self.segment: str | None = None

    def add(self, key: bytes, entry: Mapping[str, Any] | Any) -> None:
        import json

        if len(key) != KEY_BYTES:
            raise ValueError(f"a cache key is {KEY_BYTES} bytes (see cache_key), got {len(key)}")
        if self._spool is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed by close())
        payload = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
        self._spool.write(payload)
        self._pending += _PENDING.pack(key, self.count, self._size, len(payload), int(self._cache.clock()))
        self._size += len(payload)
        self.count += 1

    def close(self) -> str | None:
        """Write the segment (nothing when no entry was added) and compact the namespace if needed.
        Returns the segment's name."""
        spool, self._spool = self._spool, None
        if spool is None:
            return None
        try:
            records = sort_records(
                (
                    bytes(self._pending[i : i + _PENDING.size])
                    for i in range(0, len(self._pending), _PENDING.size)
                ),
                _PENDING.size,
            )
            self._pending = bytearray()
            self.segment = self._cache._write(_last_per_key(records, spool))
        finally:
            spool.close()
        self._cache.compact()
        return self.segment

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception:  # do not hide the error that is already on its way
            log.warning("Result cache: could not write the entries of a failed run.", exc_info=True)


def _last_per_key(records: Records, spool: IO[bytes]) -> Iterator[tuple[bytes, bytes, int]]:
    """Sorted pending records -> ``(key, payload, created)``, the last added entry of each key."""
    previous: tuple[bytes, int, int, int] | None = None
    for record in records:
        key, _seq, offset, length, created = _PENDING.unpack(record)
        if previous is not None and previous[0] != key:
            yield _read_pending(spool, *previous)
        previous = (key, offset, length, created)
    if previous is not None:
        yield _read_pending(spool, *previous)


def _read_pending(
    spool: IO[bytes], key: bytes, offset: int, length: int, created: int
) -> tuple[bytes, bytes, int]:
    spool.seek(offset)
    return key, spool.read(length), created


def _merged_entries(segments: list[Segment], files: list[IO[bytes]]) -> Iterator[tuple[bytes, bytes, int]]:
    """The entries of *segments* in key order, the newest of each key (a k-way merge, verified)."""
    import heapq

    def stream(number: int) -> Iterator[tuple[bytes, int, int, int, int]]:
        for key, offset, length, created in iter_index(segments[number].info, files[number], verify=True):
            yield key, -created, number, offset, length

    # The index of each is streamed while its data is read: two positions in one file.
    readers = [s.path.open("rb") for s in segments]
    try:
        previous = None
        for key, negative_created, number, offset, length in heapq.merge(
            *(stream(n) for n in range(len(segments)))
        ):
            if key == previous:
                continue
            previous = key
            readers[number].seek(offset)
            yield key, readers[number].read(length), -negative_created
    finally:
        for reader in readers:
            reader.close()


def _delete(path: ObjectStoragePath) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except Exception as exc:  # a read-only cache still works; it just keeps its old files
        log.warning("Result cache: could not delete %s: %s", path, exc)
    else:
        log.info("Result cache: deleted %s.", path)


def namespace_directory(namespace: str) -> str:
    """A path-safe, collision-free directory name for *namespace* (readable prefix plus a hash)."""
    readable = _UNSAFE.sub("_", namespace)[:48].strip("._") or "ns"
    return f"{readable}-{hashlib.sha256(namespace.encode()).hexdigest()[:10]}"
