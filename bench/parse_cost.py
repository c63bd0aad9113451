"""1. Parse cost: what importing each of our operator, sensor and trigger modules adds on top of
``import airflow.sdk`` (which every DAG file pays anyway), paid as the DAG processor pays it: in a
fresh process. Median over repeated processes; the modules take turns, so drift hits all alike. The
operator and sensor modules have a goal; the trigger module's cost is reported (the DAG processor
never imports it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from bench._common import REPO, Goal, Row, median, ratio, unavailable

BENCHMARK = "parse_cost"
GOAL = Goal("figure", "<=", 10.0, "< 10 ms")

OURS = {
    "operators.chat": "airflow_openrouter.operators.chat",
    "operators.batch": "airflow_openrouter.operators.batch",
    "operators.embedding": "airflow_openrouter.operators.embedding",
    "sensors.batch": "airflow_openrouter.sensors.batch",
    "triggers.batch": "airflow_openrouter.triggers.batch",
}
# Reported, not a goal: the DAG processor never imports the trigger module (the triggerer does, once).
REPORTED = {
    "triggers.batch": "reported: the DAG processor never imports it (operators and sensors import it in "
    "execute); most of it is Airflow's own airflow.triggers.base",
}
# The figures the issue quotes for the same machine: about 360, 275 and 780 ms.
PEERS = {
    "common-ai operators.llm": "airflow.providers.common.ai.operators.llm",
    "openai operators.openai": "airflow.providers.openai.operators.openai",
    "anthropic operators.batch": "airflow.providers.anthropic.operators.batch",
}

_PROBE = """\
import json, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
import {module}
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def import_seconds(python: str | Path, module: str) -> tuple[float, float]:
    """(seconds of ``import airflow.sdk``, seconds ``module`` adds), in one fresh process."""
    process = subprocess.run(
        [str(python), "-c", _PROBE.format(module=module)], capture_output=True, text=True, cwd=REPO
    )
    if process.returncode != 0:
        raise RuntimeError(process.stderr.strip().splitlines()[-1])
    sdk, extra = json.loads(process.stdout.strip().splitlines()[-1])
    return sdk, extra


def measure(modules: Mapping[str, str], python: str | Path, repeats: int) -> list[Row]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in modules}
    failures: dict[str, str] = {}
    for _ in range(repeats):
        for name, module in modules.items():
            if name in failures:
                continue
            try:
                samples[name].append(import_seconds(python, module))
            except RuntimeError as exc:
                failures[name] = str(exc)
    rows = []
    for name in modules:
        if name in failures:
            rows.append(unavailable(BENCHMARK, f"parse cost: {name}", "ms", failures[name], GOAL))
            continue
        sdk_ms = median([s for s, _ in samples[name]]) * 1000
        extra_ms = median([e for _, e in samples[name]]) * 1000
        reported = name in REPORTED
        rows.append(
            Row(
                BENCHMARK,
                f"parse cost: {name}",
                "ms",
                extra_ms,
                baseline=sdk_ms,
                baseline_label="import airflow.sdk",
                ratio=ratio(extra_ms, sdk_ms),
                goal=None if reported else GOAL,
                note=REPORTED.get(name, ""),
                details={"repeats": repeats, "module": modules[name]},
            )
        )
    return rows


def run(*, quick: bool, peers_python: Path | None = None) -> list[Row]:
    repeats = 1 if quick else 7
    rows = measure(OURS, sys.executable, repeats)
    if peers_python is not None:
        # Peers are reported for comparison; our goal is not theirs.
        rows += [replace(row, goal=None) for row in measure(PEERS, peers_python, repeats)]
    return rows
