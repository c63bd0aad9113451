"""The result cache: entries by key, in a few immutable segment files per namespace on object storage.

**Layout.** ``{root}/v1/{namespace}/seg-{created ms}-{random}.orc``: one segment per writer (a task run),
each an immutable file of entries sorted by key with a compact index (see :mod:`._segment`). There is
no object per key and no shared file anyone rewrites, so concurrent writers (the map indexes of one
task, several DAGs sharing a cache) cannot corrupt each other: each writes its own uniquely named
segment, once.

**Lookups** sort the wanted keys (20 bytes each, see :mod:`._records`) and join them with every live
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
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from airflow_openrouter.cache._records import KEY_BYTES, Records, sort_records
from airflow_openrouter.cache._segment import (
    IndexReader,
    SegmentInfo,
    TornSegment,
    iter_index,
    parse_payload,
    read_info,
    write_segment,
)

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
_POSITION = struct.Struct(">I")
_WANTED_WIDTH = KEY_BYTES + _POSITION.size
_PENDING = struct.Struct(">16sIQII")  # key, sequence, offset in the temp file, length, created
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEGMENT_NAME = re.compile(r"^seg-(\d{13})-[0-9a-f]{12}\.orc$")


class CacheHit(NamedTuple):
    """One cached entry found for a looked-up key: the caller's position, the entry, its age."""

    position: int
    entry: Any
    created_at: int  # unix seconds


@dataclass(frozen=True)
class _Segment:
    path: ObjectStoragePath
    info: SegmentInfo


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
        wanted = sort_records((key + _POSITION.pack(position) for position, key in keys), _WANTED_WIDTH)
        hits = CacheHits(self, wanted)
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

    def live_segments(self) -> list[_Segment]:
        """The whole segments of the namespace that no other whole segment supersedes, oldest first."""
        whole, _torn = self._scan()
        superseded = {name for segment in whole for name in segment.info.supersedes}
        return [s for s in whole if s.info.name not in superseded]

    def _scan(self) -> tuple[list[_Segment], list[ObjectStoragePath]]:
        whole: list[_Segment] = []
        torn: list[ObjectStoragePath] = []
        for path in self._segment_paths():
            try:
                with path.open("rb") as file:
                    whole.append(_Segment(path, read_info(path.name, file)))
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

    def _collect_garbage(self, whole: list[_Segment], torn: list[ObjectStoragePath]) -> None:
        now = self.clock()
        doomed = {name for s in whole if now - s.info.created > DELETE_AFTER_S for name in s.info.supersedes}
        for s in whole:
            if s.info.name in doomed:
                _delete(s.path)
        for path in torn:
            match = _SEGMENT_NAME.match(path.name)
            if match and now - int(match.group(1)) / 1000 > TORN_DELETE_AFTER_S:
                _delete(path)


