"""One cache segment: an immutable file of entries sorted by key, with a fixed-width index at its end.

Layout (all integers big-endian)::

    header   b"ORCACHE\\x01"  u32 header length  header JSON (format, version, namespace, created,
                                                  supersedes)
    data     the entries' JSON, one after another, in key order (each followed by a newline)
    index    one 32-byte record per entry, in key order:
             key (16 bytes)  data offset (u64)  data length (u32)  created (u32, unix seconds)
    trailer  index offset (u64)  entry count (u64)  SHA-256 of the index, first 16 bytes
             b"ORCEND\\x00\\x01"                                               (40 bytes)

A segment is written once, under a unique name, and never changed. A reader trusts a segment only when
its trailer is whole and the sizes add up (``index offset + 32 x entries + 40`` is the file size): a
file cut short by a killed writer, or a half-uploaded object, is skipped, never misread. Data and index
share the key order, so the entries of a sorted list of keys are read front to back, one forward seek at
a time: the access pattern object stores serve well (ranged reads, no per-key objects).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

HEADER_MAGIC = b"ORCACHE\x01"
TRAILER_MAGIC = b"ORCEND\x00\x01"
FORMAT_VERSION = 1
INDEX_RECORD = struct.Struct(">16sQII")  # key, offset, length, created
TRAILER = struct.Struct(">QQ16s8s")  # index offset, entries, index digest, magic
_HEADER_PREFIX = struct.Struct(">8sI")
_INDEX_BLOCK = 2048  # index records read at once when streaming (64 KiB)
_MAX_HEADER_BYTES = 1 << 20


class TornSegment(ValueError):
    """The file is not a whole segment (cut short, or not a segment at all)."""


@dataclass(frozen=True)
class SegmentInfo:
    """What a segment's header and trailer say."""

    name: str
    size: int
    entries: int
    index_offset: int
    created: float
    supersedes: tuple[str, ...]
    namespace: str | None

    def index_record_at(self, i: int) -> int:
        return self.index_offset + i * INDEX_RECORD.size


def read_info(name: str, file: IO[bytes]) -> SegmentInfo:
    """The header and trailer of an open segment; raises :class:`TornSegment` unless they are whole."""
    size = file.seek(0, 2)
    if size < _HEADER_PREFIX.size + TRAILER.size:
        raise TornSegment(f"{name}: {size} bytes, too short to be a segment")
    file.seek(0)
    magic, header_length = _HEADER_PREFIX.unpack(file.read(_HEADER_PREFIX.size))
    if magic != HEADER_MAGIC or header_length > _MAX_HEADER_BYTES:
        raise TornSegment(f"{name}: not a cache segment of this version")
    try:
        header = json.loads(file.read(header_length))
    except ValueError:
        raise TornSegment(f"{name}: the header is not whole") from None
    file.seek(size - TRAILER.size)
    index_offset, entries, _digest, end = TRAILER.unpack(file.read(TRAILER.size))
    if end != TRAILER_MAGIC or index_offset + entries * INDEX_RECORD.size + TRAILER.size != size:
        raise TornSegment(f"{name}: the trailer is missing or does not match the file's size (cut short?)")
    return SegmentInfo(
        name=name,
        size=size,
        entries=entries,
        index_offset=index_offset,
        created=float(header.get("created") or 0),
        supersedes=tuple(header.get("supersedes") or ()),
        namespace=header.get("namespace"),
    )


def iter_index(
    info: SegmentInfo, file: IO[bytes], *, verify: bool = False
) -> Iterator[tuple[bytes, int, int, int]]:
    """Every index record ``(key, offset, length, created)``, in key order, read in blocks. With
    *verify*, the index digest is checked once the last record was read (:class:`TornSegment` when it
    does not match): compaction verifies what it copies; a lookup trusts the sizes in the trailer."""
    file.seek(info.index_offset)
    digest = hashlib.sha256()
    left = info.entries
    while left:
        count = min(left, _INDEX_BLOCK)
        block = file.read(count * INDEX_RECORD.size)
        if len(block) != count * INDEX_RECORD.size:
            raise TornSegment(f"{info.name}: the index is cut short")
        if verify:
            digest.update(block)
        yield from INDEX_RECORD.iter_unpack(block)
        left -= count
    if not verify:
        return
    file.seek(info.size - TRAILER.size)
    if TRAILER.unpack(file.read(TRAILER.size))[2] != digest.digest()[:16]:
        raise TornSegment(f"{info.name}: the index does not match its checksum")


class IndexReader:
    """Random access to a segment's index records, 4 KiB pages at a time (for binary searches)."""

    _PAGE = 128  # records per page

    def __init__(self, info: SegmentInfo, file: IO[bytes]) -> None:
        self.info = info
        self._file = file
        self._pages: dict[int, bytes] = {}

    def __len__(self) -> int:
        return self.info.entries

    def record(self, i: int) -> tuple[bytes, int, int, int]:
        page, slot = divmod(i, self._PAGE)
        data = self._pages.get(page)
        if data is None:
            if len(self._pages) > 256:
                self._pages.clear()
            self._file.seek(self.info.index_record_at(page * self._PAGE))
            count = min(self._PAGE, self.info.entries - page * self._PAGE)
            data = self._pages[page] = self._file.read(count * INDEX_RECORD.size)
        start = slot * INDEX_RECORD.size
        return INDEX_RECORD.unpack_from(data, start)

    def __getitem__(self, i: int) -> bytes:
        return self.record(i)[0]


def write_segment(
    file: IO[bytes],
    *,
    namespace: str,
    created: float,
    entries: Iterable[tuple[bytes, bytes, int]],
    supersedes: Iterable[str] = (),
) -> int:
    """Write a whole segment to *file*: ``entries`` are ``(key, JSON bytes, created)`` in strictly
    increasing key order. Returns the number of entries written."""
    header = json.dumps(
        {
            "format": "airflow-openrouter result cache",
            "version": FORMAT_VERSION,
            "namespace": namespace,
            "created": round(created, 3),
            "supersedes": sorted(supersedes),
        },
        separators=(",", ":"),
    ).encode()
    file.write(_HEADER_PREFIX.pack(HEADER_MAGIC, len(header)) + header)
    offset = _HEADER_PREFIX.size + len(header)
    index = bytearray()
    previous = b""
    for key, payload, entry_created in entries:
        if key <= previous:
            raise ValueError("segment entries must come in strictly increasing key order")
        previous = key
        file.write(payload + b"\n")
        index += INDEX_RECORD.pack(key, offset, len(payload), int(entry_created))
        offset += len(payload) + 1
    file.write(index)
    digest = hashlib.sha256(index).digest()[:16]
    count = len(index) // INDEX_RECORD.size
    file.write(TRAILER.pack(offset, count, digest, TRAILER_MAGIC))
    return count


def parse_payload(data: bytes, offset: int) -> Any:
    """The entry read from *offset*, as JSON; raises :class:`TornSegment` for bytes that are not."""
    try:
        return json.loads(data)
    except ValueError:
        raise TornSegment(f"the entry at byte {offset} is not valid JSON") from None
