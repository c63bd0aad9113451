"""pytest plugin (entry point ``openrouter_emulator``): fixtures for testing your own DAGs offline.

* ``openrouter_emulator`` -- a fresh emulator per test, with ``AIRFLOW_CONN_OPENROUTER_DEFAULT`` pointing
  at it (set through ``monkeypatch``, so it is undone after the test). It runs on the real clock with
  short batch phases, so a batch finishes by itself in about half a second (polling code under test
  terminates); ``advance(seconds)`` jumps ahead, e.g. ``advance(60)`` completes every batch at once.
* ``openrouter_emulator_session`` -- one emulator for the whole session (real clock, short batch
  durations); the environment is left alone, so use ``connection_env()`` yourself. Tests sharing it
  should not leave faults queued.
* ``airflow_test_home`` -- a temporary ``AIRFLOW_HOME`` with a migrated SQLite metadata DB, for
  ``dag.test()``: one per session. Airflow's DAG bundles point at your DAG folders, so that
  ``dag.test()`` finds (and serializes) the DAGs it runs: ``dags/`` next to your pytest configuration by
  default, or the ``airflow_dags_folders`` ini option (several paths allowed; list your tests folder
  too when tests define DAGs themselves). ``[openrouter] results_path`` goes to the temporary home and
  batch polls every 0.2 s unless you set them. Set the ini option ``airflow_test_home = true`` to point
  Airflow at the temporary home before any test module is imported (recommended: Airflow reads part of
  its configuration at import); without it the fixture re-points an already imported Airflow.

Nothing here touches Airflow unless a test asks for ``airflow_test_home`` or the ini option is set.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import OpenRouterEmulator

_HOME_KEY = pytest.StashKey[Path]()
_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "airflow_test_home",
        type="bool",
        default=False,
        help="airflow-openrouter: point Airflow at a temporary home before tests are imported",
    )
    parser.addini(
        "airflow_dags_folders",
        type="paths",
        default=[],
        help="airflow-openrouter: DAG folders for airflow_test_home's DAG bundles (default: dags/)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Runs before conftest.py files and test modules are imported, i.e. before they import Airflow.
    if early_config.getini("airflow_test_home"):
        _prepare_home(early_config)


def _dags_folders(config: pytest.Config) -> list[Path]:
    configured = [Path(p) for p in config.getini("airflow_dags_folders")]
    folders = configured or [config.rootpath / "dags"]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise pytest.UsageError(
            f"airflow_test_home: DAG folder {', '.join(missing)} does not exist. Put your DAG files in "
            "dags/ next to your pytest configuration, or list their folders in the ini option "
            "airflow_dags_folders (paths relative to the ini file)."
        )
    return folders


def _prepare_home(config: pytest.Config) -> Path:
    """Point Airflow's environment at a fresh temporary home (once per session)."""
    if _HOME_KEY in config.stash:
        return config.stash[_HOME_KEY]
    folders = _dags_folders(config)
    home = Path(tempfile.mkdtemp(prefix="airflow-test-home-"))
    bundles = [
        {"name": f"dags-{i}", "classpath": _BUNDLE, "kwargs": {"path": str(f), "refresh_interval": 0}}
        for i, f in enumerate(folders)
    ]
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(folders[0]),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        }
    )
    os.environ.setdefault("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{home / 'results'}")
    os.environ.setdefault("AIRFLOW__OPENROUTER__POLL_INTERVAL", "0.2")
    config.stash[_HOME_KEY] = home
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    return home


def _migrate(home: Path) -> None:
    if "airflow.settings" in sys.modules:
        # Airflow was imported before the home was set: re-read the settings it derives at import.
        from airflow import settings

        if os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] != settings.SQL_ALCHEMY_CONN:
            settings.configure_vars()
            settings.reconfigure_orm()
    from airflow.utils.db import upgradedb

    # A fresh SQLite DB is created from the ORM models and stamped: a few seconds, once per session.
    with contextlib.redirect_stdout(io.StringIO()):
        upgradedb()


@pytest.fixture(scope="session")
def airflow_test_home(pytestconfig: pytest.Config) -> Path:
    """A temporary AIRFLOW_HOME with a migrated metadata DB and DAG bundles on your DAG folders."""
    home = _prepare_home(pytestconfig)
    _migrate(home)
    return home


@pytest.fixture
def openrouter_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenRouterEmulator]:
    with OpenRouterEmulator(batch_durations=(0.2, 0.2, 0.1)) as emulator:
        for name, value in emulator.connection_env().items():
            monkeypatch.setenv(name, value)
        yield emulator


@pytest.fixture(scope="session")
def openrouter_emulator_session() -> Iterator[OpenRouterEmulator]:
    with OpenRouterEmulator(batch_durations=(0.2, 0.3, 0.1)) as emulator:
        yield emulator
