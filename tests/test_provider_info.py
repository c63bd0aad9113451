"""The provider as Airflow's providers manager and CLI see it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema

from airflow_openrouter import get_provider_info


def test_provider_info_is_valid_against_airflows_schema():
    schema = json.loads(resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_class_path_in_provider_info_imports():
    info = get_provider_info()
    paths = [c["hook-class-name"] for c in info["connection-types"]]
    paths += [d["class-name"] for d in info["task-decorators"]]
    for path in paths:
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name) is not None, path
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


def test_airflow_cli_lists_the_provider_and_the_openrouter_connection_type(tmp_path: Path):
    airflow = str(Path(sys.executable).parent / "airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}

    providers = subprocess.run([airflow, "providers", "list"], env=env, capture_output=True, text=True)
    hooks = subprocess.run([airflow, "providers", "hooks"], env=env, capture_output=True, text=True)

    assert "airflow-openrouter" in providers.stdout, providers.stderr
    line = next(line for line in hooks.stdout.splitlines() if line.startswith("openrouter "))
    assert "airflow_openrouter.hooks.openrouter.OpenRouterHook" in line
    assert "openrouter_conn_id" in line
