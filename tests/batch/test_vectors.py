"""The embedding rows' writers (Parquet and JSONL) and the embeddings endpoint's request grouping and usage
shares, without a server: what a reader of the file gets back, whatever order and outcome the rows had."""

from __future__ import annotations

import json
import math
from array import array
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_openrouter.batch import vectors
from airflow_openrouter.batch.embeddings import EmbeddingsEndpoint, _apportion, estimated_tokens, vector_row
from airflow_openrouter.batch.items import index_custom_ids
from airflow_openrouter.batch.results import result_row
from airflow_openrouter.batch.vectors import JsonlVectorWriter, ParquetVectorWriter, vector_writer
from airflow_openrouter.exceptions import OpenRouterError


def ids_of(items: list[Any], id_field: str | None = "id"):
    return index_custom_ids(items, id_field)


def vec(seed: int, size: int = 8) -> array:
    return array("f", [(seed + i) / 100 for i in range(size)])


def is_nan(vector: list[float] | None) -> bool:
    return vector is not None and len(vector) == 8 and all(math.isnan(v) for v in vector)


def failed(custom_id: str, index: int) -> dict[str, Any]:
    return result_row(custom_id, index, "failed", error="boom", cause="503 server_error", transient=True)


def write(writer_class, path: Path, items, rows, id_field="id"):
    with writer_class(ObjectStoragePath(f"file://{path}"), ids_of(items, id_field)) as writer:
        for row in rows:
            writer.write(row)
    return writer


ITEMS = [{"id": f"d{i}"} for i in range(5)]


def test_parquet_keeps_every_row_with_its_vector_and_failed_rows_have_none(tmp_path):
    rows = [
        failed("d3", 3),  # before the first vector: its size is not known yet
        vector_row("d1", 1, vec(1), "m", 3, 0.5),
        vector_row("d0", 0, vec(0), "m", 2, 0.25),
        failed("d4", 4),
        vector_row("d2", 2, vec(2), "m", 1, 0.125),
    ]

    writer = write(ParquetVectorWriter, tmp_path / "v.parquet", ITEMS, rows)

    table = pq.read_table(tmp_path / "v.parquet")
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[8]"
    by_id = {r["custom_id"]: r for r in table.to_pylist()}
    for i in (0, 1, 2):
        assert array("f", by_id[f"d{i}"]["vector"]) == vec(i) and by_id[f"d{i}"]["dimensions"] == 8
    # No vector: NaNs, not null (readers before pyarrow 26 cannot read a null fixed-size list).
    assert (
        is_nan(by_id["d3"]["vector"]) and is_nan(by_id["d4"]["vector"]) and by_id["d3"]["dimensions"] is None
    )
    assert by_id["d3"]["status"] == "failed"
    assert by_id["d3"]["transient"] is True and by_id["d3"]["cause"] == "503 server_error"
    assert by_id["d1"]["usage"] == {"prompt_tokens": 3, "cost": 0.5, "cost_saved": None}
    assert by_id["d1"]["cached"] is False
    assert writer.manifest_fields() == {"dimensions": 8} and writer.tally.counts["succeeded"] == 3


def test_parquet_writes_row_group_by_row_group(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "ROW_GROUP_BYTES", 8 * 4 * 10)  # ten 8-dimensional vectors a group
    items = [{"id": i} for i in range(95)]
    rows = [vector_row(str(i), i, vec(i), "m", 1, 0.0) if i % 7 else failed(str(i), i) for i in range(95)]

    write(ParquetVectorWriter, tmp_path / "v.parquet", items, rows)

    file = pq.ParquetFile(tmp_path / "v.parquet")
    assert file.metadata.num_row_groups == 10 and file.metadata.num_rows == 95
    table = file.read()
    assert str(table.schema.field("id").type) == "int64"  # integer ids stay integers
    for row in table.to_pylist():
        if row["id"] % 7 == 0:
            assert is_nan(row["vector"]) and row["status"] == "failed"
        else:
            assert row["vector"] == list(vec(row["id"]))


