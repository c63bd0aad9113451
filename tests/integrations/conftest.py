"""Fixtures of the integration tests: an emulator whose batches finish at once (common-ai polls at most
every 30 s, so a batch still running at the first poll would make a test wait that long)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_openrouter.testing import OpenRouterEmulator


@pytest.fixture
def instant_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenRouterEmulator]:
    """An emulator of the test's own as ``openrouter_default``: batches complete as soon as created."""
    with OpenRouterEmulator(batch_durations=(0, 0, 0)) as emulator:
        for name, value in emulator.connection_env().items():
            monkeypatch.setenv(name, value)
        yield emulator


@pytest.fixture
def paused_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenRouterEmulator]:
    """An emulator of the test's own whose batches run only when the test calls ``advance()``."""
    with OpenRouterEmulator(manual_clock=True) as emulator:
        for name, value in emulator.connection_env().items():
            monkeypatch.setenv(name, value)
        yield emulator
