"""The result cache on its own: segments on a real filesystem (through ObjectStoragePath, as on S3), torn
files left by killed writers, writers racing each other, compaction, the TTL and the key."""

from __future__ import annotations

import multiprocessing
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_openrouter.cache import ResultCache, _lookup, cache_key, chat_key_material
from airflow_openrouter.cache import store as store_module
from airflow_openrouter.cache._segment import TRAILER
from airflow_openrouter.schemas import output_spec


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(i: int) -> bytes:
    return cache_key({"item": i})


def entry(i: int) -> dict[str, Any]:
    return {"status": "succeeded", "output": f"answer {i}", "usage": {"cost": i / 1000}}


@pytest.fixture
def root(tmp_path: Path) -> str:
    return f"file://{tmp_path}/cache"


def segments(root: str) -> list[Path]:
    return sorted(Path(root.removeprefix("file://")).rglob("seg-*.orc"))


def found(cache: ResultCache, positions: range | list[int]) -> dict[int, Any]:
    return {hit.position: hit.entry for hit in cache.lookup((i, key(i)) for i in positions).entries()}


def write(cache: ResultCache, items: range | list[int]) -> None:
    with cache.writer() as writer:
        for i in items:
            writer.add(key(i), entry(i))


def test_a_lookup_finds_what_was_written_and_misses_the_rest(root):
    cache = ResultCache(root, "openai/gpt-4o-mini")
    write(cache, range(0, 1000, 2))

    hits = cache.lookup((i, key(i)) for i in range(1000))

    assert len(hits) == 500 and sorted(hits.positions()) == list(range(0, 1000, 2))
    assert found(cache, range(1000)) == {i: entry(i) for i in range(0, 1000, 2)}
    assert len(segments(root)) == 1  # one object per run, not one per key


def test_a_few_keys_against_a_large_segment_are_found_by_binary_search(root, monkeypatch):
    cache = ResultCache(root, "m")
    write(cache, range(20_000))
    merges: list[int] = []
    merge = store_module.CacheHits._merge
    monkeypatch.setattr(
        store_module.CacheHits, "_merge", lambda self, *a: merges.append(1) or merge(self, *a)
    )

    assert found(cache, [7, 19_999, 20_001]) == {7: entry(7), 19_999: entry(19_999)}
    assert merges == []  # three probes of the index, not a read of all 20,000 records


def test_repeated_keys_each_get_the_entry(root):
    cache = ResultCache(root, "m")
    write(cache, [5])

    hits = list(cache.lookup([(0, key(5)), (1, key(5)), (2, key(6))]).entries())

    assert sorted((h.position, h.entry["output"]) for h in hits) == [(0, "answer 5"), (1, "answer 5")]


def test_namespaces_do_not_see_each_other(root):
    write(ResultCache(root, "openai/gpt-4o-mini"), [1])

    assert found(ResultCache(root, "anthropic/claude-3.5-haiku"), [1]) == {}


def test_the_newest_entry_of_a_key_wins_and_a_writer_keeps_the_last_one_added(root):
    clock = Clock()
    cache = ResultCache(root, "m", clock=clock)
    with cache.writer() as writer:
        writer.add(key(1), {"v": "first"})
        writer.add(key(1), {"v": "second"})  # same writer: the last added wins
    clock.now += 10
    with cache.writer() as writer:
        writer.add(key(1), {"v": "newer"})

    assert found(cache, [1]) == {1: {"v": "newer"}}


def test_an_entry_older_than_the_ttl_is_a_miss(root):
    clock = Clock()
    write(ResultCache(root, "m", clock=clock), [1, 2])
    clock.now += 3600

    assert found(ResultCache(root, "m", ttl=3601, clock=clock), [1, 2]) == {1: entry(1), 2: entry(2)}
    assert found(ResultCache(root, "m", ttl=3599, clock=clock), [1, 2]) == {}
    assert found(ResultCache(root, "m", clock=clock), [1]) == {1: entry(1)}  # no ttl: any age


