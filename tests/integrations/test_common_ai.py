"""The ``openrouter`` batch adapter of common-ai: common-ai's own ``@task.llm_batch`` in ``dag.test()`` runs,
and the adapter's promises (checked before paying, never paying twice, no silent cancel) against the
emulator through the real hook."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

if sys.version_info < (3, 11):
    pytest.skip(
        "common-ai 1.0.0 requires Python >= 3.11 (its code uses datetime.UTC); the floor run (Airflow 3.1 "
        "on Python 3.10) cannot install it",
        allow_module_level=True,
    )

from airflow.providers.common.ai.batch import dispatch
from airflow.providers.common.ai.batch.base import BatchAdapter, RawResultItem
from airflow.providers.common.ai.batch.output_schema import build_output_spec, validate_extracted_output
from airflow.providers.common.ai.exceptions import (
    BatchProviderNotYetSupportedError,
    LLMBatchInputError,
    LLMBatchLimitExceededError,
    LLMBatchModelMismatchError,
)
from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator
from airflow.providers.common.ai.triggers.llm_batch import LLMBatchTrigger

from airflow_openrouter.batch.state import run_tag
from airflow_openrouter.exceptions import OpenRouterError, OpenRouterNotFoundError
from airflow_openrouter.integrations.common_ai import OpenRouterBatchAdapter, OpenRouterCancelUnsupportedError
from tests.conftest import TEST_DAGS, load_dag, xcom_value
from tests.dags.common_ai_batch import DOCUMENTS, Triage

DAG_FILE = TEST_DAGS / "common_ai_batch.py"
MODEL = "openai/gpt-4o-mini"
KEY16 = "0123456789abcdef"
FINGERPRINT = "f" * 64
STRUCTURED = build_output_spec(Triage)
TEXT = build_output_spec(str)


def adapter_for(emulator, **kwargs) -> OpenRouterBatchAdapter:
    """The adapter as common-ai builds it: from the connection's password and host only."""
    return OpenRouterBatchAdapter(api_key=emulator.api_key, base_url=emulator.base_url, **kwargs)


def submit(adapter, prompts, *, key16=KEY16, fingerprint=FINGERPRINT, spec=TEXT, **kwargs) -> str:
    """validate_requests then submit, in common-ai's order; returns the batch id."""
    requests = [{"prompt": p} for p in prompts]
    adapter.validate_requests(requests, model=MODEL, output_spec=spec, idempotency_key=key16, **kwargs)
    result = adapter.submit(
        requests,
        model=MODEL,
        idempotency_key=key16,
        input_fingerprint=fingerprint,
        output_spec=spec,
        **kwargs,
    )
    assert result.provider_input_ref is None
    return result.batch_id


def posts(emulator) -> list[dict]:
    return [r.body for r in emulator.requests_to("/batches", method="POST")]


def logged(capsys, caplog) -> str:
    return capsys.readouterr().out + caplog.text


# --- the contract ---------------------------------------------------------------------------------


def test_the_adapter_implements_common_ais_abstract_interface_with_its_signatures():
    ours = {name for name in BatchAdapter.__abstractmethods__ if name in vars(OpenRouterBatchAdapter)}

    assert ours == set(BatchAdapter.__abstractmethods__)  # fails loudly when common-ai adds a method
    for name in BatchAdapter.__abstractmethods__:
        theirs = list(inspect.signature(getattr(BatchAdapter, name)).parameters)
        mine = list(inspect.signature(getattr(OpenRouterBatchAdapter, name)).parameters)
        assert mine[: len(theirs)] == theirs, name


def test_common_ai_finds_the_adapter_by_its_entry_point_for_openrouter_model_ids():
    assert dispatch._entry_point_adapter("openrouter") is OpenRouterBatchAdapter
    assert dispatch.get_adapter_class("openrouter", f"openrouter:{MODEL}") is OpenRouterBatchAdapter
    assert dispatch.get_adapter_class("pydanticai", f"openrouter:{MODEL}") is OpenRouterBatchAdapter
    with pytest.raises(BatchProviderNotYetSupportedError, match="openrouter"):
        dispatch.get_adapter_class("http", f"openrouter:{MODEL}")


def test_a_host_that_is_not_openrouter_is_named_in_a_warning(caplog, capsys):
    OpenRouterBatchAdapter(api_key="k", base_url="https://api.openai.com/v1").close()

    assert "sends this batch to https://api.openai.com/v1, which is not OpenRouter" in logged(capsys, caplog)


