"""Helpers for running the chat operator against the emulator without a DAG run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_openrouter.testing import OpenRouterEmulator

MODEL = "openai/gpt-4o-mini"


class RecordingTaskInstance:
    """The little of a task instance the operator touches: XCom pushes and the try number."""

    try_number = 1

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


@pytest.fixture
def emulator(openrouter_emulator, monkeypatch):
    """The emulator, with the default connection giving a default model."""
    for name, value in openrouter_emulator.connection_env(default_model=MODEL).items():
        monkeypatch.setenv(name, value)
    return openrouter_emulator


def run_task(operator, **context: Any) -> tuple[Any, RecordingTaskInstance]:
    """Render and execute *operator* as the task runner does; returns the result and the task instance."""
    ti = RecordingTaskInstance()
    full_context = {"ti": ti, "run_id": "manual__test", **context}
    operator.render_template_fields(full_context)
    return operator.execute(full_context), ti


@pytest.fixture
def wrong_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenRouterEmulator]:
    """An emulator that knows one key, and a connection holding another."""
    with OpenRouterEmulator(api_keys=["sk-or-v1-" + "right" * 4]) as emu:
        conn = json.loads(emu.connection_json(max_retries=0))
        conn["password"] = "sk-or-v1-" + "wrong" * 4
        monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", json.dumps(conn))
        yield emu


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A result cache root for the bulk operators (their results under the same tmp_path)."""
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    return f"file://{tmp_path}/cache"
