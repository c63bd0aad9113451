"""OpenRouterChatOperator run task-by-task (render, then execute) against the emulator, through the real hook."""

from __future__ import annotations

import base64
import logging
import os
import re
import signal
import threading
import time

import pytest
from airflow.sdk import DAG
from pydantic import BaseModel

from airflow_openrouter.exceptions import (
    OpenRouterConfigError,
    OpenRouterConnectionError,
    OpenRouterOutputValidationError,
)
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
    assert info.value.generation_id
    assert str(info.value).startswith(f"Reply {info.value.generation_id} is still invalid after 3 attempt(s)")


def test_no_repair_when_max_repair_attempts_is_zero(emulator):
    emulator.invalid_output_next(times=1)
    op = OpenRouterChatOperator(task_id="t", prompt="Triage", response_format=Ticket, max_repair_attempts=0)

    with pytest.raises(
        OpenRouterOutputValidationError, match=r"still invalid after 1 attempt\(s\) \(0 repair\(s\) allowed"
    ) as info:
        run_task(op)

    assert info.value.attempts == 1
    assert len(chat_bodies(emulator)) == 1


# The emulator breaks a reply by dropping the first property (all are required on the wire) and giving
# the next one a wrong value: here "count" becomes the string "not-a-number", which jsonschema quotes.
COUNTED = {
    "title": "Counted",
    "type": "object",
    "properties": {"label": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["label", "count"],
}


def test_invalid_replies_stay_out_of_the_logs_and_the_error_but_are_kept_on_it(emulator, caplog, monkeypatch):
    emulator.invalid_output_next(times=2)
    op = OpenRouterChatOperator(task_id="t", prompt="Count them", response_format=COUNTED)
    # The task logger is structlog's, outside caplog: a stdlib logger stands in for it.
    task_log = logging.getLogger("tests.chat.task")
    monkeypatch.setattr(OpenRouterChatOperator, "log", property(lambda self: task_log))
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=task_log.name)

    with pytest.raises(OpenRouterOutputValidationError) as info:
        run_task(op)

    error = info.value
    assert "not-a-number" in error.raw_output
    assert error.errors == [
        "$: 'label' is a required property",
        "$.count: 'not-a-number' is not of type 'integer'",
    ]
    assert error.generation_id
    assert str(error) == (
        f"Reply {error.generation_id} is still invalid after 2 attempt(s) (1 repair(s) allowed, see "
        "max_repair_attempts). The model's reply is not valid against the JSON schema 'Counted': "
        "2 error(s): $ (required); $.count (type)."
    )
    logged = [r for r in caplog.records if r.levelno >= logging.INFO]
    [warning] = [r for r in logged if "is invalid" in r.getMessage()]
    first = re.fullmatch(
        r"Reply (\S+) is invalid; asking the model to repair it \(repair 1 of 1\)\. The model's reply is "
        r"not valid against the JSON schema 'Counted': 2 error\(s\): \$ \(required\); \$\.count \(type\)\.",
        warning.getMessage(),
    )
    assert first and first.group(1) != error.generation_id
    assert warning.levelno == logging.WARNING
    assert not [r.getMessage() for r in logged if "not-a-number" in r.getMessage()]
    # ... while DEBUG has the details (so the assertion above can see the value when it is logged).
    assert any("not-a-number" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


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


class Killed:
    """Runs an operator's execute on a thread, so that the test can kill it from the main thread."""

    def __init__(self, op):
        self.op = op
        self.results: list = []
        self.errors: list[BaseException] = []
        self.worker = threading.Thread(target=self._execute, daemon=True)
        self.worker.start()

    def _execute(self):
        try:
            self.results.append(run_task(self.op))
        except BaseException as exc:
            self.errors.append(exc)

    def kill(self, when, *, then: float = 0.1) -> float:
        """Kill *then* seconds after ``when()`` holds; returns how long execute took to end once killed."""
        deadline = time.monotonic() + 10
        while not when() and time.monotonic() < deadline and self.worker.is_alive():
            time.sleep(0.01)
        assert when(), "the awaited moment never came"
        self.worker.join(then)
        assert self.worker.is_alive(), f"execute ended before the kill: {self.results or self.errors}"
        killed_at = time.monotonic()
        self.op.on_kill()
        self.worker.join(10)
        assert not self.worker.is_alive()
        return time.monotonic() - killed_at

    def error(self) -> BaseException:
        assert self.results == [], "a killed task returned a result"
        [error] = self.errors
        return error


KILLED = r"Task 't' was killed: the request to OpenRouter was aborted and no result is returned\."


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream-awaiting-headers"])
def test_on_kill_aborts_a_request_waiting_for_its_answer(emulator, stream):
    emulator.set_latency(3000)
    op = OpenRouterChatOperator(task_id="t", prompt="Write a haiku", stream=stream)

    run = Killed(op)
    took = run.kill(when=lambda: chat_bodies(emulator), then=0.3)  # the request is in, its answer not

    error = run.error()
    assert type(error) is OpenRouterConnectionError
    assert re.fullmatch(KILLED, str(error))
    assert took < 1.0  # the answer was 2.7 s away
    [request] = emulator.requests_to("/chat/completions")
    assert request.body.get("stream") is (True if stream else None)


def test_on_kill_aborts_the_in_flight_stream_and_returns_no_partial_text(monkeypatch):
    with OpenRouterEmulator(token_delay_ms=200) as slow:
        for name, value in slow.connection_env(default_model=MODEL).items():
            monkeypatch.setenv(name, value)
        op = OpenRouterChatOperator(task_id="t", prompt="Write a long essay", max_tokens=400, stream=True)

        run = Killed(op)
        took = run.kill(when=lambda: op._active_stream is not None, then=0.5)  # a couple of tokens in

        error = run.error()
        assert type(error) is OpenRouterConnectionError
        assert re.fullmatch(KILLED, str(error))
        assert took < 1.0
        [request] = slow.requests_to("/chat/completions")
        assert request.body["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_on_kill_from_the_sigterm_handler_on_the_executing_thread_fails_the_task_promptly(emulator, stream):
    # As Airflow's task runner does it: on_kill runs in the SIGTERM handler, on the thread in execute.
    emulator.set_latency(3000)
    op = OpenRouterChatOperator(task_id="t", prompt="Write a haiku", stream=stream)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
    killed_at: list[float] = []

    def sigterm_once_the_request_is_in():
        deadline = time.monotonic() + 10
        while not chat_bodies(emulator) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        killed_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=sigterm_once_the_request_is_in, daemon=True)
    try:
        killer.start()
        with pytest.raises(OpenRouterConnectionError) as info:
            run_task(op)
        ended_at = time.monotonic()
        killer.join(10)
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert ended_at - killed_at[0] < 1.0  # the answer was 2.7 s away
    assert re.fullmatch(KILLED, str(info.value))
    assert len(chat_bodies(emulator)) == 1


def test_on_kill_ends_a_retry_wait_without_retrying(emulator):
    emulator.fail_next(status=429, retry_after=30)
    op = OpenRouterChatOperator(task_id="t", prompt="Write a haiku")

    run = Killed(op)
    took = run.kill(when=lambda: chat_bodies(emulator), then=0.5)  # the 429 is in, the retry 30 s away

    error = run.error()
    assert type(error) is OpenRouterConnectionError
    assert re.fullmatch(KILLED, str(error))
    assert took < 1.0  # not the 30 s the server asked for
    assert len(chat_bodies(emulator)) == 1  # no retry after the kill


def test_a_reply_arriving_after_the_kill_fails_the_task_and_is_not_repaired(emulator, monkeypatch):
    emulator.invalid_output_next(times=1)
    op = OpenRouterChatOperator(task_id="t", prompt="Triage: printer on fire", response_format=Ticket)
    real_chat_completion = OpenRouterHook.chat_completion

    def answered_then_killed(hook, **request):
        completion = real_chat_completion(hook, **request)
        op.on_kill()  # the kill lands while the reply is being read
        return completion

    monkeypatch.setattr(OpenRouterHook, "chat_completion", answered_then_killed)

    with pytest.raises(OpenRouterConnectionError, match=KILLED):
        run_task(op)

    assert len(chat_bodies(emulator)) == 1  # no repair request


def test_a_valid_reply_arriving_after_the_kill_is_not_returned(emulator, monkeypatch):
    op = OpenRouterChatOperator(task_id="t", prompt="Say hello")
    real_chat_completion = OpenRouterHook.chat_completion

    def answered_then_killed(hook, **request):
        completion = real_chat_completion(hook, **request)
        op.on_kill()
        return completion

    monkeypatch.setattr(OpenRouterHook, "chat_completion", answered_then_killed)

    with pytest.raises(OpenRouterConnectionError, match=KILLED):
        run_task(op)


def test_a_killed_try_does_not_poison_the_next_one(emulator):
    op = OpenRouterChatOperator(task_id="t", prompt="Say hello")
    op.on_kill()  # nothing in flight: a no-op apart from the flag, which execute resets

    value, _ = run_task(op)

    assert isinstance(value, str) and value


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
    (tmp_path / "receipt.jpeg").write_bytes(b"\xff\xd8\xff fake jpeg")
    with DAG("chat_image", schedule=None, template_searchpath=[str(tmp_path)]):
        op = OpenRouterChatOperator(task_id="t", prompt="What is the total?", images=["receipt.jpeg"])

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
    with pytest.raises(
        OpenRouterConfigError,
        match=r"^Task 't': max_repair_attempts must be an integer of at least 0, got -1\.$",
    ):
        OpenRouterChatOperator(task_id="t", prompt="x", max_repair_attempts=-1)