def test_without_a_key_the_adapter_fails_naming_the_fix_and_the_environment_key_stands_in(
    instant_emulator, monkeypatch, caplog, capsys
):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(OpenRouterError, match="Set the password \\(API Key\\)") as missing:
        OpenRouterBatchAdapter(api_key=None, base_url=instant_emulator.base_url)
    assert "OPENROUTER_API_KEY" in str(missing.value)

    key = "sk-or-v1-" + "ab12" * 16
    monkeypatch.setenv("OPENROUTER_API_KEY", key + "\n")  # read from a secret file: a trailing newline
    adapter = OpenRouterBatchAdapter(api_key="", base_url=instant_emulator.base_url)
    submit(adapter, ["x"])

    (post,) = instant_emulator.requests_to("/batches", method="POST")
    assert post.headers["authorization"] == f"Bearer {key}"
    assert "using OPENROUTER_API_KEY from the environment" in logged(capsys, caplog)
    assert key not in logged(capsys, caplog)


# --- @task.llm_batch in a DAG run -----------------------------------------------------------------


@pytest.fixture
def triggers_run(monkeypatch):
    """The triggers dag.test() ran inline (proof that the task deferred), as (classpath, kwargs)."""
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    seen: list[tuple[str, dict]] = []
    original = InProcessTestSupervisor.run_trigger_in_process.__func__

    def spy(cls, *, trigger, ti):
        seen.append(trigger.serialize())
        return original(cls, trigger=trigger, ti=ti)

    monkeypatch.setattr(InProcessTestSupervisor, "run_trigger_in_process", classmethod(spy))
    return seen


def run_llm_batch_dag():
    dag_run = load_dag(DAG_FILE, "common_ai_batch").test()
    (ti,) = dag_run.get_task_instances()
    return dag_run, ti


