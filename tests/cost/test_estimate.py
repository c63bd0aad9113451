"""The estimator against what the emulator bills, the prices from /models, and the shape of an estimate
(passes, basis, contributors, the cap)."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_openrouter.cost.estimate import JobEstimate, PassCounter, check_cap
from airflow_openrouter.cost.prices import BATCH_PRICE_FACTOR, fetch_price, price_of
from airflow_openrouter.cost.tokens import completion_bound, prompt_tokens
from airflow_openrouter.exceptions import OpenRouterCostLimitError
from airflow_openrouter.hooks.openrouter import OpenRouterHook
from airflow_openrouter.types import Model

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its number",
            "parameters": {"type": "object", "properties": {"number": {"type": "string"}}},
        },
    }
]
BODIES: dict[str, dict[str, Any]] = {
    "one string": {"messages": [{"role": "user", "content": "Summarise: the quarterly numbers are up 4%."}]},
    "system and user": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Why is the sky blue? " * 17},
        ]
    },
    "unicode": {"messages": [{"role": "user", "content": "Zusammenfassung: Größe, 東京, emoji \U0001f600."}]},
    "text parts and an image": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What does this chart show?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "text", "text": "Answer in one line."},
                ],
            }
        ]
    },
    "tools and a tool call": {
        "messages": [
            {"role": "user", "content": "Where is order 7?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"number":"7"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "shipped on Monday"},
        ],
        "tools": TOOLS,
    },
}


@pytest.mark.parametrize("name", BODIES)
def test_the_prompt_estimate_is_what_the_emulator_bills(openrouter_emulator, name):
    body = BODIES[name]
    with OpenRouterHook() as hook:
        completion = hook.chat_completion(model="openai/gpt-4o-mini", max_tokens=5, **body)

    assert completion.usage is not None
    assert prompt_tokens(body) == completion.usage.prompt_tokens


def test_the_completion_bound_is_max_tokens_else_the_models_limit_else_its_context():
    kwargs = {"model_max_completion": 16_384, "context_length": 128_000, "prompt": 1_000}
    assert completion_bound({"max_tokens": 300}, **kwargs) == (300, "max_tokens")
    assert completion_bound({"max_tokens": 300, "max_completion_tokens": 200}, **kwargs).tokens == 200
    assert completion_bound({}, **kwargs) == (16_384, "model max_completion_tokens")
    assert completion_bound({}, **{**kwargs, "model_max_completion": None}) == (127_000, "context length")
    assert completion_bound({}, model_max_completion=None, context_length=None, prompt=5).tokens is None
    assert completion_bound({"max_tokens": True}, **kwargs).source != "max_tokens"  # a bool is no limit


def test_prices_come_from_models_and_a_variant_is_priced_as_its_base(openrouter_emulator):
    with OpenRouterHook() as hook:
        price = fetch_price(hook, "openai/gpt-4o-mini")
        models = hook.list_models()

    assert price is not None
    assert price.prompt == Decimal("0.00000015") and price.completion == Decimal("0.0000006")
    assert price.max_completion_tokens == 16_384 and price.per_million() == "$0.15/$0.60 per 1M"
    variant = price_of("openai/gpt-4o-mini:floor", models)
    assert (
        variant is not None and variant.listed_as == "openai/gpt-4o-mini" and variant.prompt == price.prompt
    )
    free = price_of("mistralai/mistral-7b-instruct:free", models)
    assert free is not None and free.listed_as == "mistralai/mistral-7b-instruct:free" and free.prompt == 0
    assert price_of("nobody/no-such-model", models) is None


def test_a_price_that_is_not_a_number_counts_as_zero_not_as_a_crash():
    model = Model.model_validate(
        {"id": "m", "pricing": {"prompt": "-1", "completion": "n/a", "request": "0.01"}}
    )

    price = price_of("m", [model])

    assert (
        price is not None and price.prompt == 0 and price.completion == 0 and price.request == Decimal("0.01")
    )


def _estimate(bodies: list[dict[str, Any]], *, factor: Decimal = Decimal(1), **kwargs: Any) -> JobEstimate:
    model = Model.model_validate(
        {
            "id": "m",
            "pricing": {"prompt": "0.000001", "completion": "0.000002"},
            "top_provider": {"max_completion_tokens": 1000},
        }
    )
    price = price_of("m", [model])
    counter = PassCounter("first pass", price, price_factor=factor)
    for i, body in enumerate(bodies):
        counter.add(f"item-{i}", body)
    return JobEstimate("m", price, (counter.result(),), **kwargs)


def test_an_estimate_is_prompt_plus_completion_bound_at_the_price_times_the_factor():
    bodies = [{"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}] * 3

    estimate = _estimate(bodies, factor=BATCH_PRICE_FACTOR)

    assert estimate.total_usd == pytest.approx((3 * 100 * 1e-6 + 3 * 50 * 2e-6) * 0.5)
    assert estimate.basis().startswith(
        "first pass: 3 items, 300 prompt + up to 150 completion tokens (max_tokens 50)"
    )


def test_a_later_pass_adds_to_the_total_the_basis_and_the_contributors():
    """How a recovery pass (resending failed rows) is added, without changing the estimate's code."""
    first = _estimate([{"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 10}] * 10)
    recovery = PassCounter("recovery pass 1", first.price)
    recovery.add(
        "item-3", {"messages": [{"role": "user", "content": "x" * 40 + " fix it " * 5}], "max_tokens": 10}
    )

    both = first.with_pass(recovery.result())

    assert both.items == 11
    assert both.total_usd == pytest.approx(first.total_usd + (20 * 1e-6 + 10 * 2e-6))
    assert "; recovery pass 1: 1 item, 20 prompt + up to 10 completion tokens" in both.basis()
    assert any("1 item \u00d7 \u2264 10 completion tokens" in c for c in both.contributors(limit=10))


def test_the_cap_error_lists_the_largest_contributors_costliest_first():
    bodies = [{"messages": [{"role": "user", "content": "x" * 4000}], "max_tokens": 4096}] * 24
    estimate = _estimate(bodies, earlier_usd=0.25)

    with pytest.raises(OpenRouterCostLimitError) as refused:
        check_cap(estimate, 0.1)

    first, second, third = refused.value.contributors[:3]
    assert first == "billed by earlier tries of this task run = $0.2500"
    assert second == "24 items \u00d7 \u2264 4,096 completion tokens (max_tokens) = $0.1966"
    assert third.startswith("24,000 prompt tokens, the longest 1,000 (item 'item-0') = $0.0240")
    assert refused.value.estimate_usd == pytest.approx(0.1966 + 0.25 + 0.024, abs=1e-4)
    check_cap(estimate, 1.0)  # within the cap: nothing raised
    check_cap(estimate, None)


def test_nothing_to_send_is_never_over_the_cap_even_when_earlier_tries_spent_it():
    estimate = _estimate([], earlier_usd=5.0)

    check_cap(estimate, 1.0)  # re-attaching to what is paid for already costs nothing more
    assert estimate.total_usd == 5.0


def test_a_request_without_any_bound_cannot_be_capped():
    model = Model.model_validate({"id": "m", "pricing": {"prompt": "0.000001", "completion": "0.000002"}})
    counter = PassCounter("first pass", price_of("m", [model]))
    counter.add("a", {"messages": [{"role": "user", "content": "hi"}]})
    estimate = JobEstimate("m", price_of("m", [model]), (counter.result(),))

    assert estimate.total_usd is None
    with pytest.raises(OpenRouterCostLimitError, match=r"no completion bound.*Set max_tokens"):
        check_cap(estimate, 1.0)


def test_the_token_rule_is_the_emulators_documented_rule():
    """The estimator and the emulator share one documented rule; this keeps them from drifting apart."""
    from airflow_openrouter.cost import tokens
    from airflow_openrouter.testing import _catalogue

    assert (tokens.IMAGE_TOKENS, tokens.FILE_TOKENS) == (_catalogue.IMAGE_TOKENS, _catalogue.FILE_TOKENS)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "ceil(n / 4)" in readme
