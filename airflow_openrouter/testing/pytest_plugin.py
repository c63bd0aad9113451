"""pytest plugin (entry point ``openrouter_emulator``): emulator fixtures for provider users.

* ``openrouter_emulator`` -- a fresh emulator per test, with ``AIRFLOW_CONN_OPENROUTER_DEFAULT`` pointing
  at it (set through ``monkeypatch``, so it is undone after the test). Batches finish by themselves in
  about half a second of real time (so polling code under test terminates); ``advance(seconds)`` jumps
  ahead, e.g. ``advance(60)`` completes every batch at once.
* ``openrouter_emulator_session`` -- one emulator for the whole session (real clock, short batch
  durations); the environment is left alone, so use ``connection_env()`` yourself. Tests sharing it
  should not leave faults queued.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import OpenRouterEmulator


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
