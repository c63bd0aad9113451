"""Row recovery (max_row_attempts, recovery_engine, fallback_models) on both engines, against the emulator:
what the journal received, and what the rows and the manifest say."""

# The emulator fixtures are imported from tests.batch.support: ruff sees the test arguments as redefinitions.
# ruff: noqa: F811
from __future__ import annotations

from typing import Any

import pytest

from airflow_openrouter._compat import AirflowFailException, TaskDeferred
from airflow_openrouter.batch.items import item_custom_id
from airflow_openrouter.exceptions import OpenRouterError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from tests.batch.support import (  # noqa: F401  (fixtures)
    MODEL,
    Summary,
    batch_emu,
    batch_emulator,
    batch_posts,
    context,
    first_event,
    read_rows,
    wait_until_finished,
)

FALLBACK = "anthropic/claude-3.5-haiku"
REPAIR_PROMPT = "Your previous reply does not match the required JSON format"


def extract(n: int, **kwargs: Any) -> OpenRouterBatchOperator:
    options: dict[str, Any] = {
        "task_id": "extract",
        "items": [{"id": f"doc-{i}", "text": f"Document {i} says hello."} for i in range(n)],
        "prompt": "Summarise: {{ item.text }}",
        "id_field": "id",
        "model": MODEL,
        "response_format": Summary,
        "engine": "concurrent",
        "max_concurrency": 32,
        **kwargs,
    }
    return OpenRouterBatchOperator(**options)


def chat_posts(emulator: Any) -> list[Any]:
    return emulator.requests_to("/chat/completions", method="POST")


@pytest.fixture
def no_http_retries(batch_emu, monkeypatch):
    """Failed requests surface at once (no retry inside the hook): recovery is what sends them again."""
    for name, value in batch_emu.connection_env(max_retries=0).items():
        monkeypatch.setenv(name, value)
    return batch_emu


# --- the concurrent engine -------------------------------------------------------------------------


def test_concurrent_recovery_resends_failed_rows_and_repairs_invalid_ones(no_http_retries, context):
    emulator = no_http_retries
    emulator.fail_next(route="/chat/completions", status=503, times=50)
    emulator.invalid_output_next(times=30)

    manifest = extract(1000).execute(context)

    rows = read_rows(manifest["output_uri"])
    assert manifest["status"] == "completed" and manifest["counts"]["succeeded"] == 1000
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    recovered = {c: r for c, r in rows.items() if r["attempts"] == 2}
    assert len(recovered) == 80 and len(chat_posts(emulator)) == 1080  # one pass, exactly those rows
    earlier = [r["history"][0] for r in recovered.values()]
    assert sorted(e["status"] for e in earlier).count("failed") == 50
    assert [e["cause"] for e in earlier].count("invalid output") == 30
    assert all(r["history"] == [] and r["attempts"] == 1 for c, r in rows.items() if c not in recovered)
    # The invalid replies went back with their validation errors, in the original conversation.
    repairs = [p.body for p in chat_posts(emulator)[1000:] if len(p.body["messages"]) > 1]
    assert len(repairs) == 30
    for body in repairs:
        user, reply, errors = body["messages"]
        assert user["content"].startswith("Summarise: Document") and reply["role"] == "assistant"
        assert errors["content"].startswith(REPAIR_PROMPT)
    recovery = manifest["recovery"]
    assert recovery["rows"] == 80 and recovery["recovered"] == 80 and recovery["max_row_attempts"] == 2
    assert recovery["passes"][0]["attempt"] == 2
    billed = sum(r["usage"]["cost"] for r in rows.values()) + sum(e["cost"] for e in earlier)
    assert manifest["cost_usd"] == pytest.approx(billed) == pytest.approx(emulator.billed_usd)
    second = sum(r["usage"]["cost"] for r in recovered.values())
    assert recovery["cost_usd"] == pytest.approx(second) and second > 0


def test_concurrent_max_row_attempts_1_keeps_failed_and_invalid_rows(no_http_retries, context):
    no_http_retries.fail_next(route="/chat/completions", status=503, times=2)
    no_http_retries.invalid_output_next(times=1)

    with pytest.raises(OpenRouterError, match="3 of 10 items did not succeed"):
        extract(10, max_row_attempts=1, max_concurrency=1).execute(context)

    assert len(chat_posts(no_http_retries)) == 10
    manifest = context["ti"].xcoms["return_value"]
    assert manifest["counts"]["failed"] == 2 and manifest["counts"]["invalid_output"] == 1
    assert manifest["recovery"]["rows"] == 0