@pytest.mark.parametrize("keep", [0, 5, 12, 100, -41, -1])
def test_a_segment_cut_short_anywhere_is_skipped_and_the_others_stay_readable(root, keep, caplog):
    clock = Clock()
    cache = ResultCache(root, "m", clock=clock)
    write(cache, range(10))
    clock.now += 1
    write(cache, range(10, 20))
    newest = segments(root)[-1]  # names start with the creation time
    data = newest.read_bytes()
    newest.write_bytes(data[:keep])  # a writer killed mid-write (a negative keep cuts the end)

    assert found(cache, range(20)) == {i: entry(i) for i in range(10)}
    assert "ignoring" in caplog.text


def test_garbage_in_the_cache_directory_is_ignored(root):
    cache = ResultCache(root, "m")
    write(cache, [1])
    directory = segments(root)[0].parent
    (directory / "seg-0000000000001-aaaaaaaaaaaa.orc").write_bytes(b"\x00" * 100)
    (directory / "notes.txt").write_text("not a segment")
    (directory / "seg-0000000000002-bbbbbbbbbbbb.orc").write_bytes(b"ORCACHE\x01" + struct.pack(">I", 10**9))

    assert found(cache, [1]) == {1: entry(1)}


def test_an_entry_whose_bytes_are_damaged_is_a_miss_not_an_error(root):
    cache = ResultCache(root, "m")
    write(cache, range(3))
    path = segments(root)[0]
    data = bytearray(path.read_bytes())
    start = data.index(b'"answer 1"')
    data[start : start + 3] = b"\xff\xfe{"
    path.write_bytes(bytes(data))

    assert found(cache, range(3)) == {0: entry(0), 2: entry(2)}


_SLOW_WRITER = """
import sys, time
from airflow_openrouter.cache import ResultCache, cache_key

cache = ResultCache(sys.argv[1], "m")
with cache.writer() as writer:
    for i in range(200):
        writer.add(cache_key({"item": i}), {"status": "succeeded", "output": "x" * 2000})
    segment = cache._new_segment_path()
    with segment.open("wb") as file:
        file.write(b"ORCACHE\\x01")
        file.flush()
        print("writing", flush=True)
        while True:
            file.write(b"x" * 4096)
            file.flush()
            time.sleep(0.01)
"""


