"""The chat operator's cost control: its result cache, its usage ledger and the attribution of its requests,
against the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_openrouter.exceptions import OpenRouterOutputValidationError
from airflow_openrouter.operators.chat import OpenRouterChatOperator


class Ticket(BaseModel):
    category: str
    urgent: bool


class TaskInstance:
    def __init__(self, run_id: str = "manual__1", try_number: int = 1) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "support", "triage", run_id, -1
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return f"file://{tmp_path}/cache"


def run(operator: OpenRouterChatOperator, ti: TaskInstance | None = None) -> tuple[Any, TaskInstance]:
    ti = ti or TaskInstance()
    context = {"ti": ti, "run_id": ti.run_id}
    operator.render_template_fields(context)
    return operator.execute(context), ti


def triage(**kwargs: Any) -> OpenRouterChatOperator:
    options = {
        "task_id": "triage",
        "model": "openai/gpt-4o-mini",
        "prompt": "Triage: printer on fire",
        **kwargs,
    }
    return OpenRouterChatOperator(**options)


def posts(emulator: Any) -> list[Any]:
    return emulator.requests_to("/chat/completions", method="POST")


def test_the_same_request_is_answered_from_the_cache_without_a_request(openrouter_emulator, cache):
    first, first_ti = run(triage(result_cache=cache, response_format=Ticket))
    openrouter_emulator.clear_requests()

    second, second_ti = run(
        triage(result_cache=cache, response_format=Ticket), TaskInstance(run_id="manual__2", try_number=3)
    )

    assert second == first and posts(openrouter_emulator) == []
    original, cached = first_ti.xcoms["openrouter_usage"], second_ti.xcoms["openrouter_usage"]
    assert cached["cached"] is True and original["cached"] is False
    assert cached["cost"] == 0 and cached["cost_saved"] == pytest.approx(original["cost"])
    assert cached["generation_id"] == original["generation_id"] and cached["attempts"] == 0
    assert cached["prompt_tokens"] == original["prompt_tokens"]


def test_anything_that_changes_the_answer_is_a_new_request(openrouter_emulator, cache):
    run(triage(result_cache=cache, response_format=Ticket))
    for changed in (
        triage(result_cache=cache, response_format=Ticket, temperature=0.5),
        triage(result_cache=cache, response_format=Ticket, max_repair_attempts=0),
        triage(result_cache=cache),  # no schema: a text answer
        triage(result_cache=cache, response_format=Ticket, prompt="Triage: printer smoking"),
        triage(result_cache=cache, response_format=Ticket, model="anthropic/claude-3.5-haiku"),
    ):
        openrouter_emulator.clear_requests()
        run(changed)
        assert len(posts(openrouter_emulator)) == 1


def test_a_reply_that_stays_invalid_is_never_cached(openrouter_emulator, cache):
    openrouter_emulator.invalid_output_next(times=2)
    with pytest.raises(OpenRouterOutputValidationError):
        run(triage(result_cache=cache, response_format=Ticket))
    openrouter_emulator.clear_requests()

    value, ti = run(triage(result_cache=cache, response_format=Ticket))

    assert Ticket.model_validate(value) and len(posts(openrouter_emulator)) == 1
    assert ti.xcoms["openrouter_usage"]["cached"] is False


def test_a_repaired_reply_is_cached_with_what_both_calls_cost(openrouter_emulator, cache):
    openrouter_emulator.invalid_output_next(times=1)
    first, first_ti = run(triage(result_cache=cache, response_format=Ticket))
    openrouter_emulator.clear_requests()

    second, second_ti = run(triage(result_cache=cache, response_format=Ticket))

    assert second == first and posts(openrouter_emulator) == []
    assert second_ti.xcoms["openrouter_usage"]["cost_saved"] == pytest.approx(
        first_ti.xcoms["openrouter_usage"]["cost"]
    )
    assert (
        second_ti.xcoms["openrouter_usage"]["generation_ids"]
        == first_ti.xcoms["openrouter_usage"]["generation_ids"]
    )


def test_the_usage_xcom_carries_the_ledger_fields(openrouter_emulator):
    _, ti = run(triage())

    usage = ti.xcoms["openrouter_usage"]
    assert {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "cost",
            "cost_details", "is_byok", "model", "provider", "generation_id", "cached"} <= set(usage)  # fmt: skip
    generation = openrouter_emulator.generation(usage["generation_id"])
    assert usage["cost"] == pytest.approx(generation["total_cost"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["is_byok"] is False and usage["model"] == "openai/gpt-4o-mini"


def test_every_chat_request_names_its_task_run_and_try(openrouter_emulator):
    run(triage(), TaskInstance(run_id="scheduled__2026-12-01", try_number=2))

    ((post),) = posts(openrouter_emulator)
    assert post.attribution.metadata == {
        "dag_id": "support", "task_id": "triage", "run_id": "scheduled__2026-12-01", "map_index": "-1",
        "try_number": "2",
    }  # fmt: skip
    assert post.attribution.user == "airflow/support/triage"
    assert post.attribution.session_id == "airflow/support/triage/scheduled__2026-12-01"


def test_the_chat_users_own_user_and_metadata_win(openrouter_emulator):
    run(triage(user="customer-42", extra_body={"metadata": {"dag_id": "mine"}}))

    ((post),) = posts(openrouter_emulator)
    assert post.attribution.user == "customer-42"
    assert post.attribution.metadata["dag_id"] == "mine" and post.attribution.metadata["task_id"] == "triage"


def test_the_decorator_takes_the_cache_too(openrouter_emulator, cache):
    from airflow.sdk import DAG, task

    with DAG("decorated_cache", schedule=None):

        @task.openrouter(model="openai/gpt-4o-mini", result_cache=cache)
        def ask(topic: str) -> str:
            return f"One line on {topic}."

        operator = ask("tides").operator

    first, _ = run(operator)
    openrouter_emulator.clear_requests()
    second, ti = run(operator)

    assert second == first and posts(openrouter_emulator) == [] and ti.xcoms["openrouter_usage"]["cached"]


@pytest.mark.parametrize(
    ("argument", "value"),
    [("result_cache", 42), ("result_cache_ttl", 0), ("result_cache_ttl", "7d"), ("result_cache_ttl", True)],
)
def test_bad_cache_arguments_fail_when_the_dag_is_parsed(argument, value):
    from airflow_openrouter.exceptions import OpenRouterConfigError

    with pytest.raises(OpenRouterConfigError, match=f"Task 'triage': {argument} must be"):
        triage(**{argument: value})


def test_a_cache_that_cannot_be_read_fails_before_anything_is_sent_naming_result_cache(
    openrouter_emulator, cache, monkeypatch
):
    from airflow_openrouter._compat import AirflowFailException
    from airflow_openrouter.cache import ResultCache
    from airflow_openrouter.exceptions import OpenRouterError

    def unreachable(self, key):  # what an object store's client raises when it gets no answer
        raise TimeoutError("read timed out")

    with monkeypatch.context() as patched:
        patched.setattr(ResultCache, "get", unreachable)
        with pytest.raises(OpenRouterError, match=r"result_cache .* cannot be read \(TimeoutError") as caught:
            run(triage(result_cache=cache))
    assert not isinstance(caught.value, AirflowFailException)  # it may pass: a retry reads it again

    assert posts(openrouter_emulator) == []