class CacheHits:
    """What a lookup found: how many positions hit, which ones, and (lazily) their entries."""

    def __init__(self, cache: ResultCache, wanted: Records) -> None:
        self._cache = cache
        self._wanted = wanted
        n = len(wanted)
        # Per wanted record (in key order): the best entry so far (segment -1: none).
        self._segment = array("i", [-1]) * n
        self._offset = array("q", [0]) * n
        self._length = array("I", [0]) * n
        self._created = array("I", [0]) * n
        self._segments: dict[int, _Segment] = {}

    # --- the join (ResultCache.lookup) -------------------------------------------------------------

    def join(self, number: int, segment: _Segment, file: IO[bytes], not_before: float) -> None:
        """Record the entries *segment* has for the wanted keys (newer entries win)."""
        self._segments[number] = segment
        entries, wanted = segment.info.entries, len(self._wanted)
        if not entries:
            return
        # A few keys against a large segment: binary searches; otherwise one streamed merge.
        if wanted * (math.log2(entries) + 1) * 4 < entries:
            self._probe(number, IndexReader(segment.info, file), not_before)
        else:
            self._merge(number, iter_index(segment.info, file), not_before)

    def _merge(self, number: int, index: Iterator[tuple[bytes, int, int, int]], not_before: float) -> None:
        wanted = self._wanted
        n, i = len(wanted), 0
        for key, offset, length, created in index:
            steps = 0
            while i < n and steps < 8 and wanted[i] < key:  # a short gallop, then a binary search
                i += 1
                steps += 1
            if i < n and wanted[i] < key:
                i = bisect_left(wanted, key, i, n)
            if i >= n:
                return
            j = i
            while j < n and wanted[j] == key:
                self._offer(j, number, offset, length, created, not_before)
                j += 1

    def _probe(self, number: int, index: IndexReader, not_before: float) -> None:
        low = 0
        for i in range(len(self._wanted)):
            key = self._wanted[i]
            low = bisect_left(index, key, low, len(index))
            if low == len(index):
                return
            found, offset, length, created = index.record(low)
            if found == key:
                self._offer(i, number, offset, length, created, not_before)

    def _offer(self, i: int, number: int, offset: int, length: int, created: int, not_before: float) -> None:
        if created < not_before:
            return
        if self._segment[i] < 0 or created >= self._created[i]:
            self._segment[i], self._offset[i], self._length[i], self._created[i] = (
                number,
                offset,
                length,
                created,
            )

    # --- what was found ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(1 for s in self._segment if s >= 0)

    def positions(self) -> Iterator[int]:
        """The positions that hit (in key order, not sorted: no list of them is built)."""
        for i, segment in enumerate(self._segment):
            if segment >= 0:
                yield self._position(i)

    def _position(self, i: int) -> int:
        return int(_POSITION.unpack_from(self._wanted.record(i), KEY_BYTES)[0])

    def entries(self) -> Iterator[CacheHit]:
        """Every hit's entry, segment by segment, each segment read front to back. An entry that cannot
        be read (its segment deleted meanwhile, bytes that are not JSON) is logged and left out: use
        the positions of what was yielded, not :meth:`positions`, to decide what not to send."""
        for number, segment in self._segments.items():
            if number not in self._segment:
                continue
            try:
                with segment.path.open("rb") as file:
                    reader = _BlockReader(file)
                    last: tuple[int, Any] | None = None
                    for i in (i for i, s in enumerate(self._segment) if s == number):
                        offset = self._offset[i]
                        if last is None or last[0] != offset:  # repeated keys share one entry
                            try:
                                data = reader.read(offset, self._length[i])
                                last = (offset, parse_payload(data, offset))
                            except TornSegment as exc:
                                log.warning(
                                    "Result cache %s: %s; that item is sent again.", segment.path, exc
                                )
                                continue
                        yield CacheHit(self._position(i), last[1], self._created[i])
            except OSError as exc:
                log.warning(
                    "Result cache: could not read the entries of %s (%s); they are sent again.",
                    segment.path,
                    exc,
                )


class _BlockReader:
    """Reads entries at increasing offsets in large blocks: one filesystem call per MiB, not per entry
    (each call through ObjectStoragePath costs microseconds; on S3 each is a ranged GET)."""

    _SMALLEST, _LARGEST = 64 << 10, 1 << 20

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._start = 0
        self._data = b""
        self._block = self._SMALLEST

    def read(self, offset: int, length: int) -> bytes:
        end = offset + length
        if not (self._start <= offset and end <= self._start + len(self._data)):
            # Dense hits (the next entry just past this block) read ever larger blocks; a jump far
            # ahead (sparse hits) starts small again, so a few hits never read a whole segment.
            dense = offset <= self._start + len(self._data) + self._block
            self._block = min(self._block * 2, self._LARGEST) if dense else self._SMALLEST
            self._file.seek(offset)
            self._data = self._file.read(max(self._block, length))
            self._start = offset
        return self._data[offset - self._start : end - self._start]


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


def _merged_entries(segments: list[_Segment], files: list[IO[bytes]]) -> Iterator[tuple[bytes, bytes, int]]:
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
