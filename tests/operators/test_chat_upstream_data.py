"""Upstream data is data: whichever way a DAG wires an upstream value into a prompt, it reaches the model
literally, and the connection's API key never does.

One ``dag.test()`` run of ``tests/dags/upstream_data.py`` against the emulator (whose only accepted key
is a realistic one, built at run time) is shared by the tests below. They assert on what the emulator
received (its journal) and on what Airflow stored as the rendered template fields.
"""

from __future__ import annotations

import base64
import json

import pytest

from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import TEST_DAGS, load_dag
from tests.dags.upstream_data import FILE_NAME, HOSTILE, SECRET
from tests.operators.conftest import MODEL

KEY = "sk-or-v1-" + "ab12" * 16


@pytest.fixture(scope="module")
def pipeline(airflow_db):
    with OpenRouterEmulator(api_keys=[KEY], batch_durations=(0.05, 0.1, 0.05)) as emulator:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in emulator.connection_env(default_model=MODEL, max_retries=0).items():
                mp.setenv(name, value)
            dag_run = load_dag(TEST_DAGS / "upstream_data.py", "upstream_data").test()
        yield dag_run, emulator.requests


def chat_bodies(requests):
    """Every chat request body the emulator received: direct calls, and the lines of submitted batches."""
    bodies = []
    for request in requests:
        if request.method != "POST" or not isinstance(request.body, dict):
            continue
        if request.route == "/chat/completions":
            bodies.append(request.body)
        elif request.route == "/batches":
            bodies += [line["body"] for line in request.body.get("requests", [])]
    return bodies


def conversation(body):
    """``(system text or None, last user text)`` of a request body."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), None)
    user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    return system, user


CASES = {
    # a plain operator, prompt=upstream.output
    "plain_xcomarg": [(None, f"Doc {HOSTILE}")],
    # .expand(prompt=upstream.output): one of them looks like a template file name
    "expand_prompt": [(None, f"Echo {HOSTILE}"), (None, FILE_NAME)],
    # .expand_kwargs(upstream.output) giving the prompt itself
    "kwargs_prompt": [(None, f"Echo {HOSTILE}"), (None, FILE_NAME)],
    # .expand_kwargs(upstream.output) giving (nested) prompt_vars and the system prompt
    "kwargs_vars": [(f"System {HOSTILE}", f"Doc {HOSTILE} | Deep {HOSTILE}")],
    # partial(prompt_vars={"doc": XComArg}), mapped over literal system prompts (templates: rendered)
    "partial_xcomarg": [("Be brief.", f"Doc {HOSTILE}"), ("Be kind.", f"Doc {HOSTILE}")],
    # @task.openrouter mapped with expand_kwargs and expand: the function's arguments are data
    "decorated_kwargs": [(None, f"Echo Doc {HOSTILE}")],
    "decorated_expand": [(None, f"Echo Echo {HOSTILE}"), (None, f"Echo {FILE_NAME}")],
    # the batch operator: prompt_vars from XCom; expand_kwargs of items, prompt_vars and the prompt
    "batch_vars": [(None, f"one | Doc {HOSTILE}")],
    "batch_kwargs": [(None, f"Item {HOSTILE} | Note {HOSTILE}")],
    "batch_kwargs_prompt": [(None, f"Fixed {HOSTILE}")],
}


@pytest.mark.parametrize("task_id", list(CASES))
def test_upstream_text_reaches_the_model_literally_whatever_the_route(pipeline, task_id):
    dag_run, requests = pipeline
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    bodies = [b for b in chat_bodies(requests) if b.get("user") == task_id]

    assert [s for (t, _), s in states.items() if t == task_id] and all(
        s == "success" for (t, _), s in states.items() if t == task_id
    ), states
    assert sorted(map(conversation, bodies), key=repr) == sorted(CASES[task_id], key=repr)
    sent = json.dumps(bodies)
    assert KEY not in sent
    assert "LOOP0" not in sent and "{% for i in range(2) %}" in sent


def states_of(dag_run, task_id):
    return [ti.state for ti in dag_run.get_task_instances() if ti.task_id == task_id]


@pytest.mark.parametrize("task_id", ["images_uri", "images_kwargs"])
def test_an_image_file_named_by_upstream_outside_the_dag_folder_is_never_read_or_sent(pipeline, task_id):
    dag_run, requests = pipeline

    assert states_of(dag_run, task_id) == ["failed"]
    assert [b for b in chat_bodies(requests) if b.get("user") == task_id] == []
    assert base64.b64encode(SECRET).decode() not in json.dumps(chat_bodies(requests))


def test_an_image_inside_the_dag_folder_may_be_named_by_upstream(pipeline):
    dag_run, requests = pipeline
    [body] = [b for b in chat_bodies(requests) if b.get("user") == "images_inside"]

    assert states_of(dag_run, "images_inside") == ["success"]
    url = body["messages"][-1]["content"][1]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == (TEST_DAGS / "images" / "pixel.png").read_bytes()


def test_any_argument_from_upstream_is_data_not_only_prompts(pipeline):
    dag_run, requests = pipeline
    [body] = [b for b in chat_bodies(requests) if b.get("user") == "kwargs_model"]

    assert body["model"] == "{{ 'openai/gpt-4o-mini' }}"  # rendered, it would have been a valid model id
    assert states_of(dag_run, "kwargs_model") == ["failed"]


def test_a_literal_passed_to_expand_is_the_authors_template_and_is_rendered(pipeline):
    dag_run, requests = pipeline
    [body] = [b for b in chat_bodies(requests) if b.get("user") == "expand_literal"]

    assert conversation(body) == (None, f"Literal run {dag_run.run_id}")


def test_a_literal_expand_kwargs_list_renders_its_dicts_and_keeps_its_xcomarg_elements_as_data(pipeline):
    dag_run, requests = pipeline
    bodies = [b for b in chat_bodies(requests) if b.get("user") == "kwargs_literal_list"]

    assert sorted(conversation(b)[1] for b in bodies) == sorted(
        [f"Literal row {dag_run.run_id}", f"Row {HOSTILE}"]
    )


def test_the_api_key_is_in_no_request_body_of_the_whole_run(pipeline):
    _, requests = pipeline

    assert len(chat_bodies(requests)) >= 15
    assert not [r.route for r in requests if KEY in json.dumps(r.body)]


def test_rendered_template_fields_show_upstream_text_literally_and_never_the_key(pipeline):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    dag_run, _ = pipeline
    with create_session() as session:
        rows = (
            session.query(RenderedTaskInstanceFields)
            .filter(
                RenderedTaskInstanceFields.dag_id == dag_run.dag_id,
                RenderedTaskInstanceFields.run_id == dag_run.run_id,
            )
            .all()
        )
        rendered = {(r.task_id, r.map_index): r.rendered_fields for r in rows}

    assert KEY not in json.dumps(list(rendered.values()), default=str)
    assert rendered[("kwargs_prompt", 0)]["prompt"] == f"Echo {HOSTILE}"
    assert rendered[("kwargs_vars", 0)]["system_prompt"] == f"System {HOSTILE}"
    assert rendered[("kwargs_vars", 0)]["prompt_vars"]["nested"] == {"deep": [f"Deep {HOSTILE}"]}
    assert rendered[("batch_kwargs", 0)]["prompt_vars"] == {"note": f"Note {HOSTILE}"}
