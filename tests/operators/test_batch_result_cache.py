"""The result cache in bulk runs, both engines: what the emulator's journal shows was not sent again, and
what the rows and manifest say about it."""

# ruff: noqa: F811
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from airflow_openrouter._compat import TaskDeferred
from tests.batch.support import (  # noqa: F401  (fixtures)
    FakeTaskInstance,
    Summary,
    batch_emu,
    batch_emulator,
    batch_posts,
    docs,
    read_rows,
    run_operator,
    summarise,
)

ENGINES = ["batch", "concurrent"]


def sent_items(emulator: Any) -> int:
    """Items sent: chat completions plus the requests of every batch submission."""
    chats = len(emulator.requests_to("/chat/completions", method="POST"))
    return chats + sum(len(post["requests"]) for post in batch_posts(emulator))


def nightly(
    run_id: str, cache: str, *, engine: str, items: list[dict[str, Any]] | None = None, **kwargs: Any
) -> dict[str, Any]:
    operator = summarise(engine=engine, result_cache=cache, items=items or docs(6), id_field="id", **kwargs)
    return run_operator(operator, {"ti": FakeTaskInstance(run_id=run_id)})


@pytest.mark.parametrize("engine", ENGINES)
def test_the_second_run_sends_nothing_and_its_rows_say_they_came_from_the_cache(batch_emu, cache, engine):
    first = nightly("monday", cache, engine=engine, response_format=Summary)
    sent_first = sent_items(batch_emu)
    batch_emu.clear_requests()

    second = nightly("tuesday", cache, engine=engine, response_format=Summary)

    assert sent_first == 6 and sent_items(batch_emu) == 0
    before, after = read_rows(first["output_uri"]), read_rows(second["output_uri"])
    for custom_id, row in after.items():
        assert row["cached"] is True and row["status"] == "succeeded"
        assert row["output"] == before[custom_id]["output"]
        assert row["generation_id"] == before[custom_id]["generation_id"]  # the original generation
        assert row["usage"]["cost"] == 0 and row["usage"]["cost_saved"] == before[custom_id]["usage"]["cost"]
    assert second["cached"] == 6 and second["cost_usd"] == 0 and second["counts"]["succeeded"] == 6
    assert second["cost_saved_usd"] == pytest.approx(first["cost_usd"])
    assert second["estimated_cost_usd"] == 0 and "6 from the result cache" in second["estimate_basis"]
    assert second["list_price_usd"] == pytest.approx(first["list_price_usd"])


@pytest.mark.parametrize("engine", ENGINES)
def test_changing_10_of_100_items_sends_exactly_those_10(batch_emu, cache, engine):
    items = [{"id": f"doc-{i}", "text": f"Document {i} says hello."} for i in range(100)]
    nightly("monday", cache, engine=engine, items=items, max_concurrency=32)
    batch_emu.clear_requests()
    changed = {3, 14, 15, 26, 35, 58, 79, 83, 90, 99}
    items = [
        {**item, "text": f"{item['text']} (edited)"} if i in changed else item for i, item in enumerate(items)
    ]

    manifest = nightly("tuesday", cache, engine=engine, items=items, max_concurrency=32)

    assert sent_items(batch_emu) == 10
    if engine == "batch":
        (post,) = batch_posts(batch_emu)
        assert {r["custom_id"].split("~")[0] for r in post["requests"]} == {f"doc-{i}" for i in changed}
    rows = read_rows(manifest["output_uri"])
    assert {c for c, r in rows.items() if not r["cached"]} == {f"doc-{i}" for i in changed}
    assert manifest["cached"] == 90 and manifest["counts"]["succeeded"] == 100


def test_the_key_is_the_request_not_the_item_id(batch_emu, cache):
    nightly("monday", cache, engine="concurrent")
    batch_emu.clear_requests()
    renamed = [{**item, "id": f"renamed-{i}"} for i, item in enumerate(docs(6))]

    nightly("tuesday", cache, engine="concurrent", items=renamed)
    assert sent_items(batch_emu) == 0
    # ... while any parameter that changes the answer is a new request.
    nightly("wednesday", cache, engine="concurrent", temperature=0.3)
    assert sent_items(batch_emu) == 6