def result_rows(manifest) -> list[dict]:
    path = Path(manifest["result_uri"].removeprefix("file://"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_llm_batch_submits_once_defers_resumes_and_lands_common_ais_manifest_and_rows(
    airflow_db, instant_emulator, triggers_run
):
    dag_run, ti = run_llm_batch_dag()

    assert dag_run.state == "success" and ti.try_number == 1
    (classpath, trigger_kwargs) = triggers_run[0]
    assert classpath.endswith("LLMBatchTrigger") and trigger_kwargs["adapter"] == "openrouter"
    manifest = xcom_value(dag_run, "triage")
    (post,) = posts(instant_emulator)
    key16 = manifest["custom_id_prefix"]
    tag = post["requests"][0]["custom_id"].rsplit("~", 1)[1]
    assert post["model"] == MODEL and post["completion_window"] == "24h"
    assert [r["custom_id"] for r in post["requests"]] == [f"{key16}-{i}~{tag}" for i in range(len(DOCUMENTS))]
    body = post["requests"][0]["body"]
    assert "model" not in body and body["max_tokens"] == 200 and body["temperature"] == 0.1
    assert body["messages"] == [
        {"role": "system", "content": "Route the ticket to a team."},
        {"role": "user", "content": f"Triage this ticket: {DOCUMENTS[0]}"},
    ]
    schema = body["response_format"]["json_schema"]
    assert schema["strict"] is True and schema["schema"]["additionalProperties"] is False
    assert manifest["batch_id"] == trigger_kwargs["batch_id"] == xcom_value(dag_run, "triage", key="batch_id")
    assert manifest["adapter"] == "openrouter" and manifest["request_count"] == len(DOCUMENTS)
    assert manifest["counts"]["succeeded"] == len(DOCUMENTS) and manifest["terminal_reason"] == "succeeded"
    rows = result_rows(manifest)
    assert sorted(r["index"] for r in rows) == list(range(len(DOCUMENTS)))
    for row in rows:
        assert row["status"] == "success" and row["custom_id"] == f"{key16}-{row['index']}"
        Triage.model_validate(row["output"])
        assert row["usage"]["cost"] > 0 and row["usage"]["input_tokens"] > 0


def test_a_retry_after_a_failed_results_fetch_re_attaches_without_a_second_post(airflow_db, instant_emulator):
    instant_emulator.fail_next(route="/batches/*/results", status=401, times=1)

    dag_run, ti = run_llm_batch_dag()

    assert dag_run.state == "success" and ti.try_number == 2
    assert len(posts(instant_emulator)) == 1
    assert len(instant_emulator.requests_to("/batches/*/results")) == 2
    assert xcom_value(dag_run, "triage")["counts"]["succeeded"] == len(DOCUMENTS)


def test_a_lost_submit_answer_is_proven_by_the_run_tag_and_adopted_by_the_retry(
    airflow_db, instant_emulator, capsys, caplog
):
    instant_emulator.drop_answer_next(route="/batches", method="POST")  # created; the answer never arrives

    dag_run, ti = run_llm_batch_dag()

    assert dag_run.state == "success" and ti.try_number == 2
    assert len(posts(instant_emulator)) == 1  # the retry paid nothing more
    manifest = xcom_value(dag_run, "triage")
    assert manifest["counts"]["succeeded"] == len(DOCUMENTS)
    assert f"Adopting batch {manifest['batch_id']}" in logged(capsys, caplog)


# --- never paying twice: find_orphaned_batch ------------------------------------------------------


def test_an_orphaned_batch_is_adopted_only_when_its_results_carry_this_runs_tag(instant_emulator):
    since = datetime.now(timezone.utc).isoformat()
    adapter = adapter_for(instant_emulator)
    prompts = ["a", "b", "c"]
    ours = submit(adapter, prompts)
    submit(adapter, prompts, key16="fedcba9876543210")  # a sibling task: same model and size
    submit(adapter, prompts, fingerprint="e" * 64)  # this task, cleared with other inputs

    assert adapter.find_orphaned_batch(KEY16, FINGERPRINT, not_before=since) == ours
    assert adapter.find_orphaned_batch("aaaaaaaaaaaaaaaa", FINGERPRINT, not_before=since) is None
    assert len(posts(instant_emulator)) == 3  # looking never submits


def test_a_running_look_alike_cannot_be_proven_so_the_lookup_raises(paused_emulator):
    since = datetime.now(timezone.utc).isoformat()
    adapter = adapter_for(paused_emulator)
    sibling = submit(adapter, ["a", "b"], key16="fedcba9876543210")
    adapter.validate_requests(
        [{"prompt": "a"}, {"prompt": "b"}], model=MODEL, output_spec=TEXT, idempotency_key=KEY16
    )

    with pytest.raises(OpenRouterError, match=f"batch\\(es\\) {sibling} .* may be the one it created"):
        adapter.find_orphaned_batch(KEY16, FINGERPRINT, not_before=since)
    assert len(posts(paused_emulator)) == 1


# --- checked before anything is paid for ---------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "kwargs", "error", "says"),
    [
        ([{"prompt": "x"}] * 5_001, {}, LLMBatchLimitExceededError, "at most 5,000 requests"),
        (
            [
                {
                    "prompt": "x",
                    "system_prompt": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                }
            ],
            {},
            LLMBatchInputError,
            "Request 0: system_prompt must be text",
        ),
        (
            [{"prompt": "x", "params": {"messages": []}}],
            {},
            LLMBatchInputError,
            "Request 0's params set 'messages'",
        ),
        ([{"prompt": "x"}], {"request_params": {"max_tokens": 5}}, LLMBatchInputError, "set 'max_tokens'"),
        (
            [{"prompt": "x"}],
            {"request_params": {"extra_body": {"messages": [{"role": "user", "content": "other"}]}}},
            LLMBatchInputError,
            "request_params' extra_body set 'messages'",
        ),
        (
            [{"prompt": "x", "params": {"provider": {"only": ["openai"]}}}],
            {},
            LLMBatchInputError,
            "whole batch",
        ),
        (
            [{"prompt": "x"}, {"prompt": "y", "params": {"temperature": 5}}],
            {},
            LLMBatchInputError,
            "Item 1 (custom_id '0123456789abcdef-1')",
        ),
        (
            [{"prompt": "x", "model": "openrouter:anthropic/claude-3.5-haiku"}],
            {},
            LLMBatchModelMismatchError,
            "one",
        ),
        ([{"prompt": "x", "model": "openai:gpt-5"}], {}, LLMBatchModelMismatchError, "'openrouter:<model>'"),
    ],
    ids=[
        "count",
        "image",
        "messages",
        "max_tokens",
        "extra_body",
        "per-request-provider",
        "range",
        "other-model",
        "prefix",
    ],
)
def test_requests_openrouter_cannot_take_are_refused_before_any_request(
    instant_emulator, requests, kwargs, error, says
):
    adapter = adapter_for(instant_emulator)

    with pytest.raises(error) as refused:
        adapter.validate_requests(requests, model=MODEL, output_spec=TEXT, idempotency_key=KEY16, **kwargs)

    assert says in str(refused.value)
    assert instant_emulator.requests == []


def test_a_custom_id_longer_than_the_batch_apis_64_characters_is_refused(instant_emulator):
    adapter = adapter_for(instant_emulator)
    # "{key}-{index}~{10-character run tag}": a 51-character key makes 64 characters, a 52 one 65.
    adapter.validate_requests([{"prompt": "x"}], model=MODEL, output_spec=TEXT, idempotency_key="k" * 51)

    with pytest.raises(LLMBatchLimitExceededError, match="exceeds the 53-character limit"):
        adapter.validate_requests([{"prompt": "x"}], model=MODEL, output_spec=TEXT, idempotency_key="k" * 52)
    assert instant_emulator.requests == []


def test_more_than_200_mb_is_refused_naming_how_many_requests_fit(instant_emulator):
    adapter = adapter_for(instant_emulator)
    five_mb = "x" * (5 * 1024 * 1024)  # one string, shared: the test holds 5 MB, the spool writes 200+

    with pytest.raises(LLMBatchLimitExceededError, match=r"200 MB in all\): only the first 39 fit"):
        adapter.validate_requests(
            [{"prompt": five_mb}] * 41, model=MODEL, output_spec=TEXT, idempotency_key=KEY16
        )
    assert instant_emulator.requests == []


def test_a_completion_window_openrouter_does_not_offer_is_refused_before_the_post(instant_emulator):
    adapter = adapter_for(instant_emulator)

    with pytest.raises(LLMBatchInputError, match="only '24h'"):
        submit(adapter, ["x"], completion_window="48h")
    assert posts(instant_emulator) == []


# --- structured output ----------------------------------------------------------------------------


def test_the_output_directive_is_the_strict_json_schema_of_the_output_type(instant_emulator):
    adapter = adapter_for(instant_emulator)

    directive = adapter.build_output_directive(STRUCTURED)

    wire = directive["response_format"]["json_schema"]
    assert wire["name"] == "Triage" and wire["strict"] is True
    assert sorted(wire["schema"]["required"]) == ["confidence", "team", "urgent"]
    assert wire["schema"]["properties"]["confidence"]["type"] == ["number", "null"]
    assert "default" not in wire["schema"]["properties"]["confidence"]
    assert adapter.build_output_directive(TEXT) == {}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            '{"team": "billing", "urgent": true, "confidence": null}',
            {"team": "billing", "urgent": True, "confidence": 0.5},
        ),
        (
            '```json\n{"team": "ops", "urgent": false, "confidence": 0.9}\n```',
            {"team": "ops", "urgent": False, "confidence": 0.9},
        ),
    ],
    ids=["null-optional-takes-its-default", "fenced"],
)
def test_a_structured_reply_validates_against_the_output_type_as_written(instant_emulator, reply, expected):
    adapter = adapter_for(instant_emulator)
    raw = RawResultItem("k-0", 0, "success", MODEL, None, "stop", None, reply)

    outcome = validate_extracted_output(adapter.extract_output(raw, STRUCTURED), STRUCTURED)

    assert outcome.ok and outcome.value == expected


