"""Helpers for running the chat operator against the emulator without a DAG run."""

from __future__ import annotations

from typing import Any

import pytest

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