@pytest.mark.parametrize("engine", ENGINES)
def test_failed_and_invalid_rows_are_never_cached(batch_emu, cache, engine):
    if engine == "batch":
        batch_emu.batch_item_errors_next(custom_ids=["doc-1"])
        batch_emu.batch_invalid_output_next(custom_ids=["doc-4"])
    else:
        batch_emu.fail_next("/chat/completions", status=400, times=1)
        batch_emu.invalid_output_next(times=1)
    first = nightly(
        "monday",
        cache,
        engine=engine,
        response_format=Summary,
        max_failed_fraction=1.0,
        max_concurrency=1,
        max_row_attempts=1,
    )
    statuses = {r["status"] for r in read_rows(first["output_uri"]).values()}
    bad = {c for c, r in read_rows(first["output_uri"]).items() if r["status"] != "succeeded"}
    assert statuses == {"succeeded", "failed", "invalid_output"} and len(bad) == 2
    batch_emu.clear_requests()

    second = nightly("tuesday", cache, engine=engine, response_format=Summary, max_failed_fraction=1.0)

    assert sent_items(batch_emu) == len(bad)
    assert {c for c, r in read_rows(second["output_uri"]).items() if not r["cached"]} == bad


def test_a_retry_with_a_new_try_number_re_attaches_and_the_next_run_still_hits(batch_emu, cache):
    context = {"ti": FakeTaskInstance(run_id="monday")}
    with pytest.raises(TaskDeferred):
        summarise(result_cache=cache, id_field="id").execute(context)  # the worker dies while deferred
    context["ti"].try_number = 2  # attribution (metadata.try_number) changes; fingerprint and keys do not

    first = run_operator(summarise(result_cache=cache, id_field="id"), context)

    assert len(batch_posts(batch_emu)) == 1 and first["counts"]["succeeded"] == 6
    batch_emu.clear_requests()
    tuesday = {"ti": FakeTaskInstance(run_id="tuesday")}
    tuesday["ti"].try_number = 7
    assert run_operator(summarise(result_cache=cache, id_field="id"), tuesday)["cached"] == 6
    assert sent_items(batch_emu) == 0


def test_a_partly_cached_batch_run_survives_a_deferral_and_adds_the_new_answers(batch_emu, cache):
    nightly("monday", cache, engine="batch", items=docs(4))
    batch_emu.clear_requests()
    context = {"ti": FakeTaskInstance(run_id="tuesday")}

    with pytest.raises(TaskDeferred) as deferred:  # 4 from the cache, 2 submitted
        summarise(result_cache=cache, id_field="id").execute(context)
    from tests.batch.support import first_event

    manifest = summarise(result_cache=cache, id_field="id").execute_complete(
        context, first_event(deferred.value.trigger)
    )

    assert [len(p["requests"]) for p in batch_posts(batch_emu)] == [2]
    assert manifest["cached"] == 4 and manifest["counts"]["succeeded"] == 6
    batch_emu.clear_requests()
    assert nightly("wednesday", cache, engine="batch")["cached"] == 6 and sent_items(batch_emu) == 0


def test_an_entry_older_than_result_cache_ttl_is_paid_for_again(batch_emu, cache):
    nightly("monday", cache, engine="concurrent", result_cache_ttl=1)
    batch_emu.clear_requests()
    assert nightly("tuesday", cache, engine="concurrent", result_cache_ttl=60)["cached"] == 6
    time.sleep(2.1)  # entry ages are kept in whole seconds

    manifest = nightly("wednesday", cache, engine="concurrent", result_cache_ttl=1)

    assert manifest["cached"] == 0 and sent_items(batch_emu) == 6


