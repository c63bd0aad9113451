"""One bulk job over many workers: split a JSONL file of items into shards, map the operator over the
shards with dynamic task mapping, and put the shards' manifests back together.

::

    @task
    def split(documents: str, run_id: str | None = None) -> list[str]:
        from airflow_openrouter.batch.shards import split_jsonl

        return split_jsonl(documents, shards=8, out=f"s3://bucket/shards/{run_id}")

    extract = OpenRouterBatchOperator.partial(
        task_id="extract", prompt="...", id_field="id", model="...",
    ).expand(items=split("s3://bucket/documents.jsonl"))

    @task
    def merge(manifests) -> dict:
        from airflow_openrouter.batch.shards import merge_manifests

        return merge_manifests(manifests)

    merge(extract.output)

The rules:

* **Streaming.** :func:`split_jsonl` reads its input line by line and writes every shard as it goes:
  its memory does not grow with the input. :func:`read_rows` reads the shards' results the same way.
* **Round-robin, deterministic.** Item ``i`` (blank lines do not count) goes to shard ``i % shards``:
  one pass over the input, and shards within one item of each other in size. The same input and
  ``shards`` give the same files, byte for byte, so a re-run split leaves every mapped task's inputs --
  and so its never-pay-twice record -- as they were. A different ``shards`` makes different inputs:
  every shard is then submitted afresh.
* **Each shard is a task run of its own.** A mapped task's results go to a file of its own (the
  ``.{map_index}`` suffix), and its record of submitted batches, its run tag and its checkpoint are
  keyed by its map index: a retry or clear of one shard re-attaches to that shard's batches only.
* **Rows keep the shard's numbering.** A row's ``index`` is the item's position in its shard; key rows
  by ``id_field`` (``custom_id``/``id``) to join them with the input. In the input, shard ``k``'s item
  ``j`` is item ``j * shards + k``.
* **A shard file appears whole or not at all**: each is written under a temporary name and renamed
  when complete. Empty shards (fewer items than ``shards``) are not written, nor returned.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, TextIO

from airflow_openrouter.batch.vocabulary import ROW_STATUSES, WORST_MANIFEST_STATUS_FIRST
from airflow_openrouter.exceptions import BatchInputError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = ["merge_manifests", "read_rows", "split_jsonl"]

MAX_SHARDS = 10_000
_TOP = 10  # providers and error causes kept in the merged manifest, like a shard's own
#: A shard manifest's numbers that add up across shards (the cost-control ones included).
_SUMMED = (
    "total", "batch_count", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
    "cached_tokens", "reasoning_tokens", "upstream_inference_cost_usd", "byok_rows", "cached",
    "cost_saved_usd",
)  # fmt: skip
#: Summed too, but ``None`` (unknown) in one shard makes the sum unknown.
_UNKNOWN_IF_ANY_IS = ("list_price_usd", "estimated_cost_usd")


def split_jsonl(uri: str | ObjectStoragePath, *, shards: int, out: str | ObjectStoragePath) -> list[str]:
    """Split the JSONL file *uri* into at most *shards* JSONL files under the directory *out*, item
    ``i`` going to shard ``i % shards``; the URIs of the non-empty shards, in shard order.

    Every line is checked to be JSON before anything is written for good: an error names the line of
    the input, before any shard can be submitted (and paid for).

    :raises BatchInputError: *shards* is not a whole number from 1 to 10,000, the input is missing or
        a line of it is not JSON.
    """
    from airflow.sdk import ObjectStoragePath

    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise BatchInputError(f"shards must be a whole number from 1 to {MAX_SHARDS:,}, got {shards!r:.40}.")
    source = uri if isinstance(uri, ObjectStoragePath) else ObjectStoragePath(uri)
    if not source.exists():
        raise BatchInputError(
            f"The items file {source} does not exist; split_jsonl needs an existing JSONL file."
        )
    folder = out if isinstance(out, ObjectStoragePath) else ObjectStoragePath(out)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"part-{k:05d}-of-{shards:05d}.jsonl" for k in range(shards)]
    partial = [folder / f"{name}.partial" for name in names]
    counts = [0] * shards
    opened: dict[int, TextIO] = {}  # a shard's file is created with its first item
    try:
        with ExitStack() as files:
            for index, line in _json_lines(source):
                k = index % shards
                if k not in opened:
                    opened[k] = files.enter_context(partial[k].open("w", encoding="utf-8"))
                opened[k].write(line)
                counts[k] += 1
    except BaseException:
        for k in opened:
            partial[k].unlink(missing_ok=True)
        raise
    written = []
    for k in range(shards):
        final = folder / names[k]
        if counts[k]:
            partial[k].rename(final)
            written.append(str(final))
        elif final.exists():  # left by an earlier split of a longer input
            final.unlink()
    return written


def _json_lines(source: ObjectStoragePath) -> Iterator[tuple[int, str]]:
    """``(item index, line ending in a newline)`` of every non-blank line, each checked to be JSON."""
    index = 0
    with source.open("r", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchInputError(
                    f"Item {index} (line {number} of {source}) is not valid JSON: {exc.msg}. Nothing was "
                    "split: fix the line and run the split again."
                ) from None
            yield index, line if line.endswith("\n") else line + "\n"
            index += 1


def merge_manifests(manifests: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """One manifest for the shards of a mapped bulk task: counts, errors, providers, tokens and cost
    summed, the worst status, the earliest start and latest finish, every shard's ``output_uris``.

    A shard without a manifest (``None``: it failed before writing one, with a downstream trigger rule
    that runs anyway) is counted in ``missing_shards``; anything else that is not a manifest (for
    example the summary of ``wait_for_completion=False``) is an error naming the shard.
    """
    merged: dict[str, Any] = {
        "output_uris": [],
        "shards": 0,
        "missing_shards": 0,
        "engine": None,
        "status": "completed",
        "model": None,
        "total": 0,
        "counts": dict.fromkeys(ROW_STATUSES, 0),
        "errors": {},
        "providers": {},
        "batch_ids": [],
        "batch_count": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost_usd": 0.0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost_by_status": {},
        "list_price_usd": 0.0,
        "upstream_inference_cost_usd": 0.0,
        "byok_rows": 0,
        "cached": 0,
        "cost_saved_usd": 0.0,
        "estimated_cost_usd": 0.0,
        "started_at": None,
        "finished_at": None,
    }
    # By position when it has a length: Airflow's lazy sequence of a mapped task's values ends its plain
    # iteration by asking for one past the end (an error line in the log).
    shards = manifests if isinstance(manifests, Sequence) else list(manifests)
    for shard in range(len(shards)):
        manifest = shards[shard]
        merged["shards"] += 1
        if manifest is None:
            merged["missing_shards"] += 1
            continue
        if not isinstance(manifest, Mapping) or "counts" not in manifest or "output_uri" not in manifest:
            raise BatchInputError(
                f"Shard {shard} gave {manifest!r:.120}, not a results manifest: merge_manifests takes the "
                "return values of a mapped OpenRouterBatchOperator that waits for its results."
            )
        _add(merged, manifest)
    merged["status"] = merged["status"] if merged["shards"] > merged["missing_shards"] else "failed"
    for key in ("errors", "providers"):
        merged[key] = dict(sorted(merged[key].items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP])
    merged["provider"] = next(iter(merged["providers"]), None)
    for key in ("cost_usd", *_UNKNOWN_IF_ANY_IS):
        if merged[key] is not None:
            merged[key] = round(merged[key], 8)
    merged["cost_by_status"] = {k: round(v, 8) for k, v in merged["cost_by_status"].items()}
    merged["duration_s"] = _seconds_between(merged["started_at"], merged["finished_at"])
    return merged


def _add(merged: dict[str, Any], manifest: Mapping[str, Any]) -> None:
    merged["output_uris"].append(manifest["output_uri"])
    merged["engine"] = merged["engine"] or manifest.get("engine")
    merged["model"] = merged["model"] or manifest.get("model")
    statuses = (merged["status"], manifest.get("status", "failed"))
    merged["status"] = next(s for s in WORST_MANIFEST_STATUS_FIRST if s in statuses)
    for key in _SUMMED:
        merged[key] += manifest.get(key) or 0
    for key in _UNKNOWN_IF_ANY_IS:  # a price unknown for one shard leaves the whole unknown
        value = manifest.get(key)
        merged[key] = None if value is None or merged[key] is None else merged[key] + value
    for key in ("counts", "errors", "providers", "cost_by_status"):
        for name, count in (manifest.get(key) or {}).items():
            merged[key][name] = merged[key].get(name, 0) + count
    merged["batch_ids"] = (merged["batch_ids"] + list(manifest.get("batch_ids") or []))[:_TOP]
    started, finished = manifest.get("started_at"), manifest.get("finished_at")
    if started and (merged["started_at"] is None or started < merged["started_at"]):
        merged["started_at"] = started  # ISO 8601 in UTC: strings compare as times
    if finished and (merged["finished_at"] is None or finished > merged["finished_at"]):
        merged["finished_at"] = finished


def _seconds_between(started: str | None, finished: str | None) -> float | None:
    from datetime import datetime

    if not started or not finished:
        return None
    return round((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 3)


def read_rows(manifests: Iterable[Mapping[str, Any] | None] | Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every result row of every shard, shard by shard, streamed from their files. Takes the shards'
    manifests, or a merged manifest (its ``output_uris``)."""
    from airflow.sdk import ObjectStoragePath

    if isinstance(manifests, Mapping):
        uris = list(manifests.get("output_uris") or [manifests["output_uri"]])
    else:
        shards = manifests if isinstance(manifests, Sequence) else list(manifests)
        uris = [m["output_uri"] for m in (shards[k] for k in range(len(shards))) if m is not None]
    for uri in uris:
        with ObjectStoragePath(uri).open("r", encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)
