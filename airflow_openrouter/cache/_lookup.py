"""A lookup in the result cache: the wanted keys joined with each live segment's index, then the
entries of the hits read segment by segment, front to back (see :mod:`.store` for the rules).

The wanted keys are fixed-width records (key, then the caller's position), sorted once; per wanted
record the best entry so far is kept in four flat arrays, so a lookup of n keys holds about 40 bytes
each whatever the size of the cache.
"""

from __future__ import annotations

import logging
import math
import struct
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from airflow_openrouter.cache._records import KEY_BYTES, Records
from airflow_openrouter.cache._segment import IndexReader, SegmentInfo, TornSegment, iter_index, parse_payload

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = ["POSITION", "WANTED_WIDTH", "CacheHit", "CacheHits", "Segment"]

log = logging.getLogger("airflow_openrouter.cache.store")

#: A wanted record: the 16-byte key, then the caller's position (< 2**32).
POSITION = struct.Struct(">I")
WANTED_WIDTH = KEY_BYTES + POSITION.size


class CacheHit(NamedTuple):
    """One cached entry found for a looked-up key: the caller's position, the entry, its age."""

    position: int
    entry: Any
    created_at: int  # unix seconds


@dataclass(frozen=True)
class Segment:
    """A whole segment file and what its trailer says."""

    path: ObjectStoragePath
    info: SegmentInfo


class CacheHits:
    """What a lookup found: how many positions hit, which ones, and (lazily) their entries."""

    def __init__(self, wanted: Records) -> None:
        self._wanted = wanted
        n = len(wanted)
        # Per wanted record (in key order): the best entry so far (segment -1: none).
        self._segment = array("i", [-1]) * n
        self._offset = array("q", [0]) * n
        self._length = array("I", [0]) * n
        self._created = array("I", [0]) * n
        self._segments: dict[int, Segment] = {}

    # --- the join (ResultCache.lookup) -------------------------------------------------------------

    def join(self, number: int, segment: Segment, file: IO[bytes], not_before: float) -> None:
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
        return int(POSITION.unpack_from(self._wanted.record(i), KEY_BYTES)[0])

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
