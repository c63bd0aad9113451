"""@task.openrouter: the function builds the prompt; what it returns is sent as data, never rendered."""

from __future__ import annotations

import pytest
from airflow.sdk import DAG, task

from tests.operators.conftest import run_task

HOSTILE = "{{ var.value.secret }} {% if true %}EVALUATED{% endif %} {{ conn.x }}"


def decorated_operator(function, *args):
    """The operator that calling a decorated function inside a DAG creates."""
    with DAG("chat_decorator_test", schedule=None):
        return function(*args).operator


def test_decorator_is_registered_as_task_openrouter():
    @task.openrouter(model="openai/gpt-4o-mini")
    def ask() -> str:
        return "Hi"

    op = decorated_operator(ask)

    assert op.custom_operator_name == "@task.openrouter"
    assert op.model == "openai/gpt-4o-mini"


def test_returned_prompt_is_sent_literally_while_system_prompt_is_rendered(emulator):
    @task.openrouter(system_prompt="Team {{ team }}, run {{ run_id }}.", prompt_vars={"team": "ops"})
    def ask() -> str:
        return f"Quote this exactly: {HOSTILE}"

    value, _ = run_task(decorated_operator(ask))

    [request] = emulator.requests_to("/chat/completions")
    assert request.body["messages"] == [
        {"role": "system", "content": "Team ops, run manual__test."},
        {"role": "user", "content": f"Quote this exactly: {HOSTILE}"},
    ]
    assert isinstance(value, str)


def test_returned_messages_list_is_sent_as_the_conversation(emulator):
    conversation = [
        {"role": "user", "content": "Capital of Norway?"},
        {"role": "assistant", "content": "Oslo."},
        {"role": "user", "content": f"And of Sweden? {HOSTILE}"},
    ]

    @task.openrouter
    def ask() -> list:
        return conversation

    run_task(decorated_operator(ask))

    [request] = emulator.requests_to("/chat/completions")
    assert request.body["messages"] == conversation


def test_function_arguments_reach_the_prompt(emulator):
    @task.openrouter
    def ask(city: str, days: int) -> str:
        return f"Plan {days} days in {city}."

    run_task(decorated_operator(ask, "Ghent", 2))

    [request] = emulator.requests_to("/chat/completions")
    assert request.body["messages"][-1]["content"] == "Plan 2 days in Ghent."


@pytest.mark.parametrize("returned", ["", "   ", [], None, 42])
def test_function_must_return_a_prompt(emulator, returned):
    @task.openrouter
    def ask():
        return returned

    with pytest.raises(TypeError, match="must return the prompt"):
        run_task(decorated_operator(ask))

    assert emulator.requests == []


def test_returned_messages_list_conflicts_with_messages_passed_to_the_decorator(emulator):
    @task.openrouter(messages=[{"role": "system", "content": "Be brief."}])
    def ask() -> list:
        return [{"role": "user", "content": "Capital of Norway?"}]

    with pytest.raises(
        ValueError,
        match=r"^The @task.openrouter function 'ask' returned a messages list, but messages=\.\.\. was also "
        r"passed to the decorator",
    ):
        run_task(decorated_operator(ask))

    assert emulator.requests == []


def test_returned_prompt_is_appended_to_messages_passed_to_the_decorator(emulator):
    earlier = [{"role": "user", "content": "Capital of Norway?"}, {"role": "assistant", "content": "Oslo."}]

    @task.openrouter(messages=earlier)
    def ask() -> str:
        return "And of Sweden?"

    run_task(decorated_operator(ask))

    [request] = emulator.requests_to("/chat/completions")
    assert request.body["messages"] == [*earlier, {"role": "user", "content": "And of Sweden?"}]