def test_a_cache_written_by_a_killed_process_is_still_readable(root, tmp_path):
    cache = ResultCache(root, "m")
    write(cache, range(3))
    script = tmp_path / "slow_writer.py"
    script.write_text(_SLOW_WRITER)
    process = subprocess.Popen([sys.executable, str(script), root], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "writing"
        time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    assert len(segments(root)) == 2  # the killed writer's half-written file is there...
    assert found(cache, range(3)) == {i: entry(i) for i in range(3)}  # ...and skipped
    write(cache, [3])  # a new writer is not disturbed by it either
    assert found(cache, range(4)) == {i: entry(i) for i in range(4)}


def _write_many(root: str, first: int, count: int, per_segment: int) -> None:
    cache = ResultCache(root, "m")
    for start in range(first, first + count, per_segment):
        write(cache, range(start, min(start + per_segment, first + count)))


def test_writers_racing_in_separate_processes_lose_nothing_and_compact_safely(root):
    # 3 processes x 12 segments: they compact concurrently, more than once (MAX_SEGMENTS = 16).
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(root, n * 120, 120, 10)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0

    cache = ResultCache(root, "m")
    assert found(cache, range(360)) == {i: entry(i) for i in range(360)}
    assert len(cache.live_segments()) <= store_module.MAX_SEGMENTS + 3  # racing compactions may overlap
    assert any(s.info.supersedes for s in cache.live_segments())  # compactions did happen


def test_compaction_keeps_every_entry_and_bounds_the_live_segments(root):
    clock = Clock()
    cache = ResultCache(root, "m", clock=clock)
    for i in range(40):
        clock.now += 1
        write(cache, [i, 1000])  # key 1000 is written by every run: the newest must win

    assert len(cache.live_segments()) <= store_module.MAX_SEGMENTS
    assert found(cache, [*range(40), 1000]) == {**{i: entry(i) for i in range(40)}, 1000: entry(1000)}


def test_superseded_segments_are_deleted_only_after_a_grace_period(root):
    clock = Clock()
    cache = ResultCache(root, "m", clock=clock)
    for i in range(store_module.MAX_SEGMENTS + 1):
        write(cache, [i])
    merged_away = len(segments(root)) - len(cache.live_segments())
    assert merged_away > 0
    files = len(segments(root))

    clock.now += store_module.DELETE_AFTER_S - 10
    cache.compact()
    assert len(segments(root)) == files  # a reader that listed them a moment ago can still read them

    clock.now += 20
    cache.compact()
    assert len(segments(root)) == files - merged_away
    assert found(cache, range(store_module.MAX_SEGMENTS + 1)) == {
        i: entry(i) for i in range(store_module.MAX_SEGMENTS + 1)
    }


def test_the_trailer_is_checked_against_the_file_size(root):
    cache = ResultCache(root, "m")
    write(cache, [1, 2])
    path = segments(root)[0]
    data = path.read_bytes()
    index_offset, count, digest, magic = TRAILER.unpack(data[-TRAILER.size :])
    path.write_bytes(data[: -TRAILER.size] + TRAILER.pack(index_offset, count + 1, digest, magic))

    assert found(cache, [1, 2]) == {}


@pytest.fixture
def bulk(root):
    """The result cache of a chat bulk job under *root*."""
    from airflow_openrouter.batch.cached import BulkCache
    from airflow_openrouter.batch.endpoints import CHAT

    class Job:
        endpoint = CHAT
        result_cache = root
        result_cache_ttl = None
        model = "m"
        provider = None
        spec = output_spec(None)

    return BulkCache(Job(), log=None)  # type: ignore[arg-type]


def test_an_unreadable_cache_is_an_error_naming_result_cache_before_anything_is_sent(bulk):
    from airflow_openrouter.batch.cached import ItemKeys
    from airflow_openrouter.exceptions import OpenRouterConfigError

    directory = Path(bulk.cache.directory.path)
    directory.parent.mkdir(parents=True)
    directory.write_text("a file where the namespace's directory should be")
    with pytest.raises(OpenRouterConfigError, match=r"result_cache .*cannot be read.*result_cache=False"):
        bulk.lookup(ItemKeys(key(1)), iter([0]))


def test_a_cache_storage_that_fails_to_answer_is_a_retryable_error_not_a_config_error(bulk, monkeypatch):
    from airflow_openrouter._compat import AirflowFailException
    from airflow_openrouter.batch.cached import ItemKeys
    from airflow_openrouter.exceptions import OpenRouterError

    def unreachable(keys):  # what an object store's client raises when it gets no answer
        raise TimeoutError("read timed out")

    monkeypatch.setattr(bulk.cache, "lookup", unreachable)
    with pytest.raises(
        OpenRouterError, match=r"cannot be read \(TimeoutError.*A retry reads it again"
    ) as info:
        bulk.lookup(ItemKeys(key(1)), iter([0]))
    assert not isinstance(info.value, AirflowFailException)


# --- keys ------------------------------------------------------------------------------------------------


def test_a_key_ignores_attribution_dict_order_and_the_item_but_not_what_decides_the_answer():
    spec = output_spec({"type": "object", "properties": {"a": {"type": "string"}}})
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 9}

    def key_of(**changes: Any) -> bytes:
        arguments = {"model": "m", "body": body, "provider": None, "spec": spec, "max_repair_attempts": 0}
        return cache_key(chat_key_material(**{**arguments, **changes}))

    same = key_of()
    assert key_of(body=dict(reversed(list(body.items())))) == same
    assert key_of(body={**body, "user": "u", "session_id": "s", "metadata": {"try_number": "2"}}) == same
    assert key_of(body={**body, "model": "m", "stream": True}) == same
    for changed in (
        key_of(model="m2"),
        key_of(body={**body, "temperature": 0.1}),
        key_of(body={**body, "messages": [{"role": "user", "content": "hi!"}]}),
        key_of(provider={"only": ["OpenAI"]}),
        key_of(spec=output_spec({"type": "object", "properties": {"b": {"type": "string"}}})),
        key_of(spec=output_spec(None)),
        key_of(max_repair_attempts=1),
    ):
        assert changed != same
    with pytest.raises(TypeError):
        cache_key({"not json": object()})