def test_concurrent_recovery_does_not_retry_a_permanent_error(no_http_retries, context):
    no_http_retries.fail_next(route="/chat/completions", status=400, times=1)

    with pytest.raises(AirflowFailException, match="1 of 5 items did not succeed"):
        extract(5, max_concurrency=1).execute(context)

    assert len(chat_posts(no_http_retries)) == 5
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["attempts"] == 1 and failed[0]["cause"] == "400 bad_request"


def test_concurrent_fallback_models_move_a_provider_error_to_the_next_model(no_http_retries, context):
    no_http_retries.fail_next(route="/chat/completions", status=502, times=1)

    manifest = extract(4, max_concurrency=1, fallback_models=[FALLBACK]).execute(context)

    assert manifest["status"] == "completed"
    models = [p.body["model"] for p in chat_posts(no_http_retries)]
    assert models == [MODEL] * 4 + [FALLBACK]
    moved = [r for r in read_rows(manifest["output_uri"]).values() if r["attempts"] == 2]
    assert len(moved) == 1 and moved[0]["model"].startswith(FALLBACK)
    assert moved[0]["history"][0]["cause"] == "502 server_error"


def test_the_estimate_includes_the_recovery_pass(no_http_retries, context):
    first_pass = extract(20, dry_run=True, max_tokens=50).execute(context)["estimated_cost_usd"]
    no_http_retries.fail_next(route="/chat/completions", status=503, times=4)

    manifest = extract(20, max_tokens=50).execute(context)

    (estimate,) = manifest["recovery"]["estimates"]
    assert estimate["basis"].startswith("recovery pass 1: 4 items") and estimate["estimated_cost_usd"] > 0
    assert manifest["estimated_cost_usd"] == pytest.approx(first_pass + estimate["estimated_cost_usd"])


def test_a_recovery_pass_that_would_exceed_max_cost_usd_is_not_sent(no_http_retries, context):
    # The first pass's upper bound is the cap: its invalid replies were billed, so their repairs
    # (longer prompts than the first requests) cannot fit under it.
    cap = extract(10, dry_run=True, max_tokens=50).execute(context)["estimated_cost_usd"]
    no_http_retries.invalid_output_next(times=10)

    with pytest.raises(AirflowFailException, match="10 of 10 items did not succeed") as failed:
        extract(10, max_tokens=50, max_cost_usd=cap).execute(context)

    assert len(chat_posts(no_http_retries)) == 10
    # The advice names the change that would recover them, not the inputs.
    advice = str(failed.value).partition(" Results: ")[0]
    assert "A recovery pass of 10 rows was not sent because it would exceed max_cost_usd" in advice
    assert "fix the inputs" not in advice
    manifest = context["ti"].xcoms["return_value"]
    assert manifest["counts"]["invalid_output"] == 10 and manifest["recovery"]["rows"] == 0
    assert manifest["cost_usd"] <= cap


# --- the batch engine ------------------------------------------------------------------------------

ERRORS = [f"doc-{i}" for i in range(0, 1000, 20)]  # 5 % of 1,000: "provider_unavailable", transient
INVALID = [f"doc-{i}" for i in range(10, 600, 20)]  # 3 %: replies that violate the schema


def run_to_the_end(operator: OpenRouterBatchOperator, context: dict[str, Any]) -> Any:
    """execute(), then every deferral's trigger and execute_complete(), until the task returns."""
    try:
        return operator.execute(context)
    except TaskDeferred as deferred:
        pending = deferred
    while True:
        try:
            return operator.execute_complete(context, first_event(pending.trigger))
        except TaskDeferred as deferred:
            pending = deferred


def batch_extract(n: int, **kwargs: Any) -> OpenRouterBatchOperator:
    return extract(n, engine="batch", deferrable=True, **kwargs)


