"""GET /models, /models/{author}/{slug}/endpoints, /key and /credits."""

from __future__ import annotations

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import chat


def _models(client: httpx.Client) -> dict[str, dict]:
    return {m["id"]: m for m in client.get("/models").json()["data"]}


def test_models_lists_the_catalogue_with_prices_and_capabilities(client: httpx.Client) -> None:
    models = _models(client)
    assert {
        "openai/gpt-4-1106-preview",
        "openai/gpt-4o-mini",
        "anthropic/claude-3.5-haiku",
        "meta-llama/llama-3.1-8b-instruct",
        "mistralai/mistral-7b-instruct:free",
        "google/gemini-2.5-flash",
    } <= set(models)
    gpt4 = models["openai/gpt-4-1106-preview"]
    assert gpt4["pricing"]["prompt"] == "0.00001" and gpt4["pricing"]["completion"] == "0.00003"
    assert gpt4["context_length"] == 128000
    assert {"response_format", "structured_outputs", "tools", "tool_choice", "seed", "max_tokens"} <= set(
        gpt4["supported_parameters"]
    )
    assert gpt4["architecture"]["input_modalities"] == ["text", "image"]
    llama = models["meta-llama/llama-3.1-8b-instruct"]
    assert (
        "response_format" not in llama["supported_parameters"]
        and "tools" not in llama["supported_parameters"]
    )
    assert models["mistralai/mistral-7b-instruct:free"]["pricing"]["prompt"] == "0"
    for model in models.values():
        assert {
            "canonical_slug",
            "name",
            "created",
            "description",
            "top_provider",
            "per_request_limits",
            "default_parameters",
        } <= set(model)


def test_models_is_public(emu: OpenRouterEmulator) -> None:
    assert httpx.get(f"{emu.base_url}/models").status_code == 200


def test_model_endpoints_describe_the_provider(client: httpx.Client) -> None:
    data = client.get("/models/anthropic/claude-3.5-haiku/endpoints").json()["data"]
    assert data["id"] == "anthropic/claude-3.5-haiku" and data["endpoints"][0]["provider_name"] == "Anthropic"
    assert client.get("/models/nobody/nothing/endpoints").status_code == 404
    free = client.get("/models/mistralai/mistral-7b-instruct:free/endpoints").json()["data"]
    assert free["endpoints"][0]["pricing"]["prompt"] == "0"


def test_key_reports_limit_and_growing_usage(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    before = client.get("/key").json()["data"]
    assert before["usage"] == 0 and before["limit_remaining"] == before["limit"] == 100
    assert before["is_free_tier"] is False and "usage_daily" in before and "limit_reset" in before
    cost = chat(client).json()["usage"]["cost"]
    after = client.get("/key").json()["data"]
    assert after["usage"] == pytest.approx(cost) and after["usage_monthly"] == pytest.approx(cost)
    assert after["limit_remaining"] == pytest.approx(100 - cost)


def test_set_and_add_credits_move_the_remaining_balance(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.set_credits(2.5)
    assert client.get("/key").json()["data"]["limit_remaining"] == pytest.approx(2.5)
    emu.add_credits(1)
    credits = client.get("/credits").json()["data"]
    assert credits["total_credits"] - credits["total_usage"] == pytest.approx(3.5)


def test_key_object_has_budgets_regions_and_the_free_model_quota(client: httpx.Client) -> None:
    chat(client, model="mistralai/mistral-7b-instruct:free")
    cost = chat(client).json()["usage"]["cost"]
    data = client.get("/key").json()["data"]
    budget = data["effective_budget"]
    assert data["budgets"] == [budget] and budget["scope"] == "key_limit"
    assert budget["spend_usd"] == pytest.approx(cost) and budget["remaining_usd"] == data["limit_remaining"]
    assert data["allowed_data_regions"] == ["global"]
    quota = data["free_model_daily_requests"]
    assert quota["used"] == 1 and quota["remaining"] == quota["limit"] - 1
    assert {"organization_id", "workspace_id", "byok_usage_weekly"} <= set(data)


@pytest.mark.parametrize(
    "key",
    [
        "sk-or-v1-" + "ab12" * 16,  # shaped like a real key, built at run time
        "sk-or-emulator-key",
        "sk-or-v1-short",
        "abcdefghijk",
        "k",
    ],
    ids=["real-shape", "emulator-default", "short", "eleven", "one-char"],
)
def test_key_label_never_shows_most_of_the_key(key: str) -> None:
    with OpenRouterEmulator(api_keys=[key]) as emu:
        label = httpx.get(f"{emu.base_url}/key", headers={"Authorization": f"Bearer {key}"}).json()["data"][
            "label"
        ]
    shown = label.replace("...", "")
    assert key not in label and len(shown) <= len(key) / 2 + 1
    if key.startswith("sk-or-v1-") and len(key) > 32:
        assert label == f"{key[:12]}...{key[-3:]}"  # the real API's sk-or-v1-abc...xyz
