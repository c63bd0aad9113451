"""The per-item bookkeeping a bulk run keeps in memory for all its items, in compact form.

A run of 1,000,000 items keeps, for the whole fetch, which item each result belongs to (``custom_id ->
index``), which items have their row, and which ids were integers. As dicts and sets of strings that
is ~200 bytes an item; here it is about 10:

* :class:`IndexBits` -- a set of item indexes as a bit array (one bit an item);
* :class:`ItemIds` -- ``custom_id -> index`` as one sorted ``array`` of 64-bit words, each a 40-bit
  hash of the custom id and the item's 24-bit index, plus a 16-bit check hash per item. The custom
  ids themselves are not kept: the few callers that need them again (the rows of items without a
  result) read them again from the items (:meth:`ItemIds.items`). Two ids whose 56 hash bits agree are
  compared for real (their items read again) when the table is sealed: equal ids are a duplicate,
  different ones are kept as strings, so that every lookup of an item's custom id is exact. Without
  ``id_field`` the custom id is the index itself and nothing per item is stored at all.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from airflow_openrouter.exceptions import BatchInputError

__all__ = ["MAX_ITEMS", "IndexBits", "ItemIds"]

_INDEX_BITS = 24
#: Items one task can key by an ``id_field`` (the index takes 24 bits of a word): split larger inputs.
MAX_ITEMS = 1 << _INDEX_BITS
_INDEX_MASK = MAX_ITEMS - 1
_RUN = 8192  # keys sorted a run at a time while they arrive, then merged: no list of all of them


def _hashes(custom_id: str) -> tuple[int, int]:
    """(40-bit key hash, 16-bit check hash) of a custom id. Python's string hash: the table lives in
    one process only, so its per-process seed does not matter."""
    h = hash(custom_id) & 0xFFFF_FFFF_FFFF_FFFF
    return h >> 24, h & 0xFFFF


class IndexBits:
    """A set of item indexes as a bit array: one bit per item, where a ``set[int]`` takes ~60 bytes."""

    def __init__(self, size: int = 0) -> None:
        self._bits = bytearray((size + 7) // 8)
        self._count = 0

    def add(self, index: int) -> None:
        byte, bit = index >> 3, 1 << (index & 7)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        if not self._bits[byte] & bit:
            self._bits[byte] |= bit
            self._count += 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))

    def __len__(self) -> int:
        return self._count


class ItemIds:
    """``custom_id -> index`` of every item, and the id value each row reports as ``id`` (see the module).

    Made by :func:`~.items.index_custom_ids` (``add`` per item, then ``seal``), or from a small mapping.

    :param indexes: ``custom_id -> index`` for the indexes ``0 .. n-1`` (tests, small inputs).
    :param id_field: the item field the custom ids come from (``None``: the index).
    :param int_ids: indexes whose ``id_field`` value was an integer.
    """

    def __init__(
        self,
        indexes: Mapping[str, int] | None = None,
        id_field: str | None = None,
        int_ids: Iterable[int] = (),
    ) -> None:
        self.id_field = id_field
        self._count = 0
        self._explicit = False  # custom ids other than the indexes: hashed (else each is str(index))
        self._keys = array("Q")  # (key hash << 24 | index), sorted once sealed
        self._checks = array("H")  # check hash, by index
        self._exact: dict[str, int] = {}  # ids whose hashes collide with another item's
        self._reread: Callable[[], Iterator[str]] = lambda: iter(())
        self._int_ids = IndexBits()
        ordered = sorted((indexes or {}).items(), key=lambda pair: pair[1])
        for position, (custom_id, index) in enumerate(ordered):
            if index != position:
                raise ValueError(f"ItemIds: the indexes must be 0 .. n-1, got {index} at {position}")
            self.add(custom_id)
        self.seal(lambda: (custom_id for custom_id, _ in ordered))
        for index in int_ids:
            self._int_ids.add(index)

    # --- building --------------------------------------------------------------------------------

    def add(self, custom_id: str, *, int_id: bool = False) -> None:
        """Add the next item (its index is ``len(self)``)."""
        index = self._count
        if int_id:
            self._int_ids.add(index)
        self._count += 1
        if not self._explicit:
            if custom_id == str(index):
                return
            self._explicit = True
            for earlier in range(index):  # they were their indexes: key them now
                self._key(str(earlier), earlier)
        if index >= MAX_ITEMS:
            raise BatchInputError(
                f"More than {MAX_ITEMS:,} items in one task, keyed by id_field={self.id_field!r}: split them "
                "into shards (airflow_openrouter.batch.shards.split_jsonl) and map the task over them."
            )
        self._key(custom_id, index)

    def _key(self, custom_id: str, index: int) -> None:
        key, check = _hashes(custom_id)
        self._keys.append(key << _INDEX_BITS | index)
        self._checks.append(check)
        if len(self._keys) % _RUN == 0:
            self._keys[-_RUN:] = array("Q", sorted(self._keys[-_RUN:]))

    def seal(self, reread: Callable[[], Iterator[str]]) -> None:
        """Finish after the last item: sort the keys, and find duplicate custom ids.

        :param reread: the custom ids again, in index order (they are read again only to tell a real
            duplicate from a hash collision, and for :meth:`items`).
        :raises BatchInputError: two items have the same custom id.
        """
        self._reread = reread
        if not self._explicit:
            return
        keys = self._keys
        tail = len(keys) - len(keys) % _RUN
        keys[tail:] = array("Q", sorted(keys[tail:]))  # the last run, not full
        if len(keys) > _RUN:
            runs = [range(start, min(start + _RUN, len(keys))) for start in range(0, len(keys), _RUN)]
            self._keys = array("Q", heapq.merge(*((keys[i] for i in run) for run in runs)))
            del keys
        self._resolve(self._suspects())

    def _suspects(self) -> set[int]:
        """Indexes of items whose key and check hashes both equal another item's."""
        suspects: set[int] = set()
        keys, checks = self._keys, self._checks
        start = 0
        for end in range(1, len(keys) + 1):
            if end < len(keys) and keys[end] >> _INDEX_BITS == keys[start] >> _INDEX_BITS:
                continue
            if end - start > 1:  # a run of equal key hashes (rare): compare their checks
                seen: dict[int, int] = {}
                for position in range(start, end):
                    index = keys[position] & _INDEX_MASK
                    if (other := seen.setdefault(checks[index], index)) != index:
                        suspects.update((other, index))
            start = end
        return suspects

    def _resolve(self, suspects: set[int]) -> None:
        if not suspects:
            return
        first_of: dict[str, int] = {}
        for index, custom_id in enumerate(self._reread()):
            if index not in suspects:
                continue
            if custom_id in first_of:
                raise BatchInputError(
                    f"Items {first_of[custom_id]} and {index} have the same {self.id_field!r} value "
                    f"{custom_id!r}; custom ids must be unique."
                )
            first_of[custom_id] = index
        self._exact = first_of

    # --- reading ---------------------------------------------------------------------------------

    def index_of(self, custom_id: str) -> int | None:
        """The index of the item with this custom id, or ``None``."""
        if not self._explicit:
            # str(index) round-trips only for canonical decimals: "007" or "+7" is no item's custom id.
            if custom_id.isdigit() and str(int(custom_id)) == custom_id and int(custom_id) < self._count:
                return int(custom_id)
            return None
        if custom_id in self._exact:
            return self._exact[custom_id]
        key, check = _hashes(custom_id)
        keys = self._keys
        position = bisect_left(keys, key << _INDEX_BITS)
        while position < len(keys) and keys[position] >> _INDEX_BITS == key:
            index = keys[position] & _INDEX_MASK
            if self._checks[index] == check:
                return index
            position += 1
        return None

    def original(self, custom_id: str, index: int) -> Any:
        """The item's id as the user gave it: the id_field value (an int stays an int), or the index."""
        if self.id_field is None:
            return index
        return int(custom_id) if index in self._int_ids else custom_id

    @property
    def all_int(self) -> bool:
        """Whether every row's ``id`` is an integer (the index, or an integer id_field value)."""
        return self.id_field is None or len(self._int_ids) == self._count

    def items(self) -> Iterator[tuple[str, int]]:
        """``(custom_id, index)`` of every item, in index order (read again from the items)."""
        if not self._explicit:
            return ((str(index), index) for index in range(self._count))
        return ((custom_id, index) for index, custom_id in enumerate(self._reread()))

    @property
    def indexes(self) -> Mapping[str, int]:
        """A read-only ``custom_id -> index`` mapping over the same tables."""
        return _IndexView(self)

    def __len__(self) -> int:
        return self._count


class _IndexView(Mapping[str, int]):
    def __init__(self, ids: ItemIds) -> None:
        self._ids = ids

    def __getitem__(self, custom_id: str) -> int:
        index = self._ids.index_of(custom_id)
        if index is None:
            raise KeyError(custom_id)
        return index

    def __iter__(self) -> Iterator[str]:
        return (custom_id for custom_id, _ in self._ids.items())

    def __len__(self) -> int:
        return len(self._ids)
