"""The pure parts of the batch engine: splitting the spooled requests, fingerprints, the run identity."""

from __future__ import annotations

import json

import pytest

from airflow_openrouter.batch.items import ItemRequest
from airflow_openrouter.batch.spool import _ENVELOPE_BYTES, RequestSpool
from airflow_openrouter.batch.state import BatchRecord, ObjectStorageRecord, SubmittedBatch, TaskRunIdentity


def requests(n: int, text: str = "x") -> list[ItemRequest]:
    return [ItemRequest(i, str(i), {"messages": [{"role": "user", "content": text}]}) for i in range(n)]


def test_chunks_respect_the_request_count_and_the_byte_budget():
    line_bytes = len(json.dumps(requests(1)[0].line(), separators=(",", ":")).encode()) + 1
    max_bytes = _ENVELOPE_BYTES + 3 * line_bytes  # room for three lines per batch

    with RequestSpool(requests(10), fingerprint_of={}, max_requests=4, max_bytes=max_bytes) as by_bytes:
        assert [c.count for c in by_bytes.chunks] == [3, 3, 3, 1]
        assert [line["custom_id"] for line in by_bytes.read(by_bytes.chunks[1])] == ["3", "4", "5"]
    with RequestSpool(requests(10), fingerprint_of={}, max_requests=4) as by_count:
        assert [(c.first_index, c.count) for c in by_count.chunks] == [(0, 4), (4, 4), (8, 2)]
        assert [line["custom_id"] for line in by_count] == [str(i) for i in range(10)]


def test_any_set_of_items_is_cut_into_chunks_in_item_order():
    with RequestSpool(requests(10), fingerprint_of={}, max_requests=3) as spool:
        chunks = spool.cut(((1, 2), (4, 8), (9, 10)))

        assert [c.ranges for c in chunks] == [((1, 2), (4, 6)), ((6, 8), (9, 10))]
        assert [line["custom_id"] for line in spool.read(chunks[1])] == ["6", "7", "9"]
        assert spool.cut(((1, 2), (4, 8), (9, 10))) == chunks  # a retry cuts the same chunks


def test_the_fingerprint_covers_what_is_sent_and_nothing_else():
    def fingerprint(items: list[ItemRequest], model: str = "m") -> str:
        with RequestSpool(items, fingerprint_of={"model": model}) as spool:
            return spool.fingerprint

    assert fingerprint(requests(3)) == fingerprint(requests(3))
    assert fingerprint(requests(3)) != fingerprint(requests(3, text="y"))
    assert fingerprint(requests(3)) != fingerprint(requests(3), model="other")


def test_the_identity_of_a_task_run_ignores_the_try_number_and_names_a_readable_file():
    identity = TaskRunIdentity("etl", "summarise", "manual__2026-01-01T00:00:00+00:00", map_index=3)

    assert identity == TaskRunIdentity("etl", "summarise", "manual__2026-01-01T00:00:00+00:00", 3)
    assert identity.key != TaskRunIdentity("etl", "summarise", "manual__2026-01-01T00:00:00+00:00", 4).key
    path = identity.results_file("file:///data/out")
    assert str(path) == "file:///data/out/etl/summarise/manual__2026-01-01T00_00_00_00_00.3.jsonl"
    # A mapped task's map indexes never share a file, even when output_path names one.
    assert str(identity.results_file("file:///data/mine.jsonl")) == "file:///data/mine.3.jsonl"
    unmapped = TaskRunIdentity("etl", "summarise", "manual__2026-01-01T00:00:00+00:00")
    assert str(unmapped.results_file("file:///data/mine.jsonl")) == "file:///data/mine.jsonl"


def test_a_record_beside_the_results_survives_a_round_trip(tmp_path):
    from airflow.sdk import ObjectStoragePath

    store = ObjectStorageRecord(ObjectStoragePath(f"file://{tmp_path}/_state/key.json"))
    assert store.load() is None
    record = BatchRecord.start("f" * 64, "m", 9)
    record.add(SubmittedBatch("batch_1", ((0, 7),), created_at=1, expires_at=None))
    record.resubmit([3, 4])

    store.save(record)

    assert store.load() == record
    assert record.todo == ((3, 5), (7, 9))


def test_a_record_written_before_todo_existed_still_re_attaches():
    old = {
        "fingerprint": "f",
        "model": "m",
        "total_items": 10,
        "batches": [{"id": "b1", "first_index": 0, "count": 4, "created_at": 5, "expires_at": None}],
        "pending": {"first_index": 4, "count": 6, "posted_at": 9},
    }

    record = BatchRecord.from_json(old)

    assert record is not None and record.batches == [SubmittedBatch("b1", ((0, 4),), 5)]
    assert record.todo == ((4, 10),) and record.pending == {"ranges": [[4, 10]], "posted_at": 9}


def test_the_newest_batch_holding_an_item_holds_its_result():
    record = BatchRecord.start("f", "m", 6)
    record.add(SubmittedBatch("first", ((0, 6),)))
    record.add(SubmittedBatch("resubmitted", ((2, 3), (5, 6))))

    assert [record.holder_of(i).id for i in range(6)] == ["first"] * 2 + ["resubmitted"] + ["first"] * 2 + [
        "resubmitted"
    ]
    dropped = record.drop(["resubmitted"])
    assert [b.id for b in dropped] == ["resubmitted"] and record.todo == ((2, 3), (5, 6))


def test_a_torn_record_file_fails_naming_it_instead_of_submitting_again(tmp_path):
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.state import ObjectStorageRecord
    from airflow_openrouter.exceptions import OpenRouterError

    path = tmp_path / "_state" / "run.json"
    path.parent.mkdir()
    path.write_text('{"fingerprint": "abc", "batc')
    with pytest.raises(OpenRouterError, match="not valid JSON") as info:
        ObjectStorageRecord(ObjectStoragePath(f"file://{path}")).load()
    assert str(path) in str(info.value)


def test_items_may_be_any_sequence_such_as_a_mapped_upstreams_lazy_output():
    import collections

    from airflow_openrouter.batch.items import iter_items

    class LazySequence(collections.abc.Sequence):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return ["a", "b"][index]

    assert list(iter_items(LazySequence())) == ["a", "b"]