def test_batch_recovery_submits_one_follow_up_batch_holding_exactly_the_failed_and_invalid_rows(
    batch_emu, context
):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS)
    batch_emu.batch_invalid_output_next(custom_ids=INVALID)

    manifest = run_to_the_end(batch_extract(1000), context)

    rows = read_rows(manifest["output_uri"])
    assert manifest["status"] == "completed" and {r["status"] for r in rows.values()} == {"succeeded"}
    first, follow_up = batch_posts(batch_emu)
    assert len(first["requests"]) == 1000
    assert sorted(item_custom_id(r["custom_id"]) for r in follow_up["requests"]) == sorted(ERRORS + INVALID)
    # Its own run tag: a lost POST of the follow-up is proven by its own custom ids.
    assert {r["custom_id"].rpartition("~")[2] for r in follow_up["requests"]} != {
        r["custom_id"].rpartition("~")[2] for r in first["requests"]
    }
    repairs = {item_custom_id(r["custom_id"]): r["body"] for r in follow_up["requests"]}
    for custom_id in INVALID:
        user, reply, errors = repairs[custom_id]["messages"]
        assert reply["role"] == "assistant" and reply["content"]
        assert errors["content"].startswith(REPAIR_PROMPT) and user["content"].startswith("Summarise:")
    assert all(len(repairs[c]["messages"]) == 1 for c in ERRORS)
    assert {c for c, r in rows.items() if r["attempts"] == 2} == set(ERRORS + INVALID)
    assert {rows[c]["history"][0]["cause"] for c in INVALID} == {"invalid output"}
    assert {rows[c]["history"][0]["cause"] for c in ERRORS} == {"provider_unavailable"}
    recovery = manifest["recovery"]
    assert recovery["rows"] == 80 and recovery["recovered"] == 80
    assert manifest["batch_count"] == 2 and len(batch_emu.requests_to("/chat/completions")) == 0
    assert manifest["cost_usd"] == pytest.approx(batch_emu.billed_usd)


def test_a_task_killed_after_the_follow_up_was_submitted_re_attaches_on_retry(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:10])
    operator = batch_extract(200, recovery_engine="batch")
    with pytest.raises(TaskDeferred) as first_wait:
        operator.execute(context)
    with pytest.raises(TaskDeferred):  # the follow-up batch is submitted and waited for...
        operator.execute_complete(context, first_event(first_wait.value.trigger))
    assert len(batch_posts(batch_emu)) == 2  # ...when the worker dies

    context["ti"].try_number = 2  # a retry (or a clear) of the task
    manifest = run_to_the_end(batch_extract(200, recovery_engine="batch"), context)

    assert len(batch_posts(batch_emu)) == 2  # one POST for the follow-up, in all
    rows = read_rows(manifest["output_uri"])
    assert manifest["status"] == "completed" and {r["status"] for r in rows.values()} == {"succeeded"}
    assert {c for c, r in rows.items() if r["attempts"] == 2} == set(ERRORS[:10])


def test_a_lost_answer_to_the_follow_up_post_is_adopted_by_the_retry(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:5])
    operator = batch_extract(100, recovery_engine="batch")
    with pytest.raises(TaskDeferred) as first_wait:
        operator.execute(context)
    batch_emu.drop_answer_next("/batches")  # the follow-up is created, its answer never arrives
    with pytest.raises(OpenRouterError, match="may be the one it created"):
        operator.execute_complete(context, first_event(first_wait.value.trigger))
    (_, lost) = batch_posts(batch_emu)
    wait_until_finished([b.id for b in OpenRouterHook().list_batches(limit=10).data])

    context["ti"].try_number = 2
    manifest = run_to_the_end(batch_extract(100, recovery_engine="batch"), context)

    assert len(batch_posts(batch_emu)) == 2 and len(lost["requests"]) == 5
    assert manifest["status"] == "completed" and manifest["counts"]["succeeded"] == 100


def test_batch_max_row_attempts_1_keeps_todays_behaviour(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:3])

    with pytest.raises(OpenRouterError, match="3 of 60 items did not succeed"):
        run_to_the_end(batch_extract(60, max_row_attempts=1), context)

    assert len(batch_posts(batch_emu)) == 1 and not batch_emu.requests_to("/chat/completions")
    assert context["ti"].xcoms["return_value"]["recovery"]["rows"] == 0


def test_batch_auto_recovers_a_few_rows_from_the_worker_without_another_batch(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:2])
    batch_emu.batch_invalid_output_next(custom_ids=INVALID[:1])

    manifest = run_to_the_end(batch_extract(60), context)

    assert manifest["status"] == "completed" and manifest["counts"]["succeeded"] == 60
    assert len(batch_posts(batch_emu)) == 1
    sent = [p.body for p in chat_posts(batch_emu)]
    assert len(sent) == 3 and sum(len(b["messages"]) == 3 for b in sent) == 1  # one repair turn
    rows = read_rows(manifest["output_uri"])
    assert {c for c, r in rows.items() if r["attempts"] == 2} == {*ERRORS[:2], INVALID[0]}
    assert manifest["recovery"]["recovered"] == 3
    assert manifest["cost_usd"] == pytest.approx(batch_emu.billed_usd)


