"""The chat operator inside a real DAG run (``dag.test()``) against the emulator.

One run of ``tests/dags/chat_pipeline.py`` is shared by the tests below: each checks one behaviour
of that run, through what a user sees (task states, XComs) and what the model received (the
emulator's journal; every task sets ``user`` to its task id).
"""

from __future__ import annotations

import pytest

from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import TEST_DAGS, load_dag, xcom_value
from tests.dags.chat_pipeline import HOSTILE, DocSummary
from tests.operators.conftest import MODEL


@pytest.fixture(scope="module")
def pipeline(airflow_db):
    with OpenRouterEmulator() as emulator, pytest.MonkeyPatch.context() as mp:
        for name, value in emulator.connection_env(default_model=MODEL).items():
            mp.setenv(name, value)
        dag_run = load_dag(TEST_DAGS / "chat_pipeline.py", "chat_pipeline").test()
        yield dag_run, emulator.requests_to("/chat/completions")


def bodies_of(pipeline, task_id):
    _, requests = pipeline
    return [r.body for r in requests if r.body.get("user") == task_id]


def user_text(body):
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def test_every_task_of_the_pipeline_succeeds(pipeline):
    dag_run, _ = pipeline
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}

    assert dag_run.state == "success", states


def test_structured_output_from_a_j2_prompt_reaches_downstream_as_a_plain_dict(pipeline):
    dag_run, _ = pipeline
    summary = xcom_value(dag_run, "summarise")

    assert type(summary) is dict
    assert DocSummary.model_validate(summary).title == xcom_value(dag_run, "check_summary")


def test_j2_prompt_file_renders_prompt_vars_from_upstream_and_literals(pipeline):
    [body] = bodies_of(pipeline, "summarise")

    assert body["messages"][0] == {"role": "system", "content": "You write for executives."}
    assert user_text(body).startswith("Summarise the document below for executives.\n")


def test_structured_output_request_is_strict_and_requires_parameters(pipeline):
    [body] = bodies_of(pipeline, "summarise")

    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "DocSummary"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["provider"] == {"require_parameters": True}
    assert body["model"] == MODEL  # the connection's default_model


def test_upstream_text_in_prompt_vars_reaches_the_model_literally(pipeline):
    [body] = bodies_of(pipeline, "summarise")

    document = "Quarterly report: revenue grew 12% in Ghent. Reviewer note: " + HOSTILE
    assert f"<document>\n{document}\n</document>" in user_text(body)


def test_xcom_pulled_inside_a_template_reaches_the_model_literally(pipeline):
    [body] = bodies_of(pipeline, "pulled_in_template")

    assert (
        user_text(body) == f"Proofread: Quarterly report: revenue grew 12% in Ghent. Reviewer note: {HOSTILE}"
    )


def test_decorator_returned_text_reaches_the_model_literally(pipeline):
    [body] = bodies_of(pipeline, "decorated")

    assert (
        user_text(body) == f"Proofread: Quarterly report: revenue grew 12% in Ghent. Reviewer note: {HOSTILE}"
    )


def test_decorator_returns_the_reply_text(pipeline):
    dag_run, _ = pipeline

    assert xcom_value(dag_run, "decorated").startswith("Summary: ")


def test_mapped_task_renders_each_prompt_with_its_own_prompt_vars_as_data(pipeline):
    dag_run, _ = pipeline

    assert sorted(user_text(b) for b in bodies_of(pipeline, "mapped")) == sorted(
        [f"Topic: {HOSTILE}", "Topic: plain"]
    )
    assert all(isinstance(xcom_value(dag_run, "mapped", map_index=i), str) for i in (0, 1))


def test_usage_xcom_reports_tokens_cost_and_generation(pipeline):
    dag_run, _ = pipeline
    usage = xcom_value(dag_run, "summarise", key="openrouter_usage")

    assert usage["model"] == MODEL
    assert usage["generation_id"] == usage["generation_ids"][0]
    assert usage["attempts"] == 1
    assert usage["try_number"] == 1
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["cost"] > 0


def test_do_xcom_push_false_pushes_neither_the_reply_nor_the_usage(pipeline):
    dag_run, _ = pipeline

    assert len(bodies_of(pipeline, "no_xcom")) == 1  # the task did run
    assert xcom_value(dag_run, "no_xcom") is None
    assert xcom_value(dag_run, "no_xcom", key="openrouter_usage") is None


MAPPED_ERRORS = {
    "literal_temperatures": "Task 'literal_temperatures': temperature must be a number from 0 to 2, got 7.",
    "xcom_temperatures": "Task 'xcom_temperatures': temperature must be a number from 0 to 2, got 9.",
    "xcom_max_tokens": "Task 'xcom_max_tokens': max_tokens must be an integer of at least 1, got '100' (str).",
}


def test_a_bad_mapped_value_fails_its_map_index_before_any_request(airflow_db, capfd):
    with OpenRouterEmulator() as emulator, pytest.MonkeyPatch.context() as mp:
        for name, value in emulator.connection_env(default_model=MODEL).items():
            mp.setenv(name, value)
        dag_run = load_dag(TEST_DAGS / "chat_pipeline.py", "chat_mapped_arguments").test()
        requests = emulator.requests_to("/chat/completions")
    logged = "".join(capfd.readouterr())

    for task_id, message in MAPPED_ERRORS.items():
        states = {ti.map_index: ti.state for ti in dag_run.get_task_instances() if ti.task_id == task_id}
        assert states == {0: "success", 1: "failed"}, task_id
        assert len([r for r in requests if r.body.get("user") == task_id]) == 1  # index 0 only
        assert f"OpenRouterConfigError: {message}" in logged
