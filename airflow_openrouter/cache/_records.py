"""Fixed-width binary records: sorted without a Python object per record, and searched in place.

The cache holds keys as 16-byte digests. Lookups of 100,000 keys keep them as one ``bytearray`` of
fixed-width records (the key, then a payload such as the item's position), sorted by key: about 20
bytes a key, where a list of tuples would take ~100 and a dict of strings more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

KEY_BYTES = 16


class Records:
    """A sorted ``bytearray`` of records of ``width`` bytes, each starting with a 16-byte key.

    ``key(i)`` is record *i*'s key; ``len()`` the number of records. Indexing (``records[i]``) gives the
    key too, so that :func:`bisect.bisect_left` searches the keys without copying them out.
    """

    __slots__ = ("_buf", "width")

    def __init__(self, buf: bytearray, width: int) -> None:
        if len(buf) % width:
            raise ValueError(f"a buffer of {len(buf)} bytes does not hold records of {width} bytes")
        self._buf = buf
        self.width = width

    def __len__(self) -> int:
        return len(self._buf) // self.width

    def __getitem__(self, i: int) -> bytes:
        start = i * self.width
        return bytes(self._buf[start : start + KEY_BYTES])

    def key(self, i: int) -> bytes:
        return self[i]

    def record(self, i: int) -> bytes:
        start = i * self.width
        return bytes(self._buf[start : start + self.width])

    def __iter__(self) -> Iterator[bytes]:
        width = self.width
        buf = self._buf
        for start in range(0, len(buf), width):
            yield bytes(buf[start : start + width])


def sort_records(records: Iterable[bytes], width: int) -> Records:
    """*records* (each ``width`` bytes, starting with a random key) sorted by their bytes.

    Records go into 256 buckets by their first byte, and each bucket is sorted on its own: the Python
    objects a sort needs exist for one bucket at a time (random keys spread evenly), so the peak memory
    is about twice the records' bytes, not a list of every record.
    """
    buckets = [bytearray() for _ in range(256)]
    for record in records:
        if len(record) != width:
            raise ValueError(f"record of {len(record)} bytes, expected {width}")
        buckets[record[0]] += record
    out = bytearray()
    for bucket in buckets:
        if not bucket:
            continue
        parts = [bytes(bucket[i : i + width]) for i in range(0, len(bucket), width)]
        parts.sort()
        out += b"".join(parts)
        bucket.clear()
    return Records(out, width)