def test_a_reply_that_is_not_json_is_an_invalid_output_row_that_keeps_the_text(instant_emulator):
    adapter = adapter_for(instant_emulator)
    raw = RawResultItem("k-0", 0, "success", MODEL, None, "stop", None, "Sorry, I cannot.")

    outcome = validate_extracted_output(adapter.extract_output(raw, STRUCTURED), STRUCTURED)
    absent = adapter.extract_output(RawResultItem("k-1", 1, "success", MODEL, None, "stop", None, None), TEXT)

    assert not outcome.ok and outcome.raw_text == "Sorry, I cannot."
    assert absent.kind == "absent"


# --- polling and results --------------------------------------------------------------------------


def test_a_batch_not_yet_visible_is_asked_again_and_a_vanished_one_is_common_ais_404(instant_emulator):
    instant_emulator.batch_not_found_for(1.0)
    adapter = adapter_for(instant_emulator, sleep=lambda _: time.sleep(0.6))
    batch_id = submit(adapter, ["x"])

    assert adapter.get_batch(batch_id).status == "completed"

    adapter = adapter_for(instant_emulator, sleep=lambda _: None)
    with pytest.raises(OpenRouterNotFoundError) as gone:
        adapter.get_batch("batch_does_not_exist")
    assert LLMBatchOperator._is_not_found_error(gone.value)  # common-ai then submits afresh
    assert len(instant_emulator.requests_to("/batches/batch_does_not_exist")) == 4


