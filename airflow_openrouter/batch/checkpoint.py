"""The concurrent engine's checkpoint: rows written as they arrive, so a retry skips what is done.

Rows go to small part files beside the results file,
``{results}.parts/{run}-{fingerprint}/{try:03d}-{seq:05d}.jsonl``, each closed after a few hundred rows or
seconds (object stores only publish a file when it is closed). A retry of the task run reads them
back: items that were answered (``succeeded`` or ``invalid_output``: both were billed) are skipped,
and their cost counts against ``max_cost_usd``; failed items are tried again. Parts of other inputs
live under another fingerprint: their rows are ignored, but what they were billed still counts against
``max_cost_usd`` (:attr:`Checkpoint.spent_on_other_inputs_usd`: the budget is the task run's). Rows
served from the result cache are written here too, as answered rows that cost nothing.

The final results file is assembled from the parts newest first, so the latest row of an item wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from airflow_openrouter.batch.ids import IndexBits
from airflow_openrouter.batch.vocabulary import ANSWERED_ROW_STATUSES

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

ROWS_PER_PART = 200
SECONDS_PER_PART = 10.0


class Checkpoint:
    """The part files of one task run and one set of inputs.

    :param results_file: the run's final JSONL file; parts live in ``{results_file}.parts/``.
    :param fingerprint: the inputs' fingerprint (see :class:`~airflow_openrouter.batch.spool.RequestSpool`).
    :param run_key: the task run's key (:attr:`~airflow_openrouter.batch.state.TaskRunIdentity.key`): two
        runs writing to the same ``.jsonl`` file with the same inputs must not skip each other's items.
    """

    def __init__(self, results_file: ObjectStoragePath, fingerprint: str, run_key: str) -> None:
        parts = results_file.parent / f"{results_file.name}.parts"
        self._parts_root = parts
        self._run_prefix = f"{run_key[:16]}-"
        self.directory = parts / f"{self._run_prefix}{fingerprint[:32]}"
        #: The indexes of the items an earlier try got an answer for (a bit each: 1,000,000 items fit in
        #: 125 KB).
        self.done = IndexBits()
        self.spent_usd = 0.0
        for row in self._rows(newest_first=False):
            if row["status"] in ANSWERED_ROW_STATUSES:
                self.done.add(row["index"])
                self.spent_usd += (row.get("usage") or {}).get("cost") or 0.0

    @property
    def spent_on_other_inputs_usd(self) -> float:
        """What this task run's tries with other inputs (another fingerprint) were billed."""
        if not self._parts_root.exists():
            return 0.0
        spent = 0.0
        for directory in self._parts_root.iterdir():
            if directory.name.startswith(self._run_prefix) and directory.name != self.directory.name:
                for row in self._rows(newest_first=False, directory=directory):
                    spent += (row.get("usage") or {}).get("cost") or 0.0
        return spent

    def _parts(self, directory: ObjectStoragePath | None = None) -> list[ObjectStoragePath]:
        directory = directory or self.directory
        if not directory.exists():
            return []
        return sorted((p for p in directory.iterdir() if p.name.endswith(".jsonl")), key=lambda p: p.name)

    def _rows(
        self, *, newest_first: bool, directory: ObjectStoragePath | None = None
    ) -> Iterator[dict[str, Any]]:
        parts = self._parts(directory)
        for part in reversed(parts) if newest_first else parts:
            with part.open("r", encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        yield json.loads(line)

    def rows_newest_first(self) -> Iterator[dict[str, Any]]:
        """Every row written by any try, the latest try's first."""
        return self._rows(newest_first=True)

    def latest_rows(self, total: int) -> Iterator[dict[str, Any]]:
        """The newest row of every item that has one (one bit of memory an item)."""
        seen = bytearray((total + 7) // 8)
        for row in self.rows_newest_first():
            index = row["index"]
            if not seen[index >> 3] & (1 << (index & 7)):
                seen[index >> 3] |= 1 << (index & 7)
                yield row

    def writer(self, try_number: int) -> PartWriter:
        return PartWriter(self.directory, try_number)


class PartWriter:
    """Writes rows to rotating part files: the last few rows are the most a crash can lose."""

    def __init__(self, directory: ObjectStoragePath, try_number: int) -> None:
        self._directory = directory
        self._prefix = f"{try_number:03d}"
        self._seq = 0
        self._file: TextIO | None = None
        self._rows_in_part = 0
        self._opened_at = 0.0

    def write(self, row: Mapping[str, Any]) -> None:
        if self._file is None:
            self._open()
        assert self._file is not None
        self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._file.flush()
        self._rows_in_part += 1
        if self._rows_in_part >= ROWS_PER_PART or time.monotonic() - self._opened_at >= SECONDS_PER_PART:
            self.close()

    def _open(self) -> None:
        self._seq += 1
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._directory / f"{self._prefix}-{self._seq:05d}.jsonl"
        while path.exists():  # another writer of this try came first (e.g. a recovery pass after the cache)
            self._seq += 1
            path = self._directory / f"{self._prefix}-{self._seq:05d}.jsonl"
        self._file = path.open("w", encoding="utf-8")
        self._rows_in_part, self._opened_at = 0, time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
