"""Extra links from a task to OpenRouter: computed on the worker when the task ends, stored in XCom (what
the UI shows), from what the task recorded. One dag.test() run of tests/dags/lineage_and_links.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_openrouter import get_provider_info
from airflow_openrouter.links import (
    BATCH_LINK_TEMPLATE,
    GENERATION_LINK_TEMPLATE,
    OpenRouterBatchLink,
    OpenRouterGenerationLink,
    batch_link,
    generation_link,
)
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.operators.chat import OpenRouterChatOperator
from airflow_openrouter.sensors.batch import OpenRouterBatchSensor
from airflow_openrouter.testing import OpenRouterEmulator
from tests.batch.support import BATCH_DURATIONS
from tests.conftest import TEST_DAGS, load_dag, xcom_value
from tests.dags.lineage_and_links import PRIVATE_DOCUMENT

GENERATION = "_link_OpenRouterGenerationLink"
BATCHES = "_link_OpenRouterBatchLink"


@pytest.fixture(scope="module")
def linked_run(airflow_db):
    with OpenRouterEmulator(batch_durations=BATCH_DURATIONS) as emulator, pytest.MonkeyPatch.context() as mp:
        for name, value in emulator.connection_env().items():
            mp.setenv(name, value)
        mp.setenv("AIRFLOW__OPENROUTER__BATCH_LINK_TEMPLATE", "https://openrouter.ai/logs?batch={batch_id}")
        dag_run = load_dag(TEST_DAGS / "lineage_and_links.py", "lineage_and_links").test()
        yield dag_run


def test_the_chat_task_links_to_the_generation_it_got_its_answer_from(linked_run):
    usage = xcom_value(linked_run, "summarise", key="openrouter_usage")

    link = xcom_value(linked_run, "summarise", key=GENERATION)

    assert linked_run.state == "success"
    assert link == f"https://openrouter.ai/logs?generation_id={usage['generation_id']}"
    assert PRIVATE_DOCUMENT not in link


def test_a_chat_task_that_pushes_no_usage_shows_no_link_rather_than_a_wrong_one(linked_run):
    assert xcom_value(linked_run, "quiet", key=GENERATION) == ""


def test_the_batch_task_and_the_sensor_link_to_their_batches_with_the_configured_template(linked_run):
    (classified,) = xcom_value(linked_run, "classify", key="batch_ids")
    submitted = xcom_value(linked_run, "submit", key="batch_ids")

    assert xcom_value(linked_run, "classify", key=BATCHES) == f"https://openrouter.ai/logs?batch={classified}"
    assert xcom_value(linked_run, "wait", key=BATCHES) == f"https://openrouter.ai/logs?batch={submitted[0]}"


def test_the_serialized_dag_shows_the_link_buttons(linked_run):
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag("lineage_and_links")
    names = {
        task_id: sorted(link.name for link in dag.get_task(task_id).operator_extra_links)
        for task_id in ("summarise", "classify", "wait")
    }

    assert names == {
        "summarise": ["OpenRouter generation"],
        "classify": ["OpenRouter batches"],
        "wait": ["OpenRouter batches"],
    }


def test_links_are_registered_and_set_on_the_operators():
    assert get_provider_info()["extra-links"] == [
        "airflow_openrouter.links.OpenRouterGenerationLink",
        "airflow_openrouter.links.OpenRouterBatchLink",
    ]
    assert [type(link) for link in OpenRouterChatOperator.operator_extra_links] == [OpenRouterGenerationLink]
    assert [type(link) for link in OpenRouterBatchOperator.operator_extra_links] == [OpenRouterBatchLink]
    assert [type(link) for link in OpenRouterBatchSensor.operator_extra_links] == [OpenRouterBatchLink]


def test_the_configuration_defaults_are_the_links_templates_unexpanded(tmp_path):
    options = get_provider_info()["config"]["openrouter"]["options"]
    airflow = str(Path(sys.executable).parent / "airflow")

    shown = subprocess.run(
        [airflow, "config", "get-value", "openrouter", "generation_link_template"],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )

    assert options["generation_link_template"]["default"] == GENERATION_LINK_TEMPLATE
    assert options["batch_link_template"]["default"] == BATCH_LINK_TEMPLATE
    assert shown.stdout.strip().splitlines()[-1] == GENERATION_LINK_TEMPLATE, shown.stderr[
        -2000:
    ]  # no {} expansion


def test_ids_are_quoted_into_the_url_and_no_id_means_no_link(monkeypatch):
    monkeypatch.delenv("AIRFLOW__OPENROUTER__GENERATION_LINK_TEMPLATE", raising=False)
    monkeypatch.delenv("AIRFLOW__OPENROUTER__BATCH_LINK_TEMPLATE", raising=False)

    assert (
        generation_link("gen-1&tab=keys#x")
        == "https://openrouter.ai/logs?generation_id=gen-1%26tab%3Dkeys%23x"
    )
    assert generation_link(None) == generation_link("") == batch_link([]) == ""
    assert batch_link(["batch_1"]) == BATCH_LINK_TEMPLATE
    assert GENERATION_LINK_TEMPLATE.startswith("https://openrouter.ai/logs?")
    monkeypatch.setenv(
        "AIRFLOW__OPENROUTER__GENERATION_LINK_TEMPLATE", "https://openrouter.ai/activity?id={generation_id}"
    )
    assert generation_link("gen-2") == "https://openrouter.ai/activity?id=gen-2"
