"""Shared by the batch operator, trigger and sensor tests: an emulator on a real clock, and a way to run
the operator through execute -> trigger -> execute_complete without a DAG run.

Import the fixtures into a test module (``from tests.batch.support import batch_emu, batch_emulator``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_openrouter._compat import TaskDeferred
from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import use_emulator

MODEL = "openai/gpt-4o-mini"
# Short, real-clock lifecycles: a batch completes about 0.2 s after it is created.
BATCH_DURATIONS = (0.05, 0.1, 0.05)


@pytest.fixture(scope="module")
def batch_emulator() -> Iterator[OpenRouterEmulator]:
    with OpenRouterEmulator(batch_durations=BATCH_DURATIONS) as emulator:
        yield emulator


@pytest.fixture
def batch_emu(batch_emulator: OpenRouterEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenRouterEmulator:
    """The module's emulator, reset, as ``openrouter_default`` (one HTTP retry, so faults stay fast)."""
    return use_emulator(batch_emulator, monkeypatch, max_retries=1)


@pytest.fixture
def fresh_emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenRouterEmulator]:
    """An emulator of the test's own, for tests that list the workspace's batches (a lost POST is
    looked for among batches of the same model and size: other tests' batches must not be there)."""
    with OpenRouterEmulator(batch_durations=BATCH_DURATIONS) as emulator:
        for name, value in emulator.connection_env(max_retries=1).items():
            monkeypatch.setenv(name, value)
        yield emulator


@pytest.fixture(scope="module")
def paused_emulator() -> Iterator[OpenRouterEmulator]:
    with OpenRouterEmulator(manual_clock=True) as emulator:
        yield emulator


@pytest.fixture
def paused_emu(paused_emulator: OpenRouterEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenRouterEmulator:
    """An emulator whose batches run only when the test calls ``advance()``: no timing races."""
    return use_emulator(paused_emulator, monkeypatch, max_retries=1)


class FakeClock:
    """An injectable clock (``clock()`` -> seconds) that moves only when a test sets ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTaskInstance:
    """What the operator reads from ``context["ti"]``: its identity, try number and XCom pushes."""

    def __init__(self, run_id: str, task_id: str = "summarise", dag_id: str = "batch_unit") -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = dag_id, task_id, run_id, -1
        self.try_number = 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def task_context(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A context of a task run unique to the calling test (its own results file and state record)."""
    return {"ti": FakeTaskInstance(run_id=f"{request.node.name}")}


@pytest.fixture
def context(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A task run of the calling test, writing under its own temporary results path."""
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    return task_context(request)


class Summary(BaseModel):
    summary: str


def docs(n: int) -> list[dict[str, Any]]:
    return [{"id": f"doc-{i}", "text": f"Document {i} says hello."} for i in range(n)]


def summarise(**kwargs: Any) -> Any:
    """A deferrable batch operator over six documents (keyword arguments override)."""
    from airflow_openrouter.operators.batch import OpenRouterBatchOperator

    options: dict[str, Any] = {
        "task_id": "summarise",
        "items": docs(6),
        "prompt": "Summarise document {{ index }}: {{ item.text }}",
        "model": MODEL,
        "deferrable": True,
        **kwargs,
    }
    return OpenRouterBatchOperator(**options)


def record_file(context: dict[str, Any]) -> Path:
    """The JSON record of the context's task run (beside the results)."""
    import os

    from airflow_openrouter.batch.state import STATE_DIR, TaskRunIdentity

    identity = TaskRunIdentity.from_context(context)
    results = identity.results_file(os.environ["AIRFLOW__OPENROUTER__RESULTS_PATH"])
    return Path(str(results).removeprefix("file://")).parent / STATE_DIR / f"{identity.key}.json"


def wait_until_finished(batch_ids: list[str]) -> None:
    """Until every batch is terminal on the (real-clock) emulator."""
    import time

    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    with OpenRouterHook() as hook:
        for batch_id in batch_ids:
            while not hook.get_batch(batch_id).is_terminal:
                time.sleep(0.05)


def first_event(trigger: Any) -> dict[str, Any]:
    return asyncio.run(anext(trigger.run())).payload


def run_operator(operator: Any, context: dict[str, Any]) -> Any:
    """execute(); when it defers, run the trigger to its event and resume with execute_complete()."""
    try:
        return operator.execute(context)
    except TaskDeferred as deferred:
        assert deferred.method_name == "execute_complete"
        return operator.execute_complete(context, first_event(deferred.trigger))


def read_rows(output_uri: str) -> dict[str, dict[str, Any]]:
    """The rows of a local results file, by custom_id."""
    lines = Path(output_uri.removeprefix("file://")).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    by_id = {row["custom_id"]: row for row in rows}
    assert len(by_id) == len(rows), "one row per item"
    return by_id


def batch_posts(emulator: OpenRouterEmulator) -> list[dict[str, Any]]:
    return [r.body for r in emulator.requests_to("/batches", method="POST")]


def batch_polls(emulator: OpenRouterEmulator) -> int:
    """Polls of batch status: by id, or through the list endpoint."""
    by_id = emulator.requests_to("/batches/{id}", method="GET")
    return len(by_id) + len(emulator.requests_to("/batches", method="GET"))


def sent_ids(emulator: OpenRouterEmulator) -> list[list[str]]:
    """The item custom ids of every POST /batches, without the run tag."""
    from airflow_openrouter.batch.items import item_custom_id

    return [[item_custom_id(r["custom_id"]) for r in post["requests"]] for post in batch_posts(emulator)]
