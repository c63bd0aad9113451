"""Error messages: OpenRouter's words joined with our advice once, foreign text redacted."""

from __future__ import annotations

import pytest

from airflow_openrouter._text import join_sentences, mask_key, redact
from airflow_openrouter.exceptions import OpenRouterAuthenticationError, OpenRouterPaymentRequiredError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import use_emulator

MESSAGES = [{"role": "user", "content": "Hi"}]
KEY = "sk-or-v1-" + "cd34" * 16


def test_a_message_ending_with_a_period_is_followed_by_the_advice_without_a_double_period(monkeypatch):
    with OpenRouterEmulator(api_keys=["sk-or-the-right-one"]) as emulator:
        use_emulator(emulator, monkeypatch)
        monkeypatch.setenv(
            "AIRFLOW_CONN_OPENROUTER_DEFAULT",
            emulator.connection_json().replace("sk-or-the-right-one", "sk-or-a-wrong-one"),
        )
        with pytest.raises(OpenRouterAuthenticationError) as info:
            OpenRouterHook().get_key()

    message = str(info.value)
    assert "OpenRouter error 401: User not found. Check the API key in the password" in message
    assert ".." not in message and message.endswith("has none.")


def test_a_message_without_a_final_period_gets_one_before_the_advice(openrouter_emulator):
    openrouter_emulator.set_credits(0)
    with pytest.raises(OpenRouterPaymentRequiredError) as info:
        OpenRouterHook().chat_completion(model="openai/gpt-4o-mini", messages=MESSAGES)
    assert "https://openrouter.ai/settings/credits. Add credits at" in str(info.value)
    assert ".." not in str(info.value)


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (("User not found.", "Check the key"), "User not found. Check the key."),
        (("is not a valid model ID", "Batches take text"), "is not a valid model ID. Batches take text."),
        (("Results:", "3 rows"), "Results: 3 rows."),
        (("Why?  ", None, "", "Because!"), "Why? Because!"),
    ],
)
def test_join_sentences_ends_each_part_once(parts, joined):
    assert join_sentences(*parts) == joined


@pytest.mark.parametrize(
    "text",
    [
        f"Illegal header value b'Bearer {KEY}\\n'",
        f"Illegal header value b'Bearer {KEY[:30]}\\xc3\\xa9{KEY[30:]}'",
        f"authorization: bearer {KEY}",
        f"proxy page echoing {KEY} somewhere",
    ],
)
def test_redact_removes_the_key_and_any_bearer_credential(text):
    assert KEY[:20] not in redact(text, KEY)
    assert KEY[:20] not in redact(text), "key-shaped strings go even when the key is not known"


def test_a_masked_key_shows_only_the_public_prefix_and_three_characters():
    assert mask_key(KEY) == "sk-or-v1-cd3…d34"
    assert mask_key("sk-or-short") == "***"