def test_a_torn_segment_left_by_a_killed_task_is_skipped_and_the_rest_still_hits(batch_emu, cache):
    nightly("monday", cache, engine="concurrent", items=docs(3))
    (segment,) = Path(cache.removeprefix("file://")).rglob("seg-*.orc")
    nightly("tuesday", cache, engine="concurrent")  # 3 hits, 3 new answers in a second segment
    second = next(p for p in Path(cache.removeprefix("file://")).rglob("seg-*.orc") if p != segment)
    second.write_bytes(second.read_bytes()[: len(second.read_bytes()) // 2])  # killed mid-write
    batch_emu.clear_requests()

    manifest = nightly("wednesday", cache, engine="concurrent")

    assert manifest["cached"] == 3 and sent_items(batch_emu) == 3
    assert manifest["counts"]["succeeded"] == 6


def test_the_config_option_is_the_default_and_false_turns_it_off(batch_emu, cache, monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULT_CACHE", cache)
    run_operator(summarise(engine="concurrent"), {"ti": FakeTaskInstance(run_id="monday")})
    batch_emu.clear_requests()

    assert run_operator(summarise(engine="concurrent"), {"ti": FakeTaskInstance(run_id="tue")})["cached"] == 6
    off = run_operator(
        summarise(engine="concurrent", result_cache=False), {"ti": FakeTaskInstance(run_id="wed")}
    )
    assert off["cached"] == 0 and sent_items(batch_emu) == 6


def test_a_dry_run_counts_the_cached_items_and_estimates_only_the_rest(batch_emu, cache):
    nightly("monday", cache, engine="batch", items=docs(4), max_tokens=40)
    batch_emu.clear_requests()

    manifest = nightly("tuesday", cache, engine="batch", dry_run=True, max_tokens=40)

    assert manifest["status"] == "dry_run" and manifest["cached"] == 4
    assert "2 items" in manifest["estimate_basis"] and sent_items(batch_emu) == 0
    # ... and wrote nothing: the real run then finds the same 4 in the cache.
    assert nightly("tuesday", cache, engine="batch", max_tokens=40)["cached"] == 4
    assert [len(p["requests"]) for p in batch_posts(batch_emu)] == [2]


def test_two_map_indexes_writing_the_cache_at_once_lose_nothing(batch_emu, cache):
    import threading

    items = [{"id": f"doc-{i}", "text": f"Document {i} says hello."} for i in range(40)]
    # The prompt is the key: without {{ index }}, an item's request is the same in any map index.
    PROMPT = "Summarise: {{ item.text }}"
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def map_index(number: int, engine: str) -> None:
        ti = FakeTaskInstance(run_id="monday")
        ti.map_index = number
        operator = summarise(
            engine=engine, result_cache=cache, items=items[number::2], id_field="id", prompt=PROMPT
        )
        barrier.wait()
        try:
            run_operator(operator, {"ti": ti})
        except BaseException as exc:  # reported below, with the other thread's
            errors.append(exc)

    threads = [threading.Thread(target=map_index, args=(n, e)) for n, e in ((0, "concurrent"), (1, "batch"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    batch_emu.clear_requests()

    manifest = nightly("tuesday", cache, engine="concurrent", items=items, prompt=PROMPT)

    assert manifest["cached"] == 40 and sent_items(batch_emu) == 0


def test_with_wait_for_completion_false_every_item_is_in_a_batch(batch_emu, cache):
    # Whoever reads those batches (a sensor, then the hook) would miss items answered from the cache.
    nightly("monday", cache, engine="batch")
    batch_emu.clear_requests()

    submitted = run_operator(
        summarise(result_cache=cache, id_field="id", wait_for_completion=False),
        {"ti": FakeTaskInstance(run_id="tuesday")},
    )

    assert len(submitted["batch_ids"]) == 1 and sent_items(batch_emu) == 6


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cache_that_fails_while_results_are_written_never_stops_the_results(
    batch_emu, cache, engine, monkeypatch
):
    # The local spool of new entries fills the disk half way through: the answers are paid for, so every
    # row must still reach the results file, and the entries kept so far still reach the cache.
    from airflow_openrouter.cache import CacheWriter

    add = CacheWriter.add

    def disk_full_after_two(self: CacheWriter, key: bytes, entry: Any) -> None:
        if self.count == 2:
            raise OSError(28, "No space left on device")
        add(self, key, entry)

    monkeypatch.setattr(CacheWriter, "add", disk_full_after_two)
    first = nightly("monday", cache, engine=engine)
    monkeypatch.setattr(CacheWriter, "add", add)

    assert first["counts"]["succeeded"] == 6 and len(read_rows(first["output_uri"])) == 6
    batch_emu.clear_requests()
    assert nightly("tuesday", cache, engine=engine)["cached"] == 2 and sent_items(batch_emu) == 4