def test_batch_recovery_engine_concurrent_sends_every_recovered_row_from_the_worker(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS)

    manifest = run_to_the_end(batch_extract(1000, recovery_engine="concurrent"), context)

    assert manifest["counts"]["succeeded"] == 1000 and len(batch_posts(batch_emu)) == 1
    assert len(chat_posts(batch_emu)) == 50


def test_batch_fallback_models_send_a_provider_error_to_the_next_model_in_a_batch_of_its_own(
    batch_emu, context
):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:4])

    manifest = run_to_the_end(batch_extract(80, recovery_engine="batch", fallback_models=[FALLBACK]), context)

    first, follow_up = batch_posts(batch_emu)
    assert first["model"] == MODEL and follow_up["model"] == FALLBACK
    assert sorted(item_custom_id(r["custom_id"]) for r in follow_up["requests"]) == sorted(ERRORS[:4])
    rows = read_rows(manifest["output_uri"])
    assert all(rows[c]["model"].startswith(FALLBACK) for c in ERRORS[:4])
    assert manifest["status"] == "completed"


def test_batch_recovery_does_not_retry_a_permanent_item_error(batch_emu, context):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:1], error_type="invalid_prompt")

    with pytest.raises(AirflowFailException, match="1 of 60 items did not succeed"):
        run_to_the_end(batch_extract(60, recovery_engine="batch"), context)

    assert len(batch_posts(batch_emu)) == 1 and not batch_emu.requests_to("/chat/completions")
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    assert rows[ERRORS[0]]["cause"] == "invalid_prompt" and rows[ERRORS[0]]["transient"] is False
    assert rows[ERRORS[0]]["attempts"] == 1


def test_a_repaired_row_is_not_added_to_the_result_cache(no_http_retries, context, tmp_path):
    cache = f"file://{tmp_path}/cache"
    no_http_retries.invalid_output_next(times=1)
    extract(5, result_cache=cache, max_concurrency=1).execute(context)
    no_http_retries.clear_requests()

    manifest = extract(5, result_cache=cache).execute({"ti": type(context["ti"])(run_id="tuesday")})

    # The four rows answered at once come from the cache; the repaired one is asked again, unrepaired.
    assert manifest["cached"] == 4 and len(chat_posts(no_http_retries)) == 1
    assert len(chat_posts(no_http_retries)[0].body["messages"]) == 1


def test_a_retry_after_a_crash_in_the_recovery_pass_sends_only_the_repairs_not_saved(
    no_http_retries, context, monkeypatch
):
    from airflow_openrouter.batch.checkpoint import PartWriter

    no_http_retries.invalid_output_next(times=4)
    write = PartWriter.write
    recovered: list[str] = []

    def crash_on_the_second_repair(self: PartWriter, row: Any) -> None:
        if row["attempts"] == 2 and recovered:
            raise RuntimeError("worker lost")
        write(self, row)
        if row["attempts"] == 2:
            recovered.append(row["custom_id"])

    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="worker lost"):
        patched.setattr(PartWriter, "write", crash_on_the_second_repair)
        extract(20, max_concurrency=1).execute(context)
    assert len(chat_posts(no_http_retries)) == 22  # 20, the saved repair, the one lost with the worker

    context["ti"].try_number = 2
    manifest = extract(20, max_concurrency=1).execute(context)

    # The three repairs not saved are sent (one of them was answered, and billed, as the worker died:
    # the checkpoint loses at most the rows in flight); the saved repair and every answer are not.
    assert len(chat_posts(no_http_retries)) == 25
    rows = read_rows(manifest["output_uri"])
    assert manifest["status"] == "completed" and sum(r["attempts"] == 2 for r in rows.values()) == 4
    assert rows[recovered[0]]["attempts"] == 2


