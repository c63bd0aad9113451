"""The pytest plugin as a user meets it: a small project of their own in a fresh environment (no
``AIRFLOW_HOME``, no Airflow setting, a new ``HOME``), with DAG files in ``dags/`` and tests that run them
with ``dag.test()`` against the ``openrouter_emulator`` fixture. pytest runs it in a subprocess, so
nothing of this repository's own ``tests/conftest.py`` set-up helps it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHAT_DAG = """
from airflow.sdk import DAG
from airflow_openrouter.operators.chat import OpenRouterChatOperator

with DAG("user_chat", schedule=None) as dag:
    OpenRouterChatOperator(task_id="summarise", model="openai/gpt-4o-mini", prompt="Summarize {{ run_id }}")
"""

BATCH_DAG = """
from airflow.sdk import DAG
from airflow_openrouter.operators.batch import OpenRouterBatchOperator

with DAG("user_batch", schedule=None) as dag:
    OpenRouterBatchOperator(
        task_id="extract",
        items=[{"id": i, "text": f"invoice {i}"} for i in range(4)],
        id_field="id",
        model="openai/gpt-4o-mini",
        prompt="Extract the total of {{ item.text }}",
        deferrable=True,
    )
"""

USER_TESTS = """
import json
from pathlib import Path

from airflow.sdk import DAG
from airflow_openrouter.operators.chat import OpenRouterChatOperator

from chat_dag import dag as chat_dag
from batch_dag import dag as batch_dag


def test_chat_dag_retries_a_429(openrouter_emulator, airflow_test_home):
    openrouter_emulator.fail_next("/chat/completions", status=429, retry_after=0.1)
    assert chat_dag.test().state == "success"
    assert len(openrouter_emulator.requests_to("/chat/completions", method="POST")) == 2


def test_batch_dag_writes_results(openrouter_emulator, airflow_test_home):
    assert batch_dag.test().state == "success"
    files = list((Path(airflow_test_home) / "results").rglob("*.jsonl"))
    assert len(files) == 1
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert sorted(row["custom_id"] for row in rows) == ["0", "1", "2", "3"]


with DAG("defined_in_the_test_module", schedule=None) as inline_dag:
    OpenRouterChatOperator(task_id="ask", model="openai/gpt-4o-mini", prompt="Hello")


def test_a_dag_defined_in_the_test_module(openrouter_emulator, airflow_test_home):
    assert inline_dag.test().state == "success"
"""

PYPROJECT = """
[tool.pytest.ini_options]
pythonpath = ["dags"]
airflow_dags_folders = ["dags", "tests"]
"""


def _user_project(root: Path, early: bool) -> Path:
    (root / "dags").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "dags" / "chat_dag.py").write_text(textwrap.dedent(CHAT_DAG))
    (root / "dags" / "batch_dag.py").write_text(textwrap.dedent(BATCH_DAG))
    (root / "tests" / "test_my_dags.py").write_text(textwrap.dedent(USER_TESTS))
    (root / "pyproject.toml").write_text(PYPROJECT + ("airflow_test_home = true\n" if early else ""))
    return root


def _fresh_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell: none of this suite's Airflow or OpenRouter settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENROUTER", "PYTEST"))}
    env["HOME"] = str(home)
    return env


def _run_pytest(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize("early", [True, False], ids=["ini-option", "fixture-only"])
def test_users_dag_tests_pass_in_a_fresh_environment_with_the_shipped_fixtures(
    tmp_path: Path, early: bool
) -> None:
    """With ``airflow_test_home = true`` Airflow is pointed at the home before the test modules import
    it; with the fixture alone, an Airflow imported at collection is re-pointed."""
    project = _user_project(tmp_path / "project", early)
    done = _run_pytest(project, _fresh_env(tmp_path / "user-home"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
    if early:  # Airflow never even created its default home (~/airflow) at import
        assert not (tmp_path / "user-home" / "airflow").exists()


def test_a_missing_dags_folder_is_one_clear_error(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_x.py").write_text("def test_x(airflow_test_home):\n    pass\n")
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\nairflow_test_home = true\n")
    done = _run_pytest(project, _fresh_env(tmp_path / "user-home"))
    assert done.returncode != 0
    assert f"airflow_test_home: DAG folder {project / 'dags'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(autouse=True)
def _no_plugin_autoload_surprises(monkeypatch: pytest.MonkeyPatch) -> None:
    # The subprocess must load the plugin through its entry point, as a user's pytest does.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
