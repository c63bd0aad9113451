"""OpenRouterConfigError is permanent: found when a task runs, it fails the task at its first try (no
retry would pass), in every operator and the sensor, with its advice in the error."""

from __future__ import annotations

import json

import pytest

from airflow_openrouter._compat import AirflowFailException
from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterConfigError,
    OpenRouterMissingKeyError,
)
from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import TEST_DAGS, use_emulator

NO_KEY_TASKS = [
    "chat_without_key",
    "batch_without_key",
    "concurrent_without_key",
    "embed_without_key",
    "sensor_without_key",
]


@pytest.fixture(scope="module")
def module_emulator():
    with OpenRouterEmulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(module_emulator, monkeypatch):
    use_emulator(module_emulator, monkeypatch)
    connection = json.loads(module_emulator.connection_json())
    connection.pop("password", None)  # the connection exists, without an API key
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_NOKEY", json.dumps(connection))
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    return module_emulator


def test_every_task_misconfigured_at_run_time_fails_at_its_first_try(run_dag, emulator, capsys):
    dag_run = run_dag(TEST_DAGS / "misconfigured.py", "misconfigured")

    instances = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert dag_run.state == "failed"
    assert {t: (ti.state, ti.try_number) for t, ti in instances.items()} == {
        task_id: ("failed", 1) for task_id in instances
    }
    assert set(instances) == {*NO_KEY_TASKS, "chat_without_connection", "chat_with_empty_model"}
    log = capsys.readouterr().out
    advice = (
        "No OpenRouter API key: connection 'openrouter_nokey' has no API key and OPENROUTER_API_KEY is not "
        "set. Set the password (API Key) of connection 'openrouter_nokey'"
    )
    assert log.count(advice) >= len(NO_KEY_TASKS)
    assert "Connection 'openrouter_typo' does not exist" in log
    assert "Task 'chat_with_empty_model': model must be a model id (it rendered empty)" in log
    assert emulator.requests == []  # nothing was sent, by any task


def test_the_missing_key_error_is_an_authentication_error_a_config_error_and_permanent(emulator):
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    with pytest.raises(OpenRouterMissingKeyError) as raised:
        OpenRouterHook("openrouter_nokey").chat_completion(
            model="m", messages=[{"role": "user", "content": "x"}]
        )

    error = raised.value
    assert isinstance(error, OpenRouterAuthenticationError) and isinstance(error, OpenRouterConfigError)
    assert isinstance(error, AirflowFailException) and not error.transient
    assert "Set the password (API Key) of connection 'openrouter_nokey'" in str(error)


def test_a_config_error_is_permanent_wherever_it_is_raised():
    error = OpenRouterConfigError("Task 't': temperature must be a number from 0 to 2, got 'hot'.")

    assert isinstance(error, AirflowFailException) and isinstance(error, ValueError)
    assert not error.transient
