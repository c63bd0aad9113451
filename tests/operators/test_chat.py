"""OpenRouterChatOperator run task-by-task (render, then execute) against the emulator, through the real hook."""

from __future__ import annotations

import base64
import threading

import pytest
from airflow.sdk import DAG
from pydantic import BaseModel

from airflow_openrouter.exceptions import OpenRouterConnectionError, OpenRouterOutputValidationError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.operators.chat import OpenRouterChatOperator
from airflow_openrouter.prompts import TEMPLATE_EXTENSIONS, PromptRenderError
from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import TEST_DAGS
from tests.operators.conftest import MODEL, run_task


class Ticket(BaseModel):
    category: str
    urgent: bool
    summary: str | None = None


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat_bodies(emulator):
    return [r.body for r in emulator.requests_to("/chat/completions")]


# --- structured output and repair ------------------------------------------------------------------


def test_invalid_reply_is_repaired_once_with_the_errors_sent_back(emulator):
    emulator.invalid_output_next(times=1)
    op = OpenRouterChatOperator(task_id="triage", prompt="Triage: printer on fire", response_format=Ticket)

    value, _ = run_task(op)

    assert Ticket.model_validate(value) and type(value) is dict
    first, second = chat_bodies(emulator)
    bad_reply, repair_request = second["messages"][-2:]
    assert second["messages"][:-2] == first["messages"]
    assert bad_reply["role"] == "assistant"
    assert repair_request["role"] == "user"
    assert "- $." in repair_request["content"]  # one "path: message" line per error


def test_usage_after_a_repair_counts_both_calls_and_sums_their_billed_cost(emulator):
    emulator.invalid_output_next(times=1)
    op = OpenRouterChatOperator(task_id="triage", prompt="Triage: printer on fire", response_format=Ticket)

    _, ti = run_task(op)

    usage = ti.xcoms["openrouter_usage"]
    assert usage["attempts"] == 2
    assert len(set(usage["generation_ids"])) == 2
    assert usage["generation_id"] == usage["generation_ids"][-1]
    with OpenRouterHook() as hook:
        billed = sum(hook.get_generation(g).total_cost for g in usage["generation_ids"])
    assert usage["cost"] == pytest.approx(billed)


def test_reply_still_invalid_after_max_repair_attempts_fails_the_task(emulator):
    emulator.invalid_output_next(times=3)
    op = OpenRouterChatOperator(
        task_id="triage", prompt="Triage: printer on fire", response_format=Ticket, max_repair_attempts=2
    )

    with pytest.raises(OpenRouterOutputValidationError) as info:
        run_task(op)

    assert info.value.attempts == 3
    assert info.value.errors and all(e.startswith("$") for e in info.value.errors)
    assert info.value.raw_output
    assert len(chat_bodies(emulator)) == 3


def test_no_repair_when_max_repair_attempts_is_zero(emulator):
    emulator.invalid_output_next(times=1)
    op = OpenRouterChatOperator(task_id="t", prompt="Triage", response_format=Ticket, max_repair_attempts=0)

    with pytest.raises(OpenRouterOutputValidationError):
        run_task(op)

    assert len(chat_bodies(emulator)) == 1


@pytest.mark.parametrize(
    ("provider", "sent"),
    [
        (None, {"require_parameters": True}),
        ({"order": ["openai"], "allow_fallbacks": False}, {"order": ["openai"], "allow_fallbacks": False}),
    ],
)
def test_structured_output_requires_parameters_unless_the_user_chose_the_routing(emulator, provider, sent):
    op = OpenRouterChatOperator(task_id="t", prompt="Triage", response_format=Ticket, provider=provider)

    run_task(op)

    assert chat_bodies(emulator)[0]["provider"] == sent


def test_text_reply_sends_no_response_format_and_no_routing_constraint(emulator):
    value, _ = run_task(OpenRouterChatOperator(task_id="t", prompt="Say hello"))

    [body] = chat_bodies(emulator)
    assert "response_format" not in body and "provider" not in body
    assert isinstance(value, str) and value


def test_json_schema_dict_output_is_validated_and_returned_as_a_dict(emulator):
    schema = {
        "title": "Labels",
        "type": "object",
        "properties": {"labels": {"type": "array", "items": {"type": "string"}}},
        "required": ["labels"],
    }

    value, _ = run_task(OpenRouterChatOperator(task_id="t", prompt="Label it", response_format=schema))

    assert isinstance(value["labels"], list)
    assert chat_bodies(emulator)[0]["response_format"]["json_schema"]["name"] == "Labels"


# --- streaming -------------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", [None, Ticket], ids=["text", "schema"])
def test_streaming_returns_the_same_value_as_not_streaming(emulator, response_format):
    def run(stream):
        op = OpenRouterChatOperator(
            task_id="t", prompt="Triage: disk full", response_format=response_format, seed=7, stream=stream
        )
        return run_task(op)

    (plain, plain_ti), (streamed, streamed_ti) = run(False), run(True)

    assert streamed == plain
    assert (
        streamed_ti.xcoms["openrouter_usage"]["completion_tokens"]
        == (plain_ti.xcoms["openrouter_usage"]["completion_tokens"])
    )
    assert [b.get("stream") for b in chat_bodies(emulator)] == [None, True]


