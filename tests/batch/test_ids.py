"""The per-item bookkeeping of a bulk run: exact, and a few bytes per item however many items there are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_openrouter.batch import ids as ids_module
from airflow_openrouter.batch.ids import IndexBits, ItemIds
from airflow_openrouter.batch.items import index_custom_ids
from airflow_openrouter.batch.results import ResultsWriter, result_row
from airflow_openrouter.exceptions import BatchInputError


def documents(n: int, prefix: str = "doc-") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": "..."} for i in range(n)]


def test_every_custom_id_maps_back_to_its_own_item():
    items = [*documents(30_000), {"id": "Zürich/ü-😀"}, {"id": "doc-30000 "}, {"id": "0"}]

    ids = index_custom_ids(items, "id")

    assert len(ids) == len(items)
    assert all(ids.index_of(item["id"]) == index for index, item in enumerate(items))
    assert [ids.index_of(c) for c in ("doc-30000", "doc--1", "", "DOC-1", "doc-1 ")] == [None] * 5
    assert list(ids.items())[:2] == [("doc-0", 0), ("doc-1", 1)]
    assert list(ids.items())[-1] == ("0", len(items) - 1)


def test_a_duplicate_custom_id_names_both_items_however_far_apart():
    items = documents(20_000)
    items.append({"id": "doc-7"})

    with pytest.raises(BatchInputError, match=r"Items 7 and 20000 have the same 'id' value 'doc-7'"):
        index_custom_ids(items, "id")


def test_ids_whose_hashes_collide_are_told_apart_by_reading_them_again(monkeypatch):
    """With a hash that collides all the time, lookups stay exact and duplicates are still found."""
    monkeypatch.setattr(ids_module, "_hashes", lambda custom_id: (len(custom_id) % 3, 0))
    items = documents(3_000)

    ids = index_custom_ids(items, "id")

    assert all(ids.index_of(f"doc-{i}") == i for i in range(3_000))
    with pytest.raises(BatchInputError, match=r"Items 5 and 3000 have the same 'id' value 'doc-5'"):
        index_custom_ids([*items, {"id": "doc-5"}], "id")


def test_a_three_way_hash_collision_with_one_duplicate_is_found(monkeypatch):
    # a, b, c share a key hash; a and c (not neighbours once sorted by index) are the same id.
    hashes = {"a": (1, 5), "b": (1, 6), "zz": (2, 0)}
    monkeypatch.setattr(ids_module, "_hashes", lambda custom_id: hashes[custom_id])

    with pytest.raises(BatchInputError, match=r"Items 0 and 3 have the same 'id' value 'a'"):
        index_custom_ids([{"id": "a"}, {"id": "b"}, {"id": "zz"}, {"id": "a"}], "id")


def test_without_id_field_the_custom_id_is_the_index_and_nothing_is_stored():
    ids = index_custom_ids([{"text": "x"}] * 5_000, None)

    assert len(ids._keys) == 0 and len(ids._checks) == 0
    assert ids.index_of("4999") == 4999 and ids.original("4999", 4999) == 4999
    # Only the canonical decimal of an existing index names an item.
    assert [ids.index_of(c) for c in ("5000", "007", "+7", "-1", "٣", " 7", "")] == [None] * 7


def test_ids_that_start_as_the_indexes_and_then_differ_are_all_kept():
    items = [{"id": "0"}, {"id": "1"}, {"id": "2"}, {"id": "doc"}, {"id": "4"}]

    ids = index_custom_ids(items, "id")

    assert [ids.index_of(i["id"]) for i in items] == [0, 1, 2, 3, 4]
    assert ids.index_of("5") is None
    with pytest.raises(BatchInputError, match=r"Items 1 and 3 have the same 'id' value '1'"):
        index_custom_ids([{"id": "0"}, {"id": "1"}, {"id": "2"}, {"id": "1"}], "id")


def test_integer_ids_come_back_as_integers_and_string_ids_as_strings():
    ids = index_custom_ids([{"id": 10}, {"id": "10x"}, {"id": 7}], "id")

    assert [ids.original(c, i) for c, i in ids.items()] == [10, "10x", 7]
    assert ids.index_of("10") == 0 and ids.index_of("7") == 2


def test_more_items_than_an_index_holds_asks_for_shards(monkeypatch):
    monkeypatch.setattr(ids_module, "MAX_ITEMS", 4)

    with pytest.raises(BatchInputError, match=r"More than 4 items in one task.*split_jsonl"):
        index_custom_ids(documents(5), "id")
    assert len(index_custom_ids([{"id": "x"}] * 5, None)) == 5  # ids that are the indexes: no limit


def test_the_ids_of_a_jsonl_file_are_read_again_from_the_file(tmp_path: Path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in documents(10)))

    ids = index_custom_ids(f"file://{path}", "id")

    assert [c for c, _ in ids.items()] == [f"doc-{i}" for i in range(10)]
    assert dict(ids.indexes) == {f"doc-{i}": i for i in range(10)}


def test_bookkeeping_takes_about_ten_bytes_an_item():
    n = 100_000
    ids = index_custom_ids(documents(n, prefix="a-rather-long-document-identifier-"), "id")
    written = IndexBits(n)

    held = sum(sys.getsizeof(a) for a in (ids._keys, ids._checks, ids._int_ids._bits, written._bits))

    assert held / n < 11  # a dict of the strings and a set of ints: ~200 bytes an item


def test_index_bits_is_a_set_of_indexes():
    bits = IndexBits(3)
    for index in (0, 2, 2, 900):
        bits.add(index)

    assert len(bits) == 3
    assert [i in bits for i in (0, 1, 2, 899, 900, 10_000, -1)] == [
        True,
        False,
        True,
        False,
        True,
        False,
        False,
    ]
    assert "2" not in bits


def test_a_mapping_of_ids_must_cover_the_indexes_in_order():
    assert ItemIds({"b": 1, "a": 0}).index_of("b") == 1
    with pytest.raises(ValueError, match=r"0 \.\. n-1"):
        ItemIds({"a": 0, "b": 2})


def test_the_writer_fills_in_the_items_without_a_row_with_their_own_ids(tmp_path: Path):
    ids = index_custom_ids(documents(6), "id")
    target = ObjectStoragePath(f"file://{tmp_path}/out.jsonl")

    with ResultsWriter(target, ids) as writer:
        assert writer.write(result_row("doc-4", 4, "succeeded", output="ok"))
        assert not writer.write(result_row("doc-4", 4, "failed"))  # one row per item
        writer.write_unwritten(lambda custom_id, index: result_row(custom_id, index, "missing"))

    rows = [json.loads(line) for line in Path(tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["custom_id"], r["index"], r["status"]) for r in rows] == [
        ("doc-4", 4, "succeeded"),
        *((f"doc-{i}", i, "missing") for i in (0, 1, 2, 3, 5)),
    ]
    assert writer.tally.counts == {"succeeded": 1, "missing": 5}
