"""The rendered requests of a bulk run, in a local file, and their split into batches.

Every item is rendered before anything is sent, so that a template error in item 9,000 fails the
task before the first request. The rendered requests go to a local spool file, not to memory: the
spool also yields the fingerprint of exactly what will be sent, and cuts any set of items into
chunks of at most 5,000 requests and 200 MB (OpenRouter's limits for one batch).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_openrouter.batch.state import Ranges

if TYPE_CHECKING:
    from airflow_openrouter.batch.items import ItemRequest

__all__ = ["MAX_BYTES_PER_BATCH", "MAX_REQUESTS_PER_BATCH", "Chunk", "RequestSpool"]

MAX_REQUESTS_PER_BATCH = 5_000
MAX_BYTES_PER_BATCH = 200 * 1024 * 1024
# Room for what surrounds the requests in the POST body: endpoint, model, provider, brackets.
_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Chunk:
    """One future batch: the items it holds, as ranges of indexes."""

    ranges: Ranges

    @property
    def first_index(self) -> int:
        return self.ranges[0][0]

    @property
    def count(self) -> int:
        return sum(b - a for a, b in self.ranges)


class RequestSpool:
    """The rendered requests in a local temporary file, one compact JSON line each.

    :param requests: the requests, in item order (rendered lazily, one at a time).
    :param fingerprint_of: what else decides what is sent (model, endpoint, provider); mixed into
        the fingerprint with every line.
    """

    def __init__(
        self,
        requests: Iterable[ItemRequest],
        *,
        fingerprint_of: Mapping[str, Any],
        max_requests: int = MAX_REQUESTS_PER_BATCH,
        max_bytes: int = MAX_BYTES_PER_BATCH,
    ) -> None:
        # Closed by close() (the spool is a context manager); deleted by the OS if the process dies.
        self._file = tempfile.TemporaryFile()  # noqa: SIM115
        self._max_requests = max_requests
        self._budget = max_bytes - _ENVELOPE_BYTES
        # Byte offset of every line, plus the end: 8 bytes per item.
        self._offsets = array("q", [0])
        try:
            self.fingerprint = self._spool(requests, fingerprint_of)
        except BaseException:
            self._file.close()
            raise
        self.total = len(self._offsets) - 1
        #: The first round's chunks: every item, in contiguous runs.
        self.chunks = self.cut(((0, self.total),) if self.total else ())

    def _spool(self, requests: Iterable[ItemRequest], fingerprint_of: Mapping[str, Any]) -> str:
        """Write every request line and return the fingerprint of it all."""
        digest = hashlib.sha256(json.dumps(fingerprint_of, sort_keys=True).encode())
        for request in requests:
            line = json.dumps(request.line(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            self._file.write(line)
            digest.update(line)
            self._offsets.append(self._offsets[-1] + len(line))
        return digest.hexdigest()

    def cut(self, ranges: Ranges) -> list[Chunk]:
        """*ranges* of items in chunks of at most ``max_requests`` requests and ``max_bytes`` bytes,
        in item order. A pure function of the ranges, so a retry cuts the same chunks."""
        chunks: list[Chunk] = []
        current: list[tuple[int, int]] = []
        count = size = 0
        for start, stop in ranges:
            run_start = start
            for index in range(start, stop):
                line = self._offsets[index + 1] - self._offsets[index]
                if count and (count >= self._max_requests or size + line > self._budget):
                    if index > run_start:
                        current.append((run_start, index))
                    chunks.append(Chunk(tuple(current)))
                    current, count, size, run_start = [], 0, 0, index
                count += 1
                size += line
            if stop > run_start:
                current.append((run_start, stop))
        if current:
            chunks.append(Chunk(tuple(current)))
        return chunks

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every request line, in item order."""
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)

    def read(self, chunk: Chunk) -> Iterator[dict[str, Any]]:
        """The request lines of one chunk."""
        for start, stop in chunk.ranges:
            self._file.seek(self._offsets[start])
            for line in self._file.read(self._offsets[stop] - self._offsets[start]).splitlines():
                yield json.loads(line)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RequestSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
