"""Bad arguments fail before anything is paid for: a static one when the DAG is parsed (the DAG processor
shows the error), a templated or XCom-fed one right after rendering, before any request. Every error
names the task, the argument and what is allowed. One definition serves the chat operator, the decorator
and the batch operator (their shared base)."""

from __future__ import annotations

import re
import textwrap

import pytest
from airflow.sdk import DAG

from airflow_openrouter._params import CHAT_ONLY_PARAMS, SHARED_PARAMS
from airflow_openrouter.exceptions import (
    OpenRouterConfigError,
    OpenRouterNotFoundError,
    OpenRouterOutputValidationError,
)
from airflow_openrouter.operators._base import DEFAULT_CONN_ID, OpenRouterBaseOperator, poll_interval
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.operators.chat import OpenRouterChatOperator
from tests.operators.conftest import run_task


def parse(tmp_path, body: str):
    """Parse a DAG file as the DAG processor does; returns the import errors, by file name."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag

    (tmp_path / "broken.py").write_text(
        "from airflow.sdk import DAG, task\n"
        "from pydantic import BaseModel\n"
        "from airflow_openrouter.operators.batch import OpenRouterBatchOperator\n"
        "from airflow_openrouter.operators.chat import OpenRouterChatOperator\n"
        "class Ticket(BaseModel):\n"
        "    category: str\n"
        "with DAG('broken', schedule=None):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    bag = DagBag(dag_folder=tmp_path, bundle_path=tmp_path)
    return {name.rsplit("/", 1)[-1]: error for name, error in bag.import_errors.items()}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "OpenRouterChatOperator(task_id='hot', prompt='x', temperature=3)",
            "Task 'hot': temperature must be a number from 0 to 2, got 3.",
        ),
        (
            "OpenRouterChatOperator(task_id='inst', prompt='x', response_format=Ticket(category='a'))",
            "Task 'inst': response_format takes the model class, not an instance of it",
        ),
        (
            "OpenRouterChatOperator(task_id='schema', prompt='x', response_format={'type': 'objekt'})",
            "Task 'schema': response_format is not a valid JSON Schema: at $.type, ",
        ),
        (
            "OpenRouterChatOperator.partial(task_id='mapped', max_tokens='100').expand(prompt=['a', 'b'])",
            "Task 'mapped': max_tokens must be an integer of at least 1, got '100' (str).",
        ),
        (
            "@task.openrouter(stop=['1', '2', '3', '4', '5'])\ndef deco() -> str:\n    return 'x'\ndeco()",
            ": stop must be a string or a list of at most 4 strings",
        ),
        (
            "OpenRouterBatchOperator(task_id='bulk', items=[], prompt='x', top_p=2)",
            "Task 'bulk': top_p must be a number from 0 to 1, got 2.",
        ),
        (
            "OpenRouterBatchOperator(task_id='bulk', items=[], prompt='x', extra_body={'seed': 'seven'})",
            "Task 'bulk': extra_body['seed'] must be an integer from",
        ),
        (
            "OpenRouterBatchOperator(task_id='bulk', items=[], prompt='x', engine='fast')",
            "Task 'bulk': engine must be 'batch' or 'concurrent', got 'fast' (str).",
        ),
        (
            "OpenRouterBatchOperator(task_id='bulk', items=[], prompt='x', max_failed_fraction=1.5)",
            "Task 'bulk': max_failed_fraction must be a number from 0 to 1, got 1.5.",
        ),
        (
            "OpenRouterChatOperator(task_id='conn', prompt='x', openrouter_conn_id='')",
            "Task 'conn': openrouter_conn_id must be the id of an OpenRouter connection, got '' (str).",
        ),
        (
            "OpenRouterChatOperator(task_id='vars', prompt='x', prompt_vars=['a'])",
            "Task 'vars': prompt_vars must be a dict of template variables, got ['a'] (list).",
        ),
    ],
)
def test_a_static_bad_argument_fails_the_dag_import_naming_task_argument_and_allowed_values(
    airflow_db, tmp_path, body, message
):
    errors = parse(tmp_path, body)

    assert list(errors) == ["broken.py"]
    assert "OpenRouterConfigError" in errors["broken.py"]
    assert message in errors["broken.py"]


def test_a_good_dag_imports_without_errors(airflow_db, tmp_path):
    errors = parse(
        tmp_path,
        """
        OpenRouterChatOperator(task_id='a', prompt='x', temperature=0.2, stop=['\\n'], response_format=Ticket)
        OpenRouterChatOperator.partial(task_id='b', seed=1).expand(prompt=['x', 'y'])
        OpenRouterBatchOperator(task_id='c', items=[], prompt='x', response_format={'type': 'object'})
        """,
    )

    assert errors == {}


def test_a_model_that_renders_empty_fails_before_any_request(emulator):
    with DAG("chat_model_param", schedule=None, params={"model": ""}):
        op = OpenRouterChatOperator(task_id="t", prompt="Hi", model="{{ params.model }}")

    with pytest.raises(
        OpenRouterConfigError, match=r"^Task 't': model must be a model id \(it rendered empty\)"
    ):
        run_task(op, params={"model": ""})

    assert emulator.requests == []


def test_prompt_vars_that_render_to_text_fail_before_any_request(emulator):
    op = OpenRouterChatOperator(task_id="t", prompt="{{ a }}", prompt_vars="{{ run_id }}")

    with pytest.raises(
        OpenRouterConfigError, match=r"^Task 't': prompt_vars must be a dict of template variables"
    ):
        run_task(op)

    assert emulator.requests == []


def test_an_upstream_value_for_a_request_field_says_how_to_map_over_it():
    with DAG("chat_xcomarg_param", schedule=None):
        upstream = OpenRouterChatOperator(task_id="up", prompt="x")
        with pytest.raises(
            OpenRouterConfigError, match=r"temperature is not a templated argument.*\.expand\("
        ):
            OpenRouterChatOperator(task_id="t", prompt="x", temperature=upstream.output)


# --- the 404 of a structured-output routing constraint --------------------------------------------


def test_no_endpoints_for_structured_output_says_the_operator_required_parameters_and_how_to_opt_out(
    emulator,
):
    op = OpenRouterChatOperator(
        task_id="t",
        prompt="Classify",
        model="meta-llama/llama-3.1-8b-instruct",
        response_format={"type": "object"},
    )

    with pytest.raises(OpenRouterNotFoundError) as info:
        run_task(op)

    message = str(info.value)
    assert "No endpoints found that can handle the requested parameters." in message
    assert "added provider.require_parameters=true because response_format is set" in message
    assert "'meta-llama/llama-3.1-8b-instruct'" in message and "pass provider=..." in message
    assert re.search(r"(?<!\.)\.\.(?!\.)", message) is None  # no double period (an ellipsis is fine)
    assert info.value.status == 404


def test_the_advice_is_true_with_provider_passed_the_request_is_routed_and_the_reply_validated(emulator):
    op = OpenRouterChatOperator(
        task_id="t",
        prompt="Classify",
        model="meta-llama/llama-3.1-8b-instruct",
        response_format={"type": "object"},
        provider={"require_parameters": False},
        max_repair_attempts=0,
    )

    # Routed to a provider that ignores the format (as OpenRouter does): prose back, which fails validation.
    with pytest.raises(OpenRouterOutputValidationError, match=r"not valid against the JSON schema"):
        run_task(op)

    [body] = [r.body for r in emulator.requests_to("/chat/completions")]
    assert body["provider"] == {"require_parameters": False}


# --- one base ----------------------------------------------------------------------------------------


def test_both_operators_derive_from_the_base_and_declare_each_request_parameter_once():
    assert issubclass(OpenRouterChatOperator, OpenRouterBaseOperator)
    assert issubclass(OpenRouterBatchOperator, OpenRouterBaseOperator)
    assert OpenRouterBatchOperator.request_params == SHARED_PARAMS
    assert OpenRouterChatOperator.request_params == (*SHARED_PARAMS, *CHAT_ONLY_PARAMS)
    assert OpenRouterChatOperator.template_ext == OpenRouterBatchOperator.template_ext


def test_template_fields_are_unchanged():
    assert tuple(OpenRouterChatOperator.template_fields) == (
        "prompt_vars",
        "model",
        "images",
        "system_prompt",
        "prompt",
        "messages",
    )
    assert tuple(OpenRouterBatchOperator.template_fields) == (
        "items",
        "prompt_vars",
        "model",
        "output_path",
        "id_field",
    )


def test_shared_arguments_reach_both_operators_bodies_the_same_way():
    fields = {"seed": 4, "temperature": 0.3, "stop": "END", "user": "u", "extra_body": {"top_k": 5}}
    chat = OpenRouterChatOperator(task_id="c", prompt="x", **fields)
    batch = OpenRouterBatchOperator(task_id="b", items=[], prompt="x", **fields)

    assert {k: v for k, v in chat._request_fields().items() if v is not None} == fields
    assert {k: v for k, v in batch._request_fields().items() if v is not None} == fields
    assert chat.openrouter_conn_id == batch.openrouter_conn_id == DEFAULT_CONN_ID


def test_poll_interval_is_the_explicit_value_else_the_provider_setting():
    assert poll_interval(7) == 7.0
    assert poll_interval(None) == 0.2  # [openrouter] poll_interval, set by the test session's environment
