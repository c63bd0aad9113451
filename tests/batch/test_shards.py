"""Shards: splitting a JSONL input for a mapped task, merging the shards' manifests, and every shard
keeping its own never-pay-twice record."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from airflow_openrouter.batch.shards import merge_manifests, read_rows, split_jsonl
from airflow_openrouter.exceptions import BatchInputError
from tests.batch.support import (
    FakeTaskInstance,
    batch_posts,
    record_file,
    run_operator,
    summarise,
)


def write_jsonl(path: Path, items: list[Any], *, blank_lines: bool = False) -> str:
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    text = ("\n\n".join(lines) if blank_lines else "\n".join(lines)) + ("" if blank_lines else "\n")
    path.write_text(text, encoding="utf-8")
    return f"file://{path}"


def lines_of(uri: str) -> list[Any]:
    return [json.loads(line) for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


def docs(n: int) -> list[dict[str, Any]]:
    return [{"id": f"doc-{i}", "text": f"Document {i}: grüße 😀"} for i in range(n)]


# --- split_jsonl -------------------------------------------------------------------------------------


def test_items_go_round_robin_to_the_shards_in_order(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", docs(10), blank_lines=True)

    shards = split_jsonl(source, shards=3, out=f"file://{tmp_path}/shards")

    assert [uri.rsplit("/", 1)[-1] for uri in shards] == [f"part-0000{k}-of-00003.jsonl" for k in range(3)]
    assert [[d["id"] for d in lines_of(uri)] for uri in shards] == [
        ["doc-0", "doc-3", "doc-6", "doc-9"],
        ["doc-1", "doc-4", "doc-7"],
        ["doc-2", "doc-5", "doc-8"],
    ]
    assert lines_of(shards[0])[1] == docs(10)[3]  # the item as it was, unicode and all


def test_splitting_again_writes_the_same_bytes(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", docs(50))

    first = [
        Path(u.removeprefix("file://")).read_bytes()
        for u in split_jsonl(source, shards=4, out=f"file://{tmp_path}/a")
    ]
    again = [
        Path(u.removeprefix("file://")).read_bytes()
        for u in split_jsonl(source, shards=4, out=f"file://{tmp_path}/a")
    ]

    assert first == again


def test_fewer_items_than_shards_makes_only_the_non_empty_ones_and_clears_stale_ones(tmp_path):
    out = f"file://{tmp_path}/shards"
    split_jsonl(write_jsonl(tmp_path / "long.jsonl", docs(5)), shards=4, out=out)

    shards = split_jsonl(write_jsonl(tmp_path / "short.jsonl", docs(2)), shards=4, out=out)

    assert len(shards) == 2
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "part-00000-of-00004.jsonl",
        "part-00001-of-00004.jsonl",
    ]


def test_a_line_that_is_not_json_fails_the_split_naming_it_and_leaves_earlier_shards_alone(tmp_path):
    out = f"file://{tmp_path}/shards"
    good = split_jsonl(write_jsonl(tmp_path / "docs.jsonl", docs(6)), shards=2, out=out)
    before = {uri: lines_of(uri) for uri in good}
    (tmp_path / "docs.jsonl").write_text('{"id": "a"}\n\n{"id": "b"}\n{"id": "c",\n{"id": "d"}\n')

    with pytest.raises(BatchInputError, match=r"Item 2 \(line 4 of .*docs.jsonl\) is not valid JSON"):
        split_jsonl(f"file://{tmp_path}/docs.jsonl", shards=2, out=out)

    assert {uri: lines_of(uri) for uri in good} == before  # no torn or half-new shard
    assert not list((tmp_path / "shards").glob("*.partial"))


@pytest.mark.parametrize("shards", [0, -1, True, 1.5, "4", 10_001])
def test_shards_must_be_a_whole_number_in_range(tmp_path, shards):
    source = write_jsonl(tmp_path / "docs.jsonl", docs(2))

    with pytest.raises(BatchInputError, match="shards must be a whole number from 1 to 10,000"):
        split_jsonl(source, shards=shards, out=f"file://{tmp_path}/shards")


def test_a_missing_input_says_so(tmp_path):
    with pytest.raises(BatchInputError, match="does not exist"):
        split_jsonl(f"file://{tmp_path}/nope.jsonl", shards=2, out=f"file://{tmp_path}/shards")


def test_the_split_streams_a_large_input_in_small_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as out:
        for i in range(100_000):  # ~20 MB
            out.write(json.dumps({"id": f"doc-{i}", "text": "x" * 160}) + "\n")

    tracemalloc.start()
    try:
        shards = split_jsonl(f"file://{path}", shards=8, out=f"file://{tmp_path}/shards")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(shards) == 8 and sum(len(lines_of(u)) for u in shards) == 100_000
    assert peak < 2 * 1024 * 1024  # a tenth of the input, whatever its size


# --- merge_manifests and read_rows -------------------------------------------------------------------


def manifest(k: int, **changes: Any) -> dict[str, Any]:
    base = {
        "output_uri": f"file:///r/out.{k}.jsonl",
        "engine": "concurrent",
        "status": "completed",
        "model": "m",
        "provider": "A",
        "providers": {"A": 2, "B": 1},
        "total": 3,
        "counts": {"succeeded": 3, "failed": 0},
        "errors": {},
        "batch_ids": [],
        "batch_count": 0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.1,
        "started_at": f"2026-12-01T10:0{k}:00+00:00",
        "finished_at": f"2026-12-01T10:1{k}:00+00:00",
    }
    return {**base, **changes}


def test_merged_manifest_adds_up_the_shards_and_takes_the_worst_status():
    merged = merge_manifests(
        [
            manifest(0),
            manifest(
                1,
                status="completed_with_failures",
                counts={"succeeded": 2, "failed": 1},
                errors={"timeout": 1},
            ),
            manifest(2, providers={"B": 5}),
        ]
    )

    assert merged["shards"] == 3 and merged["missing_shards"] == 0
    assert merged["status"] == "completed_with_failures"
    assert merged["total"] == 9 and merged["counts"]["succeeded"] == 8 and merged["counts"]["failed"] == 1
    assert merged["errors"] == {"timeout": 1} and merged["providers"] == {"B": 7, "A": 4}
    assert merged["provider"] == "B"
    assert merged["total_tokens"] == 45 and merged["cost_usd"] == pytest.approx(0.3)
    assert merged["output_uris"] == [f"file:///r/out.{k}.jsonl" for k in range(3)]
    assert merged["started_at"] == "2026-12-01T10:00:00+00:00" and merged["duration_s"] == 720.0


def test_merged_manifest_adds_up_the_cost_control_fields_of_the_shards():
    # What the cache saved and what the run was estimated to cost are the point of a nightly sharded
    # run's report: the merge must not drop them.
    ledger = {
        "cached": 2, "cost_saved_usd": 0.02, "cached_tokens": 4, "reasoning_tokens": 1,
        "cost_by_status": {"succeeded": 0.1}, "list_price_usd": 0.2, "upstream_inference_cost_usd": 0.0,
        "byok_rows": 0, "estimated_cost_usd": 0.15,
    }  # fmt: skip
    merged = merge_manifests([manifest(0, **ledger), manifest(1, **ledger)])

    assert merged["cached"] == 4 and merged["cost_saved_usd"] == pytest.approx(0.04)
    assert merged["cached_tokens"] == 8 and merged["reasoning_tokens"] == 2
    assert merged["cost_by_status"] == {"succeeded": pytest.approx(0.2)}
    assert merged["list_price_usd"] == pytest.approx(0.4)
    assert merged["estimated_cost_usd"] == pytest.approx(0.3)
    unknown = merge_manifests([manifest(0, **ledger), manifest(1, **{**ledger, "list_price_usd": None})])
    assert unknown["list_price_usd"] is None and unknown["cost_saved_usd"] == pytest.approx(0.04)


def test_a_shard_without_a_manifest_is_counted_missing_and_a_failed_shard_fails_the_whole():
    merged = merge_manifests([manifest(0), None, manifest(2, status="failed")])

    assert merged["missing_shards"] == 1 and merged["status"] == "failed" and merged["total"] == 6
    assert merge_manifests([None, None])["status"] == "failed"


def test_something_that_is_not_a_manifest_is_refused_naming_the_shard():
    with pytest.raises(BatchInputError, match=r"Shard 1 gave \{'batch_ids'.*not a results manifest"):
        merge_manifests([manifest(0), {"batch_ids": ["b1"], "model": "m", "total": 3}])


def test_read_rows_streams_every_shards_rows(tmp_path):
    uris = []
    for k in range(2):
        path = tmp_path / f"out.{k}.jsonl"
        path.write_text("".join(json.dumps({"custom_id": f"{k}-{i}"}) + "\n" for i in range(3)))
        uris.append(manifest(k, output_uri=f"file://{path}"))

    from_list = [row["custom_id"] for row in read_rows(uris)]
    from_merged = [row["custom_id"] for row in read_rows(merge_manifests(uris))]

    assert from_list == from_merged == ["0-0", "0-1", "0-2", "1-0", "1-1", "1-2"]


# --- each shard a task run of its own ----------------------------------------------------------------


def shard_context(map_index: int, try_number: int = 1) -> dict[str, Any]:
    ti = FakeTaskInstance(run_id="sharded", task_id="extract")
    ti.map_index, ti.try_number = map_index, try_number
    return {"ti": ti}


def test_each_shard_keeps_its_own_record_and_a_cleared_shard_pays_nothing_twice(
    batch_emu, tmp_path, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    source = write_jsonl(tmp_path / "docs.jsonl", docs(9))
    shards = split_jsonl(source, shards=3, out=f"file://{tmp_path}/shards")

    def run(k: int, try_number: int = 1) -> dict[str, Any]:
        operator = summarise(task_id="extract", items=shards[k], id_field="id", poll_interval=0.05)
        return run_operator(operator, shard_context(k, try_number))

    first = [run(k) for k in range(3)]
    posts = batch_posts(batch_emu)
    tags = [{r["custom_id"].rsplit("~", 1)[1] for r in post["requests"]} for post in posts]

    assert len(posts) == 3 and all(len(t) == 1 for t in tags) and len(set.union(*tags)) == 3  # a tag each
    assert len({record_file(shard_context(k)) for k in range(3)}) == 3  # a record each
    assert [m["output_uri"].rsplit("/", 1)[-1] for m in first] == [
        "sharded.0.jsonl",
        "sharded.1.jsonl",
        "sharded.2.jsonl",
    ]

    # Shard 1 is cleared, and the split ran again meanwhile: same files, so the same inputs.
    split_jsonl(source, shards=3, out=f"file://{tmp_path}/shards")
    again = run(1, try_number=2)

    assert len(batch_posts(batch_emu)) == 3  # re-attached to its own batch, nothing submitted
    assert again["batch_ids"] == first[1]["batch_ids"] and again["counts"]["succeeded"] == 3


def test_a_retried_concurrent_shard_skips_what_it_already_paid_for(batch_emu, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    shards = split_jsonl(
        write_jsonl(tmp_path / "docs.jsonl", docs(8)), shards=2, out=f"file://{tmp_path}/shards"
    )

    def run(k: int, try_number: int = 1) -> dict[str, Any]:
        operator = summarise(task_id="extract", items=shards[k], id_field="id", engine="concurrent")
        return run_operator(operator, shard_context(k, try_number))

    run(0), run(1)
    sent = len(batch_emu.requests_to("/chat/completions", method="POST"))
    retried = run(1, try_number=2)

    assert sent == 8 and len(batch_emu.requests_to("/chat/completions", method="POST")) == 8
    assert retried["counts"]["succeeded"] == 4
    assert sorted(row["custom_id"] for row in read_rows([retried])) == ["doc-1", "doc-3", "doc-5", "doc-7"]
