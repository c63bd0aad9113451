"""OpenRouterBatchOperator(engine="concurrent") against the emulator: limits measured from the emulator's
journal, resuming after a crash without repeating finished items, and the cost cap."""

# The emulator fixtures are imported from tests.batch.support (tests/operators/conftest.py belongs to
# the chat operator's tests), so ruff sees every test argument as a redefinition.
# ruff: noqa: F811
from __future__ import annotations

from typing import Any

import pytest

from airflow_openrouter.batch.progress import PartWriter
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    FakeTaskInstance,
    batch_emu,
    batch_emulator,
    read_rows,
    task_context,
)

LATENCY_S = 0.15


def classify(n: int, **kwargs: Any) -> OpenRouterBatchOperator:
    return OpenRouterBatchOperator(
        task_id="classify",
        items=[{"text": f"ticket {i}"} for i in range(n)],
        prompt="Classify: {{ item.text }}",
        model=MODEL,
        engine="concurrent",
        **kwargs,
    )


def chat_posts(emulator: Any) -> list[Any]:
    return emulator.requests_to("/chat/completions", method="POST")


def prompts_sent(emulator: Any) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in chat_posts(emulator)]


@pytest.fixture
def context(request: pytest.FixtureRequest) -> dict[str, Any]:
    return task_context(request)


def test_concurrency_and_rate_limits_hold_on_the_wire(batch_emu, context):
    batch_emu.set_latency(LATENCY_S * 1000)

    manifest = classify(12, max_concurrency=3, requests_per_minute=600).execute(context)

    assert manifest["counts"]["succeeded"] == 12 and manifest["engine"] == "concurrent"
    arrivals = sorted(r.at for r in chat_posts(batch_emu))
    # In flight at once: requests that arrived within one latency of each other.
    in_flight = max(sum(1 for t in arrivals if a - LATENCY_S * 0.9 < t <= a) for a in arrivals)
    assert in_flight <= 3
    # 600 per minute: starts at least 0.1 s apart on average.
    assert arrivals[-1] - arrivals[0] >= 11 * 0.1 * 0.9


def test_a_retry_after_a_crash_skips_the_items_already_answered(batch_emu, context, monkeypatch):
    write = PartWriter.write
    written: list[str] = []

    def crash_after_five(self: PartWriter, row: Any) -> None:
        if len(written) == 5:
            raise RuntimeError("worker lost")
        write(self, row)
        written.append(row["custom_id"])

    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="worker lost"):
        patched.setattr(PartWriter, "write", crash_after_five)
        classify(10, max_concurrency=2).execute(context)
    first_try = len(chat_posts(batch_emu))

    context["ti"].try_number = 2
    manifest = classify(10, max_concurrency=2).execute(context)

    retried = prompts_sent(batch_emu)[first_try:]
    assert not {f"Classify: ticket {i}" for i in map(int, written)} & set(retried)
    assert len(retried) == 10 - len(written)
    rows = read_rows(manifest["output_uri"])
    assert len(rows) == 10 and {r["status"] for r in rows.values()} == {"succeeded"}
    assert manifest["cost_usd"] == pytest.approx(sum(r["usage"]["cost"] for r in rows.values()))


def test_a_failed_item_is_tried_again_by_the_retry(batch_emu, context):
    batch_emu.fail_next(route="/chat/completions", status=400, times=1)
    with pytest.raises(Exception, match="1 of 4 items did not succeed"):
        classify(4, max_concurrency=1).execute(context)

    context["ti"].try_number = 2
    manifest = classify(4, max_concurrency=1).execute(context)

    assert len(chat_posts(batch_emu)) == 5
    assert manifest["counts"]["succeeded"] == 4


def test_the_cost_cap_stops_new_requests(batch_emu, context):
    one = classify(1).execute({"ti": type(context["ti"])(run_id="cost-probe")})["cost_usd"]
    batch_emu.clear_requests()

    manifest = classify(20, max_concurrency=1, max_cost_usd=one * 3.5, max_failed_fraction=1.0).execute(
        context
    )

    assert len(chat_posts(batch_emu)) < 20
    assert manifest["cost_usd"] <= one * 3.5 + one * 2  # in flight when the cap was reached may finish
    rows = read_rows(manifest["output_uri"])
    capped = [r for r in rows.values() if r["status"] == "failed"]
    assert capped and all("max_cost_usd" in r["error"] for r in capped)
    assert manifest["counts"]["succeeded"] + len(capped) == 20


def test_two_runs_writing_to_one_jsonl_file_do_not_skip_each_others_items(batch_emu, tmp_path):
    output = f"file://{tmp_path}/tickets.jsonl"
    for run_id in ("monday", "tuesday"):
        classify(3, output_path=output).execute({"ti": FakeTaskInstance(run_id=run_id)})

    assert len(chat_posts(batch_emu)) == 6  # the second run answered its items itself
