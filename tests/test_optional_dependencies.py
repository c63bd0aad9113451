"""common-ai and OpenLineage are optional: importing the provider (what a DAG file does) never imports
them, nor pays for them. Only their own providers load our integration modules."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, TEST_DAGS

# Loaded by common-ai (its entry point) and by the operators' OpenLineage methods: they import those.
INTEGRATIONS = ["airflow_openrouter.integrations.common_ai", "airflow_openrouter.lineage"]
OPTIONAL = ("airflow.providers.common.ai", "pydantic_ai", "openlineage", "airflow.providers.openlineage")

_PROBE = """
import importlib, importlib.util, json, pkgutil, sys
import airflow.sdk
before = set(sys.modules)
import airflow_openrouter
airflow_openrouter.get_provider_info()
for module in pkgutil.walk_packages(airflow_openrouter.__path__, "airflow_openrouter."):
    if module.name not in {integrations!r} and not module.name.endswith("__main__"):
        importlib.import_module(module.name)
spec = importlib.util.spec_from_file_location("dag_file", {dag_file!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
# Airflow itself reads every provider's get_provider_info (the configuration of all providers).
metadata = {{name for name in sys.modules if name.endswith(".get_provider_info")}}
metadata |= {{name.removesuffix(".get_provider_info") for name in metadata}}
loaded = set(sys.modules) - before - metadata
print(json.dumps(sorted(name for name in loaded if name.startswith({optional!r}))))
"""


def test_importing_every_module_and_parsing_a_dag_file_imports_no_optional_dependency():
    probe = _PROBE.format(
        integrations=INTEGRATIONS, dag_file=str(TEST_DAGS / "lineage_and_links.py"), optional=OPTIONAL
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
