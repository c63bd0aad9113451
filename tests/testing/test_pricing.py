"""Cost data a client can estimate with and check against: ``/models`` prices every model, the token
counting rule is the documented one, and what is billed (sync and batch) is exactly tokens x the
published prices (x 0.5 in a batch)."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import MODEL, batch_body, submit, user

IMAGE = "data:image/png;base64,iVBORw0KGgo="


def prices(client: httpx.Client) -> dict[str, tuple[Decimal, Decimal]]:
    return {
        m["id"]: (Decimal(m["pricing"]["prompt"]), Decimal(m["pricing"]["completion"]))
        for m in client.get("/models").json()["data"]
    }


def billed(usage: dict, price: tuple[Decimal, Decimal], factor: Decimal = Decimal(1)) -> Decimal:
    return (usage["prompt_tokens"] * price[0] + usage["completion_tokens"] * price[1]) * factor


def test_every_model_publishes_prompt_and_completion_prices_per_token(client: httpx.Client) -> None:
    for model in client.get("/models").json()["data"]:
        pricing = model["pricing"]
        assert Decimal(pricing["prompt"]) >= 0 and Decimal(pricing["completion"]) >= 0, model["id"]
        # The real API publishes no batch price: neither Model nor PublicPricing has such a field.
        assert not [key for key in pricing if "batch" in key], model["id"]
        assert not [key for key in model if "batch" in key], model["id"]
    paid = prices(client)[MODEL]
    assert paid == (Decimal("0.00001"), Decimal("0.00003"))


@pytest.mark.parametrize(
    "model", ["openai/gpt-4-1106-preview", "openai/gpt-4o-mini", "anthropic/claude-3.5-haiku"]
)
def test_a_generation_costs_exactly_its_tokens_at_the_published_prices(
    emu: OpenRouterEmulator, client: httpx.Client, model: str
) -> None:
    price = prices(client)[model]
    total = Decimal(0)
    for text, extra in [("Summarize the revenue report", {}), ("Write a long answer", {"max_tokens": 333})]:
        usage = client.post(
            "/chat/completions", json={"model": model, "messages": user(text), **extra}
        ).json()["usage"]
        assert Decimal(repr(usage["cost"])) == billed(usage, price)
        total += Decimal(repr(usage["cost"]))
    assert Decimal(repr(emu.billed_usd)) == total


def test_prompt_tokens_follow_the_documented_rule(client: httpx.Client) -> None:
    # ceil(chars / 4) per string content and per text part, 85 per image, framing counts nothing.
    messages = [
        {"role": "system", "content": "x" * 10},  # 3
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "y" * 4},
                {"type": "image_url", "image_url": {"url": IMAGE}},
            ],
        },
        {"role": "assistant", "content": "z"},  # 1
        {"role": "user", "content": "w" * 17},  # 5
    ]
    usage = client.post("/chat/completions", json={"model": MODEL, "messages": messages}).json()["usage"]
    assert usage["prompt_tokens"] == 3 + 1 + 85 + 1 + 5
    answer = client.post("/chat/completions", json={"model": MODEL, "messages": user("hello")}).json()
    content = answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] == math.ceil(len(content) / 4)


def test_tools_are_counted_as_their_json(client: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    plain = client.post("/chat/completions", json={"model": MODEL, "messages": user("abcd")}).json()["usage"]
    with_tools = client.post(
        "/chat/completions",
        json={"model": MODEL, "messages": user("abcd"), "tools": tools, "tool_choice": "none"},
    ).json()["usage"]
    assert with_tools["prompt_tokens"] - plain["prompt_tokens"] == math.ceil(len(json.dumps(tools)) / 4)


def test_max_tokens_bounds_the_billed_completion(client: httpx.Client) -> None:
    for budget in (1, 16, 200):
        usage = client.post(
            "/chat/completions", json={"model": MODEL, "messages": user("a long essay"), "max_tokens": budget}
        ).json()["usage"]
        assert usage["completion_tokens"] <= budget


def test_a_batch_costs_exactly_half_of_its_tokens_at_the_published_prices(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    price = prices(client)["openai/gpt-4o-mini"]
    created = submit(client, batch_body(25, model="openai/gpt-4o-mini", max_tokens=40)).json()
    emu.advance(10)
    batch = client.get(f"/batches/{created['id']}").json()
    half = Decimal("0.5")
    for row in batch["results"]:
        usage = row["response"]["body"]["usage"]
        assert Decimal(repr(usage["cost"])) == billed(usage, price, half)
        sync = client.post(
            "/chat/completions",
            json={
                "model": "openai/gpt-4o-mini",
                "messages": user(f"Summarize document number {row['custom_id'][4:]}"),
                "max_tokens": 40,
            },
        ).json()["usage"]
        assert (sync["prompt_tokens"], sync["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
    assert Decimal(repr(batch["usage"]["cost"])) == billed(batch["usage"], price, half)
    details = batch["usage"]["cost_details"]
    assert details["upstream_inference_prompt_cost"] + details[
        "upstream_inference_completions_cost"
    ] == pytest.approx(batch["usage"]["cost"], abs=1e-15)


def test_the_free_model_bills_nothing(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    usage = client.post(
        "/chat/completions", json={"model": "mistralai/mistral-7b-instruct:free", "messages": user("hi")}
    ).json()["usage"]
    assert usage["cost"] == 0 and usage["prompt_tokens"] > 0 and emu.billed_usd == 0