def test_an_embeddings_key_is_the_model_and_the_inputs_request_and_never_a_chat_key():
    from airflow_openrouter.cache import embeddings_key_material

    body = {"input": "Grüße, 東京", "dimensions": 256, "encoding_format": "base64"}

    def key_of(**changes: Any) -> bytes:
        arguments = {"model": "openai/text-embedding-3-small", "body": body, "provider": None, **changes}
        return cache_key(embeddings_key_material(**arguments))

    same = key_of()
    assert key_of(body=dict(reversed(list(body.items())))) == same
    assert (
        key_of(body={**body, "user": "u", "session_id": "s", "model": "x", "provider": {"only": ["x"]}})
        == same
    )
    for changed in (
        key_of(model="openai/text-embedding-3-large"),
        key_of(body={**body, "input": "Grüße, 東京!"}),
        key_of(body={**body, "dimensions": 512}),
        key_of(body={**body, "encoding_format": "float"}),
        key_of(body={**body, "input_type": "search_query"}),
        key_of(provider={"only": ["OpenAI"]}),
    ):
        assert changed != same
    # The same model and the same fields as a chat request's are still another kind of request.
    chat = chat_key_material(
        model="openai/text-embedding-3-small",
        body=body,
        provider=None,
        spec=output_spec(None),
        max_repair_attempts=0,
    )
    assert cache_key(chat) != same


def _lookup_peak_bytes(root: str, entries: int, wanted: int) -> int:
    import tracemalloc

    cache = ResultCache(root, f"m{entries}")
    write(cache, range(entries))
    tracemalloc.start()
    try:
        hits = cache.lookup((i, key(i)) for i in range(wanted))
        assert sum(1 for _ in hits.entries()) == min(wanted, entries)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_lookup_allocates_with_the_keys_looked_up_never_with_the_size_of_the_cache(root):
    # Both caches are larger than one 64 KiB block of the index, which is read a block at a time.
    small_cache = _lookup_peak_bytes(root, 3_000, wanted=1_000)
    large_cache = _lookup_peak_bytes(root, 30_000, wanted=1_000)
    many_keys = _lookup_peak_bytes(root, 30_000, wanted=10_000)

    block = 2 * _lookup._BlockReader._LARGEST  # entries are read a block (<= 1 MiB) at a time
    assert large_cache < small_cache * 1.25 + block  # 10 times the entries: the same memory
    assert many_keys < 10_000 * 100 + block  # 10 times the keys: ~100 bytes a key (no dict of strings)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": [{"role": "user", "content": "Grüße, 東京 \U0001f600"}], "max_tokens": 5, "user": "u"},
        {
            "messages": [],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        },
        {"stream": True, "model": "ignored", "provider": {"only": ["ignored"]}, "z": [1, 2.5, None, True]},
    ],
)
def test_the_fast_bulk_keys_are_the_chat_operators_keys(body):
    from airflow_openrouter.cache import ChatKeys

    spec = output_spec({"type": "object", "properties": {"a": {"type": "string"}}})
    arguments = {"model": "openai/gpt-4o-mini", "provider": {"order": ["OpenAI"]}, "spec": spec}

    fast = ChatKeys(**arguments, max_repair_attempts=0).key(body)

    assert fast == cache_key(chat_key_material(body=body, **arguments, max_repair_attempts=0))
