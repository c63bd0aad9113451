"""A retry never pays twice: the emulator bills a non-streamed generation once it is generated, even when
the client has gone, and a stream only for what it sent before the client disconnected."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_openrouter.exceptions import OpenRouterTimeoutError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.operators.chat import OpenRouterChatOperator
from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import use_emulator
from tests.operators.conftest import run_task

MODEL = "openai/gpt-4-1106-preview"
MESSAGES = [{"role": "user", "content": "Write the quarterly summary of the warehouse migration."}]
SLOW_MS = 1500  # every answer takes this long ...
TIMEOUT = 0.3  # ... and the client waits this long


@pytest.fixture
def slow(openrouter_emulator: OpenRouterEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenRouterEmulator:
    use_emulator(openrouter_emulator, monkeypatch, timeout=TIMEOUT, default_model=MODEL)
    openrouter_emulator.set_latency(SLOW_MS)
    return openrouter_emulator


def billed_after_the_server_finished(emulator: OpenRouterEmulator) -> float:
    """What the account was billed, read once every request the emulator received has been answered."""
    time.sleep(SLOW_MS / 1000 + 1.0)
    emulator.set_latency(0)
    with OpenRouterHook(timeout=10) as hook:
        return hook.get_key().usage or 0.0


def one_generation(emulator: OpenRouterEmulator) -> float:
    """The price of the same completion answered in time (the emulator's pricing is deterministic)."""
    emulator.set_latency(0)
    with OpenRouterHook(timeout=10) as hook:
        return hook.chat_completion(model=MODEL, messages=MESSAGES, seed=1).usage.cost


def test_a_sync_hook_call_slower_than_its_timeout_bills_one_generation(slow):
    waits: list[float] = []
    with pytest.raises(OpenRouterTimeoutError, match="may have run and been billed"):
        OpenRouterHook(sleep=waits.append).chat_completion(model=MODEL, messages=MESSAGES, seed=1)

    billed = billed_after_the_server_finished(slow)
    assert waits == [] and len(slow.requests_to("/chat/completions")) == 1
    assert billed == pytest.approx(one_generation(slow)), "billed although the client had gone"


def test_an_async_hook_call_slower_than_its_timeout_bills_one_generation(slow):
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    async def call():
        async with OpenRouterHook(async_sleep=no_wait) as hook:
            await hook.achat_completion(model=MODEL, messages=MESSAGES, seed=1)

    with pytest.raises(OpenRouterTimeoutError):
        asyncio.run(call())

    billed = billed_after_the_server_finished(slow)
    assert waits == [] and len(slow.requests_to("/chat/completions")) == 1
    assert billed == pytest.approx(one_generation(slow))


def test_a_task_try_whose_answers_are_all_slower_than_the_timeout_bills_one_generation(slow):
    op = OpenRouterChatOperator(task_id="summary", prompt=MESSAGES[0]["content"], seed=1)

    with pytest.raises(OpenRouterTimeoutError) as info:
        run_task(op)

    billed = billed_after_the_server_finished(slow)
    assert len(slow.requests_to("/chat/completions")) == 1
    assert billed == pytest.approx(one_generation(slow))
    assert "Raise 'timeout' on connection 'openrouter_default'" in str(info.value)


def test_a_stream_the_client_closes_is_billed_only_for_what_was_sent(monkeypatch):
    with OpenRouterEmulator(token_delay_ms=50) as emulator:
        use_emulator(emulator, monkeypatch)
        with OpenRouterHook() as hook:
            stream = hook.stream_chat_completion(model=MODEL, messages=MESSAGES, seed=1)
            for _ in stream:
                if stream.completion().content and len(stream.completion().content.split()) >= 3:
                    break
            stream.close()
            time.sleep(0.5)  # the emulator notices the disconnect at its next chunk
            partial = hook.get_key().usage
            full = hook.chat_completion(model=MODEL, messages=MESSAGES, seed=1).usage.cost

    assert 0 < partial < full / 2, f"a stream closed after 3 words was billed {partial} of {full}"