def test_results_map_item_errors_and_billed_cost_and_an_unknown_id_raises_at_call_time(instant_emulator):
    tag = run_tag(KEY16, FINGERPRINT)
    instant_emulator.batch_item_errors_next(custom_ids=[f"{KEY16}-1~{tag}"])
    adapter = adapter_for(instant_emulator)
    batch_id = submit(adapter, ["a", "b", "c"])

    items = sorted(adapter.iter_results(batch_id), key=lambda item: item.index)

    assert [(i.index, i.custom_id, i.provider_status) for i in items] == [
        (0, f"{KEY16}-0", "success"),
        (1, f"{KEY16}-1", "errored"),
        (2, f"{KEY16}-2", "success"),
    ]
    assert items[1].error["stage"] == "provider" and items[1].error["message"]
    assert items[0].usage["cost"] > 0 and items[0].raw
    with pytest.raises(OpenRouterNotFoundError):
        adapter_for(instant_emulator, sleep=lambda _: None).iter_results("batch_does_not_exist")


# --- no cancel endpoint ---------------------------------------------------------------------------

CANNOT_CANCEL = "has no batch cancel endpoint: batch {} keeps running and is billed"


def common_ai_trigger(batch_id: str, *, end_time: float) -> LLMBatchTrigger:
    """common-ai's trigger for an openrouter batch, as its operator defers with cancelling on."""
    return LLMBatchTrigger(
        llm_conn_id="openrouter_default",
        adapter="openrouter",
        batch_id=batch_id,
        poll_interval=30,
        end_time=end_time,
        timeout=60,
        cancel_on_kill=True,
        cancel_on_timeout=True,
    )


def test_cancel_says_the_batch_keeps_running_and_is_billed_and_sends_nothing(instant_emulator):
    adapter = adapter_for(instant_emulator)

    with pytest.raises(OpenRouterCancelUnsupportedError, match=CANNOT_CANCEL.format("batch_x")) as refused:
        adapter.cancel_batch("batch_x")

    assert isinstance(refused.value, BatchProviderNotYetSupportedError)  # what common-ai's callers expect
    assert instant_emulator.requests == []


def test_cancel_on_kill_of_a_deferred_task_logs_that_it_cannot_cancel(paused_emulator, capsys, caplog):
    batch_id = submit(adapter_for(paused_emulator), ["x"])

    asyncio.run(common_ai_trigger(batch_id, end_time=time.time() + 3600).on_kill())

    assert CANNOT_CANCEL.format(batch_id) in logged(capsys, caplog)
    assert [r.method for r in paused_emulator.requests] == ["POST"]  # no DELETE, no cancel attempt


def test_on_kill_of_a_running_task_logs_that_it_cannot_cancel(paused_emulator, capsys, caplog):
    batch_id = submit(adapter_for(paused_emulator), ["x"])
    operator = LLMBatchOperator(
        task_id="t",
        requests=["x"],
        result_path="file:///tmp/unused",
        llm_conn_id="openrouter_default",
        model_id=f"openrouter:{MODEL}",
        cancel_on_kill=True,
    )
    operator.batch_id = batch_id

    operator.on_kill()

    assert CANNOT_CANCEL.format(batch_id) in logged(capsys, caplog)
    assert [r.method for r in paused_emulator.requests] == ["POST"]


def test_a_timeout_that_should_cancel_reports_that_the_batch_still_runs_and_bills(paused_emulator):
    batch_id = submit(adapter_for(paused_emulator), ["x"])
    trigger = common_ai_trigger(batch_id, end_time=time.time() - 1)  # the deadline has passed

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())

    assert event["status"] == "timeout"
    assert CANNOT_CANCEL.format(batch_id) in event["message"] and "A retry re-attaches" in event["message"]
