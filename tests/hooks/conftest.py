from __future__ import annotations

import pytest

from airflow_openrouter.hooks.openrouter import OpenRouterHook, RetryPolicy
from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import use_emulator


class RecordedSleeps(list):
    """Stands in for time.sleep / asyncio.sleep: remembers each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="session")
def emulator():
    with OpenRouterEmulator(batch_durations=(0.05, 0.05, 0.05)) as emu:
        yield emu


@pytest.fixture
def emu(emulator: OpenRouterEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenRouterEmulator:
    """The session's emulator, reset, as ``openrouter_default`` with attribution extras."""
    return use_emulator(emulator, monkeypatch, site_url="https://example.org", app_name="nightly-etl")


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def hook(emu: OpenRouterEmulator, sleeps: RecordedSleeps):
    policy = RetryPolicy(max_retries=3, sleep=sleeps, async_sleep=sleeps.async_sleep)
    with OpenRouterHook(retry_policy=policy) as h:
        yield h


MESSAGES = [{"role": "user", "content": "Summarise: the pipeline ran twice."}]
MODEL = "openai/gpt-4-1106-preview"