def test_a_retry_uses_the_resubmitted_batch_rows_not_the_worker_rows_that_failed_again(
    no_http_retries, context
):
    # Two rows fail in the batch, their recovery from the worker fails again (503): the task fails
    # retryably, and its retry resubmits them in a new batch -- whose answers must be the rows.
    emulator = no_http_retries
    emulator.batch_item_errors_next(custom_ids=ERRORS[:2])
    emulator.fail_next(route="/chat/completions", status=503, times=2)
    with pytest.raises(OpenRouterError, match="2 of 60 items did not succeed"):
        run_to_the_end(batch_extract(60), context)
    assert len(batch_posts(emulator)) == 1 and len(chat_posts(emulator)) == 2

    context["ti"].try_number = 2
    manifest = run_to_the_end(batch_extract(60), context)

    assert len(batch_posts(emulator)) == 2  # the retry resubmitted the two rows, and paid for them...
    rows = read_rows(manifest["output_uri"])
    # ...so their answers are the rows (not the worker's failures of the first try).
    assert manifest["status"] == "completed" and {r["status"] for r in rows.values()} == {"succeeded"}
    assert [rows[c]["attempts"] for c in ERRORS[:2]] == [3, 3]  # the batch, the worker, the retry
    assert [h["status"] for h in rows[ERRORS[0]]["history"]] == ["failed", "failed"]
    assert manifest["cost_usd"] == pytest.approx(emulator.billed_usd)


@pytest.mark.xfail(
    strict=True,
    reason="A retry's resubmission batch is attempt 1 with no history: its rows restart at attempts=1, "
    "so a new follow-up pass (a 4th request) follows, and rewrites recovery/2.jsonl under the old tag.",
)
def test_a_retry_after_a_follow_up_batch_failed_rows_again_makes_no_further_recovery_pass(batch_emu, context):
    # max_row_attempts=2: the first pass and the follow-up are the two attempts. The rows the follow-up
    # failed again are resubmitted by the retry (the task failed retryably); that is their third
    # request, and when it fails too no fourth (another follow-up batch) may be sent.
    failing = ERRORS[:3]
    batch_emu.batch_item_errors_next(custom_ids=failing)
    operator = batch_extract(60, recovery_engine="batch")
    with pytest.raises(TaskDeferred) as first_wait:
        operator.execute(context)
    batch_emu.batch_item_errors_next(custom_ids=failing)
    with pytest.raises(TaskDeferred) as follow_up_wait:
        operator.execute_complete(context, first_event(first_wait.value.trigger))
    with pytest.raises(OpenRouterError, match="3 of 60 items did not succeed"):
        operator.execute_complete(context, first_event(follow_up_wait.value.trigger))
    assert len(batch_posts(batch_emu)) == 2

    context["ti"].try_number = 2
    batch_emu.batch_item_errors_next(custom_ids=failing)
    with pytest.raises(OpenRouterError, match="3 of 60 items did not succeed"):
        run_to_the_end(batch_extract(60, recovery_engine="batch"), context)

    assert len(batch_posts(batch_emu)) == 3  # the first pass, the follow-up, the retry's resubmission
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    assert [rows[c]["attempts"] for c in failing] == [3, 3, 3]
    assert len(rows[failing[0]]["history"]) == 2


@pytest.mark.parametrize("recovery_engine", ["batch", "auto"])
def test_a_clear_after_a_run_that_recovered_rows_pays_nothing_and_keeps_the_recovered_rows(
    batch_emu, context, recovery_engine
):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:3])
    if recovery_engine == "auto":  # a repair turn from the worker too
        batch_emu.batch_invalid_output_next(custom_ids=INVALID[:1])
    first = run_to_the_end(batch_extract(60, recovery_engine=recovery_engine), context)
    billed, posts, chats = batch_emu.billed_usd, len(batch_posts(batch_emu)), len(chat_posts(batch_emu))
    assert first["status"] == "completed" and first["recovery"]["recovered"] >= 3

    context["ti"].try_number = 2  # the succeeded task is cleared
    again = run_to_the_end(batch_extract(60, recovery_engine=recovery_engine), context)

    assert (len(batch_posts(batch_emu)), len(chat_posts(batch_emu))) == (posts, chats)
    assert batch_emu.billed_usd == pytest.approx(billed)
    assert again["counts"] == first["counts"] and again["recovery"]["passes"] == first["recovery"]["passes"]
    assert again["cost_usd"] == pytest.approx(billed)
    rows = read_rows(again["output_uri"])
    assert {c for c, r in rows.items() if r["attempts"] == 2} >= set(ERRORS[:3])