def test_on_kill_closes_the_in_flight_stream(monkeypatch):
    with OpenRouterEmulator(token_delay_ms=200) as slow:
        for name, value in slow.connection_env(default_model=MODEL).items():
            monkeypatch.setenv(name, value)
        op = OpenRouterChatOperator(task_id="t", prompt="Write a long essay", max_tokens=400, stream=True)
        errors: list[BaseException] = []

        def execute():
            try:
                run_task(op)
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=execute)
        worker.start()
        while op._active_stream is None and worker.is_alive():
            worker.join(0.05)
        op.on_kill()
        worker.join(30)

    assert not worker.is_alive()
    assert isinstance(errors[0], OpenRouterConnectionError)


# --- prompts ---------------------------------------------------------------------------------------


def test_undefined_variable_fails_before_any_request_naming_variable_and_template(emulator):
    with DAG("chat_undefined", schedule=None, template_searchpath=[str(TEST_DAGS)]):
        op = OpenRouterChatOperator(
            task_id="t", prompt="prompts/chat_needs_ticket.j2", prompt_vars={"team": "infra"}
        )

    with pytest.raises(PromptRenderError) as info:
        run_task(op)

    assert (info.value.variable, info.value.template_name, info.value.lineno) == (
        "ticket",
        "prompts/chat_needs_ticket.j2",
        3,
    )
    assert "'ticket' is undefined" in str(info.value)
    assert emulator.requests == []


def test_undefined_variable_in_inline_system_prompt_names_the_field(emulator):
    op = OpenRouterChatOperator(task_id="t", prompt="Hi", system_prompt="You serve {{ customer }}.")

    with pytest.raises(PromptRenderError, match=r"'inline system_prompt', line 1: 'customer' is undefined"):
        run_task(op)

    assert emulator.requests == []


def test_prompt_vars_and_task_context_are_both_in_scope(emulator):
    op = OpenRouterChatOperator(
        task_id="t",
        system_prompt="Run {{ run_id }}.",
        messages=[{"role": "user", "content": "Earlier question about {{ topic }}"}],
        prompt="Follow-up about {{ topic }}",
        prompt_vars={"topic": "{{ run_id }}-topic"},  # a literal in the DAG file is a template too
    )

    run_task(op)

    assert chat_bodies(emulator)[0]["messages"] == [
        {"role": "system", "content": "Run manual__test."},
        {"role": "user", "content": "Earlier question about manual__test-topic"},
        {"role": "user", "content": "Follow-up about manual__test-topic"},
    ]


def test_local_image_is_sent_as_a_data_url_with_its_mime_type(emulator, tmp_path):
    image = tmp_path / "receipt.jpeg"
    image.write_bytes(b"\xff\xd8\xff fake jpeg")
    op = OpenRouterChatOperator(task_id="t", prompt="What is the total?", images=[str(image)])

    run_task(op)

    text, image_part = chat_bodies(emulator)[0]["messages"][-1]["content"]
    assert text == {"type": "text", "text": "What is the total?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == b"\xff\xd8\xff fake jpeg"


def test_operator_template_ext_is_the_prompt_module_default():
    assert tuple(OpenRouterChatOperator.template_ext) == TEMPLATE_EXTENSIONS


# --- tools, model, request fields ------------------------------------------------------------------


def test_tool_calls_are_returned_as_structured_data(emulator):
    op = OpenRouterChatOperator(task_id="t", prompt="What is the weather in Oslo?", tools=[WEATHER_TOOL])

    value, _ = run_task(op)

    [call] = value
    assert call["name"] == "get_weather"
    assert isinstance(call["id"], str)
    assert isinstance(call["arguments"]["city"], str)


def test_missing_model_fails_naming_the_argument_and_the_connection(openrouter_emulator):
    op = OpenRouterChatOperator(task_id="t", prompt="Hi")  # and the connection has no default_model

    with pytest.raises(ValueError, match=r"pass model=\.\.\. or set default_model .* 'openrouter_default'"):
        run_task(op)

    assert openrouter_emulator.requests == []


def test_explicit_model_and_sampling_fields_are_sent_as_given(emulator):
    op = OpenRouterChatOperator(
        task_id="t",
        prompt="Hi",
        model="anthropic/claude-3.5-haiku",
        seed=3,
        max_tokens=20,
        temperature=0.2,
        stop=["\n\n"],
        user="analytics",
        extra_body={"transforms": ["middle-out"]},
    )

    run_task(op)

    body = chat_bodies(emulator)[0]
    assert body["model"] == "anthropic/claude-3.5-haiku"
    assert {k: body[k] for k in ("seed", "max_tokens", "temperature", "stop", "user", "transforms")} == {
        "seed": 3,
        "max_tokens": 20,
        "temperature": 0.2,
        "stop": ["\n\n"],
        "user": "analytics",
        "transforms": ["middle-out"],
    }
    assert "top_p" not in body  # unset fields are left out


def test_negative_max_repair_attempts_is_rejected_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="max_repair_attempts"):
        OpenRouterChatOperator(task_id="t", prompt="x", max_repair_attempts=-1)