def test_mixed_integer_and_string_ids_make_a_string_id_column(tmp_path):
    items = [{"id": 1}, {"id": "b"}]
    rows = [vector_row("1", 0, vec(0), "m", 1, 0.0), vector_row("b", 1, vec(1), "m", 1, 0.0)]

    write(ParquetVectorWriter, tmp_path / "v.parquet", items, rows)

    assert sorted(pq.read_table(tmp_path / "v.parquet").column("id").to_pylist()) == ["1", "b"]


def test_a_file_without_any_vector_is_still_readable(tmp_path):
    write(ParquetVectorWriter, tmp_path / "none.parquet", ITEMS[:2], [failed("d0", 0), failed("d1", 1)])
    write(ParquetVectorWriter, tmp_path / "empty.parquet", [], [])

    none = pq.read_table(tmp_path / "none.parquet")
    assert none.column("vector").to_pylist() == [None, None] and none.num_rows == 2
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_a_vector_of_another_size_is_refused_naming_the_item(tmp_path):
    rows = [vector_row("d0", 0, vec(0), "m", 1, 0.0), vector_row("d1", 1, vec(1, size=4), "m", 1, 0.0)]

    with pytest.raises(OpenRouterError, match=r"Item 1 \(custom_id 'd1'\) got a 4-dimensional vector"):
        write(ParquetVectorWriter, tmp_path / "v.parquet", ITEMS, rows)
    assert pq.read_table(tmp_path / "v.parquet").num_rows == 1  # what was written stays readable


def test_jsonl_rows_have_the_parquet_columns_and_exact_float32_values(tmp_path):
    write(
        JsonlVectorWriter,
        tmp_path / "v.jsonl",
        ITEMS[:2],
        [vector_row("d0", 0, vec(0), "m", 1, 0.0), failed("d1", 1)],
    )

    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [list(r) for r in rows] == [list(vectors.COLUMNS)] * 2
    assert array("f", rows[0]["vector"]) == vec(0) and rows[1]["vector"] is None


def test_the_writer_follows_the_results_file_extension(tmp_path):
    ids = ids_of(ITEMS)
    assert isinstance(
        vector_writer(ObjectStoragePath(f"file://{tmp_path}/a.parquet"), ids), ParquetVectorWriter
    )
    assert isinstance(vector_writer(ObjectStoragePath(f"file://{tmp_path}/a.jsonl"), ids), JsonlVectorWriter)


# --- grouping and usage shares --------------------------------------------------------------------


def lines(*texts: str) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"c{i}", "body": {"input": t, "encoding_format": "base64"}} for i, t in enumerate(texts)
    ]


JOB: Any = SimpleNamespace(model="m", provider=None)


def test_requests_hold_at_most_max_inputs_in_item_order():
    requests = list(
        EmbeddingsEndpoint(max_inputs_per_request=2).concurrent_requests(JOB, lines("a", "b", "c"))
    )

    assert [r.custom_ids for r in requests] == [("c0", "c1"), ("c2",)]
    assert requests[0].body == {"input": ["a", "b"], "encoding_format": "base64", "model": "m"}


def test_requests_stay_within_the_token_budget_and_an_oversized_input_goes_alone():
    texts = ["x" * 8, "x" * 8, "x" * 100, "x" * 4]  # 2, 2, 25 and 1 estimated tokens
    endpoint = EmbeddingsEndpoint(max_tokens_per_request=5)

    assert [r.custom_ids for r in endpoint.concurrent_requests(JOB, lines(*texts))] == [
        ("c0", "c1"),
        ("c2",),
        ("c3",),
    ]


def test_estimated_tokens_count_utf8_bytes_so_other_scripts_are_not_underestimated():
    assert estimated_tokens("abcd") == 1 and estimated_tokens("abcde") == 2
    assert estimated_tokens("\u6f22\u5b57") == 2  # two CJK characters: six bytes


@pytest.mark.parametrize("total", [0, 1, 7, 1000])
def test_apportioned_tokens_add_up_to_the_billed_total(total):
    shares = _apportion(total, [3, 1, 1, 5])

    assert sum(shares) == total and all(s >= 0 for s in shares)