def test_a_retry_counts_what_the_worker_recovery_pass_was_billed_against_max_cost_usd(
    no_http_retries, context
):
    from airflow_openrouter.exceptions import OpenRouterCostLimitError

    emulator = no_http_retries
    one_item = batch_extract(1, max_tokens=50, dry_run=True).execute(
        {"ti": type(context["ti"])(run_id="dry")}
    )
    emulator.batch_item_errors_next(custom_ids=ERRORS[:2])
    emulator.batch_invalid_output_next(custom_ids=INVALID[:2])
    emulator.fail_next(route="/chat/completions", status=503, times=1)  # doc-0 fails again on the worker
    with pytest.raises(OpenRouterError, match="1 of 60 items did not succeed"):
        run_to_the_end(batch_extract(60, max_tokens=50, max_concurrency=1), context)
    rows = read_rows(context["ti"].xcoms["return_value"]["output_uri"])
    worker_usd = sum((r["usage"] or {}).get("cost") or 0.0 for r in rows.values() if r["attempts"] == 2)
    assert worker_usd > 0 and rows["doc-0"]["status"] == "failed"
    spent = emulator.billed_usd
    # Room for the retry's resubmission of doc-0 only if the worker pass's bill is forgotten.
    cap = spent + one_item["estimated_cost_usd"] - worker_usd / 2

    context["ti"].try_number = 2
    with pytest.raises(OpenRouterCostLimitError):
        run_to_the_end(batch_extract(60, max_tokens=50, max_concurrency=1, max_cost_usd=cap), context)
    assert len(batch_posts(emulator)) == 1


def test_a_retry_after_the_follow_up_batch_expired_sends_the_repair_turns_again_not_the_first_requests(
    batch_emu, context
):
    batch_emu.batch_invalid_output_next(custom_ids=INVALID[:2])
    operator = batch_extract(60, recovery_engine="batch")
    with pytest.raises(TaskDeferred) as first_wait:
        operator.execute(context)
    batch_emu.batch_outcome_next("expired")  # the follow-up batch expires
    with pytest.raises(TaskDeferred) as follow_up_wait:
        operator.execute_complete(context, first_event(first_wait.value.trigger))
    with pytest.raises(OpenRouterError):
        operator.execute_complete(context, first_event(follow_up_wait.value.trigger))
    _, follow_up = batch_posts(batch_emu)

    context["ti"].try_number = 2
    manifest = run_to_the_end(batch_extract(60, recovery_engine="batch"), context)

    (*_, resent) = batch_posts(batch_emu)
    assert len(batch_posts(batch_emu)) == 3  # the follow-up, once more: no further pass

    def sent(post: dict[str, Any]) -> list[Any]:
        return [(r["custom_id"], r["body"]["messages"]) for r in post["requests"]]

    assert sent(resent) == sent(follow_up)  # the repair turns, under the pass's own tag
    rows = read_rows(manifest["output_uri"])
    assert manifest["status"] == "completed" and [rows[c]["attempts"] for c in INVALID[:2]] == [2, 2]


def test_the_api_key_is_in_no_file_a_recovery_pass_writes(batch_emu, context, tmp_path):
    batch_emu.batch_item_errors_next(custom_ids=ERRORS[:3])
    batch_emu.batch_invalid_output_next(custom_ids=INVALID[:2])

    manifest = run_to_the_end(batch_extract(60, recovery_engine="batch"), context)

    assert manifest["recovery"]["recovered"] == 5
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.parent.name == "recovery" for p in files)  # the pass's recovery file is among them
    assert not [p for p in files if batch_emu.api_key in p.read_text()]
    assert batch_emu.api_key not in str(manifest)


def test_the_failure_says_max_cost_usd_held_back_the_recovery_pass(batch_emu, context):
    cap = batch_extract(10, dry_run=True, max_tokens=50).execute(context)["estimated_cost_usd"]
    batch_emu.batch_invalid_output_next(custom_ids=[f"doc-{i}" for i in range(10)])

    with pytest.raises(AirflowFailException, match="10 of 10 items did not succeed") as failed:
        run_to_the_end(batch_extract(10, max_tokens=50, max_cost_usd=cap, recovery_engine="batch"), context)

    assert len(batch_posts(batch_emu)) == 1  # the repairs would exceed the cap: not sent
    advice = str(failed.value).partition(" Results: ")[0]  # (the results path names this test)
    assert "max_cost_usd" in advice
