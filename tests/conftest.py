"""Test session setup shared by every test.

Airflow reads its configuration when it is first imported, so the environment is set here, at import
time of this conftest, before any test module imports ``airflow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DAGS = REPO / "tests" / "dags"
EXAMPLE_DAGS = REPO / "example_dags"

_HOME = Path(tempfile.mkdtemp(prefix="airflow-openrouter-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(TEST_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        # Two bundles so that dag.test() finds both our test DAGs and the shipped examples.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": "tests",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(TEST_DAGS), "refresh_interval": 0},
                },
                {
                    "name": "examples",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(EXAMPLE_DAGS), "refresh_interval": 0},
                },
            ]
        ),
        "AIRFLOW__OPENROUTER__RESULTS_PATH": f"file://{_HOME / 'results'}",
        "AIRFLOW__OPENROUTER__POLL_INTERVAL": "0.2",
    }
)
# A developer's own key must never reach a test: tests that want the env fallback set it themselves.
os.environ.pop("OPENROUTER_API_KEY", None)


def use_emulator(emulator, monkeypatch: pytest.MonkeyPatch, conn_id: str = "openrouter_default", **extra):
    """Reset a shared emulator (journal, faults, batches, spend, latency) and make it ``conn_id``."""
    emulator.reset()
    for name, value in emulator.connection_env(conn_id, **extra).items():
        monkeypatch.setenv(name, value)
    return emulator


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB (needed by ``dag.test()``), created once per session."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return _HOME


def load_dag_file(path: Path) -> ModuleType:
    """Import a DAG file the way the DAG processor would: a fresh module, registered in sys.modules so
    that annotations and pydantic models defined in the file resolve against it."""
    spec = importlib.util.spec_from_file_location(f"_dagfile_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_dag(path: Path, dag_id: str):
    """One DAG of a DAG file (see :func:`load_dag_file`)."""
    from airflow.sdk import DAG

    dags = {d.dag_id: d for d in vars(load_dag_file(path)).values() if isinstance(d, DAG)}
    assert dag_id in dags, f"{path} defines no DAG {dag_id!r} (found {sorted(dags)})"
    return dags[dag_id]


def xcom_value(dag_run, task_id: str, key: str = "return_value", map_index: int = -1):
    """What a downstream task would pull: the deserialised XCom of a finished ``dag.test()`` run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
                XComModel.map_index == map_index,
            )
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


@pytest.fixture
def run_dag(airflow_db):
    """Run a DAG file's DAG with ``dag.test()`` and return the finished DagRun."""

    def run(path: Path, dag_id: str, **test_kwargs):
        return load_dag(path, dag_id).test(**test_kwargs)

    return run
