"""Where embedding rows go: a Parquet file (vectors as fixed-size lists of float32) or JSONL.

One row per item, with the columns of :data:`COLUMNS` (see :mod:`.embeddings` for their meaning); a
row that has no vector (a failed, expired, missing item) has ``dimensions`` null, and ``vector`` null in
JSONL, NaNs in Parquet.

**Parquet** (when the results file ends in ``.parquet``; needs ``pyarrow``, the ``parquet`` extra):
rows are buffered into row groups of about 16 MiB of vectors (2,730 rows of 1,536 dimensions) and each
group is written as soon as it is full, so memory stays flat however many rows there are. ``vector`` is
``fixed_size_list<float32>[dimensions]``, never null: Parquet readers before pyarrow 26 (pyarrow 25 is
the newest for Python 3.10) cannot read a null fixed-size list (apache/arrow#35692), and a vector of
NaNs cannot pass for a real one (filter on ``status``). ``id`` is ``int64`` when every item's id is an
integer that fits 64 bits (or the rows are keyed by index), else ``string``; ``usage`` is ``struct<prompt_tokens: int64,
cost: double, cost_saved: double>`` (``cost_saved``: only in the rows served from the result cache,
whose ``cached`` is true and ``cost`` 0); ``attempts`` is ``int32`` and ``history`` a list of
``struct<attempt, status, error, cause, model, generation_id, cost>`` (the earlier attempts of a
recovered row, see :mod:`.recovery`).
A file without a single vector has ``vector`` as a variable-size ``list<float32>``.

**JSONL** (a ``.jsonl`` results file): the same columns, ``vector`` as a JSON list of numbers, each the
float32 value exactly (about five times the bytes of Parquet, and slower to write).

Every vector of a run has the same length: a row with another one raises (it cannot be a column).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_openrouter.batch.embeddings import decode_vector
from airflow_openrouter.batch.results import ResultsWriter
from airflow_openrouter.exceptions import OpenRouterError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.ids import ItemIds
    from airflow_openrouter.batch.progress import Progress

__all__ = [
    "COLUMNS",
    "JsonlVectorWriter",
    "ParquetVectorWriter",
    "parquet_available",
    "vector_writer",
]

COLUMNS = (
    "custom_id",
    "id",
    "index",
    "status",
    "vector",
    "model",
    "dimensions",
    "error",
    "cause",
    "transient",
    "cached",
    "usage",
    "attempts",
    "history",
)
ROW_GROUP_BYTES = 16 * 1024 * 1024  # of vector data per Parquet row group
_FLOAT32_BYTES = 4


def parquet_available() -> bool:
    """Whether ``pyarrow`` can be imported here (looked up, not imported)."""
    return importlib.util.find_spec("pyarrow") is not None


def vector_writer(
    path: ObjectStoragePath,
    ids: ItemIds,
    on_written: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
) -> ResultsWriter:
    """The writer for a results file: Parquet when it ends in ``.parquet``, else JSONL."""
    if path.name.endswith(".parquet"):
        return ParquetVectorWriter(path, ids, on_written, progress)
    return JsonlVectorWriter(path, ids, on_written, progress)


class _VectorColumns:
    """What both formats do to a row: keep :data:`COLUMNS`, decode the vector (base64 float32, see
    :mod:`.embeddings`) to its bytes, and check that every vector has the length of the first one."""

    dimensions: int | None = None

    def _columns(self, row: dict[str, Any]) -> dict[str, Any]:
        columns = {name: row.get(name) for name in COLUMNS}
        columns["attempts"] = columns["attempts"] or 1
        columns["history"] = columns["history"] or []
        if columns["vector"] is not None:
            columns["vector"] = vector = decode_vector(columns["vector"])
            size = len(vector) // _FLOAT32_BYTES
            if self.dimensions is None:
                self.dimensions = size
            elif size != self.dimensions:
                raise OpenRouterError(
                    f"Item {row['index']} (custom_id {row['custom_id']!r}) got a {size}-dimensional "
                    f"vector where the others have {self.dimensions}: one results file holds vectors of one "
                    "size. Did the model or dimensions change between tries? Delete the results to start over."
                )
        return columns

    def manifest_fields(self) -> dict[str, Any]:
        return {"dimensions": self.dimensions}


class JsonlVectorWriter(_VectorColumns, ResultsWriter):
    """Embedding rows as JSONL (see the module docstring)."""

    def _emit(self, row: dict[str, Any]) -> None:
        columns = self._columns(row)
        if columns["vector"] is not None:
            floats = array("f", columns["vector"])
            if sys.byteorder != "little":
                floats.byteswap()
            columns["vector"] = floats.tolist()  # each the float32 value exactly
        super()._emit(columns)


class ParquetVectorWriter(_VectorColumns, ResultsWriter):
    """Embedding rows as Parquet, one row group at a time (see the module docstring)."""

    def __init__(
        self,
        path: ObjectStoragePath,
        ids: ItemIds,
        on_written: Callable[[dict[str, Any]], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(path, ids, on_written, progress)
        self._int_ids = ids.all_int and _ids_fit_int64(ids)
        self._binary: BinaryIO | None = None
        self._writer: Any = None  # pyarrow.parquet.ParquetWriter, once the vector size is known
        self._rows: list[dict[str, Any]] = []
        self._vectors = bytearray()  # the buffered rows' vectors, float32 (NaNs for a row without one)
        self._unvectored = 0  # rows buffered before the size of a vector was known (all without one)

    def __enter__(self) -> ParquetVectorWriter:
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise OpenRouterError(
                f"{self.path} is a Parquet file, but pyarrow is not installed here: pip install "
                "'airflow-openrouter[parquet]', or write JSONL (an output_path ending in .jsonl)."
            ) from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._binary = self.path.open("wb")
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Also after an error: what was written so far becomes a readable file.
        if self._binary is None:
            return
        try:
            self._flush(final=True)
            if self._writer is not None:
                self._writer.close()
        finally:
            self._binary.close()
            self._binary = None

    def _emit(self, row: dict[str, Any]) -> None:
        row = self._columns(row)
        if not self._int_ids:
            row["id"] = str(row["id"])  # mixed int and str ids: one string column
        vector = row.pop("vector")
        if vector is not None:
            self._vectors += vector  # little-endian float32: Arrow's own layout
        elif self.dimensions is not None:
            self._vectors += _nan_vector(self.dimensions)
        else:
            self._unvectored += 1
        self._rows.append(row)
        if self.dimensions is not None and len(self._rows) >= _rows_per_group(self.dimensions):
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        import pyarrow as pa

        if not self._rows and (not final or self._writer is not None):
            return
        if self.dimensions is not None and self._unvectored:
            # Rows buffered before the first vector arrived (each without one): their NaNs go first.
            self._vectors = bytearray(_nan_vector(self.dimensions) * self._unvectored) + self._vectors
            self._unvectored = 0
        schema = self._schema(pa)
        if self._writer is None:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(
                self._binary, schema, use_dictionary=["status", "model", "cause"], compression="zstd"
            )
        columns = {name: [row[name] for row in self._rows] for name in schema.names if name != "vector"}
        arrays = [
            self._vector_array(pa) if name == "vector" else pa.array(columns[name], schema.field(name).type)
            for name in schema.names
        ]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
        self._rows, self._vectors = [], bytearray()

    def _vector_array(self, pa: Any) -> Any:
        if self.dimensions is None:
            return pa.array([None] * len(self._rows), pa.list_(pa.float32()))
        values = pa.Array.from_buffers(
            pa.float32(), len(self._rows) * self.dimensions, [None, pa.py_buffer(self._vectors)]
        )
        return pa.FixedSizeListArray.from_arrays(values, self.dimensions)

    def _schema(self, pa: Any) -> Any:
        vector = pa.list_(pa.float32(), self.dimensions) if self.dimensions else pa.list_(pa.float32())
        return pa.schema(
            [
                ("custom_id", pa.string()),
                ("id", pa.int64() if self._int_ids else pa.string()),
                ("index", pa.int64()),
                ("status", pa.string()),
                ("vector", vector),
                ("model", pa.string()),
                ("dimensions", pa.int32()),
                ("error", pa.string()),
                ("cause", pa.string()),
                ("transient", pa.bool_()),
                ("cached", pa.bool_()),
                ("usage", _usage_type(pa)),
                ("attempts", pa.int32()),
                ("history", pa.list_(_history_entry(pa))),
            ]
        )


def _history_entry(pa: Any) -> Any:
    """One earlier attempt of a row (see :func:`~.recovery.history_entry`)."""
    return pa.struct(
        [
            ("attempt", pa.int32()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("cause", pa.string()),
            ("model", pa.string()),
            ("generation_id", pa.string()),
            ("cost", pa.float64()),
        ]
    )


def _ids_fit_int64(ids: ItemIds) -> bool:
    """Whether every integer id fits Parquet's ``int64`` (a 128-bit id would stop the writer after the
    vectors are paid for): else the ids go to a string column."""
    if ids.id_field is None:
        return True  # the indexes
    return all(-(1 << 63) <= int(custom_id) < 1 << 63 for custom_id, _ in ids.items())


def _usage_type(pa: Any) -> Any:
    # cost_saved: only rows served from the result cache have it (null in the others).
    return pa.struct([("prompt_tokens", pa.int64()), ("cost", pa.float64()), ("cost_saved", pa.float64())])


@functools.cache
def _nan_vector(dimensions: int) -> bytes:
    return (array("f", [math.nan]) * dimensions).tobytes()


def _rows_per_group(dimensions: int) -> int:
    return max(1, ROW_GROUP_BYTES // (_FLOAT32_BYTES * dimensions))
