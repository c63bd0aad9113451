"""``OpenRouterHook.embed`` / ``aembed`` / ``list_embedding_models`` against the emulator: vectors in input
order as float32, base64 on the wire, usage with the billed cost, and the transport's retries and errors."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from array import array

import httpx
import pytest

from airflow_openrouter.exceptions import (
    OpenRouterAPIError,
    OpenRouterBadRequestError,
    OpenRouterConnectionError,
)
from airflow_openrouter.hooks.openrouter import OpenRouterHook, RetryPolicy

MODEL = "openai/text-embedding-3-small"
TEXTS = ["Quarterly revenue grew", "Churn fell in the north", "A note on sourdough"]


def posts(emu) -> list[dict]:
    return [r.body for r in emu.requests_to("/embeddings", method="POST")]


def test_embed_returns_one_unit_float32_vector_per_input_in_order_with_the_billed_cost(hook, emu):
    response = hook.embed(model=MODEL, input=TEXTS)

    assert response.usage.cost == pytest.approx(emu.billed_usd) and emu.billed_usd > 0
    assert response.usage.cost == pytest.approx(response.usage.prompt_tokens * 0.02 / 1e6)
    vectors = response.vectors()
    assert len(vectors) == 3 and all(isinstance(v, array) and v.typecode == "f" for v in vectors)
    assert all(
        len(v) == 1536 and math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors
    )
    assert vectors[0] != vectors[1] != vectors[2]
    assert hook.embed(model=MODEL, input=[TEXTS[1]]).vectors() == [vectors[1]]  # a function of the text
    assert response.model == MODEL


def test_vectors_travel_as_base64_by_default_and_decode_to_the_float_answers_values(hook, emu):
    as_base64 = hook.embed(model=MODEL, input=TEXTS, dimensions=32)
    as_float = hook.embed(model=MODEL, input=TEXTS, dimensions=32, encoding_format="float")

    first, second = posts(emu)
    assert first["encoding_format"] == "base64" and second["encoding_format"] == "float"
    assert isinstance(as_base64.data[0].embedding, str) and isinstance(as_float.data[0].embedding, list)
    assert as_base64.vectors() == as_float.vectors()
    assert len(base64.b64decode(as_base64.data[0].embedding)) == 32 * 4


def test_aembed_gives_what_embed_gives(hook):
    sync = hook.embed(model=MODEL, input=TEXTS, dimensions=64, user="etl")

    async def run():
        async with OpenRouterHook() as async_hook:
            return await async_hook.aembed(model=MODEL, input=TEXTS, dimensions=64, user="etl")

    assert asyncio.run(run()).vectors() == sync.vectors()


def test_a_string_and_token_arrays_are_inputs_too(hook, emu):
    assert len(hook.embed(model=MODEL, input="just one text").vectors()) == 1
    assert len(hook.embed(model=MODEL, input=[3, 1, 4, 1, 5]).vectors()) == 1  # one token array
    assert len(hook.embed(model=MODEL, input=[[3, 1], [4, 1, 5]]).vectors()) == 2


def test_a_refused_input_raises_the_typed_error_before_anything_is_billed(hook, emu):
    with pytest.raises(OpenRouterBadRequestError, match=r"input\[1\] is an empty string"):
        hook.embed(model=MODEL, input=["fine", ""])
    with pytest.raises(OpenRouterBadRequestError, match="not an embedding model"):
        hook.embed(model="openai/gpt-4o-mini", input=["fine"])

    assert emu.billed_usd == 0


def test_429_is_retried_after_the_wait_the_server_asked_for(hook, emu, sleeps):
    emu.fail_next("/embeddings", status=429, retry_after=2)

    assert len(hook.embed(model=MODEL, input=TEXTS).vectors()) == 3
    assert len(posts(emu)) == 2 and sleeps == [2]


def test_a_lost_answer_is_not_sent_again_because_it_may_have_been_billed(hook, emu):
    emu.drop_answer_next("/embeddings", method="POST")

    with pytest.raises(OpenRouterConnectionError, match="may have run and been billed"):
        hook.embed(model=MODEL, input=TEXTS)
    assert len(posts(emu)) == 1


def test_an_error_in_a_200_body_raises_the_typed_error(hook, emu):
    emu.error_body_next("/embeddings", times=4)

    with pytest.raises(OpenRouterAPIError):
        hook.embed(model=MODEL, input=TEXTS)


VECTOR = base64.b64encode(array("f", [1.0, 0.0]).tobytes()).decode()


@pytest.mark.parametrize(
    "data",
    [
        [{"object": "embedding", "embedding": VECTOR, "index": 0}],  # one vector for two inputs
        [{"embedding": VECTOR, "index": 0}, {"embedding": "", "index": 1}],  # an empty one
    ],
)
def test_an_answer_without_one_vector_per_input_raises_instead_of_misattributing_vectors(emu, data):
    """No server can be made to answer so: a one-off transport answers two inputs with one vector."""
    sent: list[httpx.Request] = []

    def short_answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"object": "list", "data": data, "model": MODEL})

    with (
        OpenRouterHook(
            retry_policy=RetryPolicy(max_retries=3, sleep=lambda s: None),
            transport=httpx.MockTransport(short_answer),
        ) as hook,
        pytest.raises(OpenRouterAPIError, match="1 embeddings for 2 inputs") as failed,
    ):
        hook.embed(model=MODEL, input=["a", "b"])

    assert failed.value.status == 502 and failed.value.billed and len(sent) == 1  # charged: not repeated
    assert json.loads(sent[0].content)["input"] == ["a", "b"]


def test_list_embedding_models_lists_the_embedding_catalogue_with_prices(hook):
    models = {m.id: m for m in hook.list_embedding_models()}

    assert {"openai/text-embedding-3-small", "openai/text-embedding-3-large"} <= set(models)
    assert float(models[MODEL].pricing.prompt) == pytest.approx(0.02 / 1e6)
    assert MODEL not in {m.id for m in hook.list_models()}  # /models lists text models
