"""POST /embeddings and GET /embeddings/models over HTTP: the vectors' promises, usage and cost, and every
error a caller can cause (each answered before anything is billed). Every JSON answer is also checked
with both SDKs' models (``sdk_oracle``)."""

from __future__ import annotations

import array
import base64
import math
from decimal import Decimal
from typing import Any

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

SMALL = "openai/text-embedding-3-small"
NATIVE = {
    "openai/text-embedding-3-small": 1536,
    "openai/text-embedding-3-large": 3072,
    "openai/text-embedding-ada-002": 1536,
    "qwen/qwen3-embedding-8b": 4096,
    "mistralai/mistral-embed-2312": 1024,
}
DOCS = [
    "Quarterly revenue grew in the northern region",
    "The northern region reported quarterly revenue growth",
    "A recipe for sourdough bread with a crisp crust",
]


@pytest.fixture
def client(checked_client: httpx.Client) -> httpx.Client:
    """Every JSON answer of this module is checked against the SDK models."""
    return checked_client


def embed(client: httpx.Client, input: Any, model: str = SMALL, **body: Any) -> httpx.Response:
    return client.post("/embeddings", json={"model": model, "input": input, **body})


def vectors(response: httpx.Response) -> list[list[float]]:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(len(data)))
    return [item["embedding"] for item in data]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # the vectors have unit norm


def price(client: httpx.Client, model: str) -> Decimal:
    models = {m["id"]: m for m in client.get("/embeddings/models").json()["data"]}
    return Decimal(models[model]["pricing"]["prompt"])


def test_equal_inputs_give_equal_vectors_and_different_inputs_differ(client: httpx.Client) -> None:
    first = vectors(embed(client, [DOCS[0], DOCS[1], DOCS[0]]))
    again = vectors(embed(client, DOCS[0]))
    assert first[0] == first[2] == again[0]
    assert first[0] != first[1]
    # Same words in another order are still another input; another model gives another vector.
    assert vectors(embed(client, "region northern"))[0] != vectors(embed(client, "northern region"))[0]
    assert vectors(embed(client, DOCS[0], model="openai/text-embedding-3-large"))[0][:10] != again[0][:10]


def test_texts_that_share_words_are_closer_than_unrelated_ones(client: httpx.Client) -> None:
    revenue, growth, bread = vectors(embed(client, DOCS))
    assert cosine(revenue, growth) > 0.5 > 0.2 > cosine(revenue, bread)


@pytest.mark.parametrize("model", sorted(NATIVE))
def test_vectors_have_the_native_size_unit_norm_and_float32_values(client: httpx.Client, model: str) -> None:
    (vector,) = vectors(embed(client, DOCS[0], model=model))
    assert len(vector) == NATIVE[model]
    assert math.isclose(math.hypot(*vector), 1.0, abs_tol=1e-6)
    assert array.array("f", vector).tolist() == vector  # every value is exactly a float32


def test_dimensions_shorten_the_native_vector_and_renormalise(client: httpx.Client) -> None:
    (native,) = vectors(embed(client, DOCS[0]))
    (short,) = vectors(embed(client, DOCS[0], dimensions=256))
    assert len(short) == 256 and math.isclose(math.hypot(*short), 1.0, abs_tol=1e-6)
    scale = math.hypot(*native[:256])
    assert all(
        math.isclose(s, n / scale, rel_tol=1e-5, abs_tol=1e-7)
        for s, n in zip(short, native[:256], strict=True)
    )
    (qwen,) = vectors(embed(client, DOCS[0], model="qwen/qwen3-embedding-8b", dimensions=32))
    assert len(qwen) == 32


def test_base64_is_the_little_endian_float32_bytes_of_the_float_vector(client: httpx.Client) -> None:
    (as_floats,) = vectors(embed(client, DOCS[0], encoding_format="float"))
    (as_base64,) = vectors(embed(client, DOCS[0], encoding_format="base64"))
    assert isinstance(as_base64, str)
    raw = base64.b64decode(as_base64)
    assert len(raw) == 4 * 1536
    assert array.array("f", raw).tolist() == as_floats


def test_usage_counts_characters_over_four_per_input_and_prices_them_exactly(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    texts = ["a" * 9, "b" * 8, "c"]  # 3 + 2 + 1 tokens
    response = embed(client, texts)
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == 6
    assert Decimal(repr(usage["cost"])) == 6 * price(client, SMALL)
    assert usage["cost_details"]["upstream_inference_prompt_cost"] == usage["cost"]
    assert math.isclose(emu.billed_usd, usage["cost"])
    tokens = embed(client, [[1, 2, 3, 4, 5], [7]]).json()["usage"]
    assert tokens["prompt_tokens"] == 6


def test_token_arrays_are_embedded_and_deterministic(client: httpx.Client) -> None:
    one = vectors(embed(client, [5, 6, 7]))
    assert len(one) == 1
    both = vectors(embed(client, [[5, 6, 7], [5, 6]]))
    assert both[0] == one[0] and both[0] != both[1]


def test_many_inputs_come_back_in_input_order(client: httpx.Client) -> None:
    texts = [f"document {i} about topic {i % 7}" for i in range(300)]
    many = vectors(embed(client, texts, dimensions=64))
    assert len(many) == 300
    assert many[123] == vectors(embed(client, texts[123], dimensions=64))[0]


def test_the_generation_records_the_embeddings_request_and_its_attribution(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    response = embed(client, DOCS, user="dag:nightly", session_id="run-7")
    generation_id = response.json()["id"]
    assert response.headers["x-generation-id"] == generation_id
    data = client.get("/generation", params={"id": generation_id}).json()["data"]
    assert data["api_type"] == "embeddings" and data["model"] == SMALL
    assert data["external_user"] == "dag:nightly" and data["session_id"] == "run-7"
    assert data["total_cost"] == response.json()["usage"]["cost"]
    assert emu.generation(generation_id) == data


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ""}, "empty string"),
        ({"input": []}, "non-empty"),
        ({"input": ["ok", ""]}, "input[1] is an empty string"),
        ({"input": [[1, 2], []]}, "input[1] must be a non-empty string"),
        ({"input": None}, "non-empty string"),
        ({"input": ["x"] * 2049}, "at most 2048 inputs"),
        ({"input": "x" * 40_000}, "accepts at most 8192 tokens per input"),
        ({"model": "openai/gpt-4o-mini"}, "is not an embedding model"),
        ({"model": "nobody/nothing"}, "is not a valid model ID"),
        ({"model": "openai/text-embedding-ada-002", "dimensions": 512}, "does not support the 'dimensions'"),
        ({"dimensions": 1537}, "between 1 and 1536"),
        ({"dimensions": 0}, "between 1 and 1536"),
        ({"model": "qwen/qwen3-embedding-8b", "dimensions": 16}, "between 32 and 4096"),
        ({"dimensions": "256"}, "dimensions must be a positive integer"),
        ({"encoding_format": "int8"}, "encoding_format must be 'float' or 'base64'"),
        (
            {"input": [{"content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
            "has a 'image_url' part",
        ),
        ({"metadata": {"k": 1}}, "metadata.k must be a string"),
        ({"session_id": "s" * 257}, "at most 256 characters"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_requests_are_refused_before_anything_is_billed(
    emu: OpenRouterEmulator, client: httpx.Client, body: dict, message: str
) -> None:
    response = client.post("/embeddings", json={"model": SMALL, "input": "hello", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and message in error["message"]
    assert emu.billed_usd == 0


def test_text_parts_of_a_multimodal_input_are_embedded_as_their_text(client: httpx.Client) -> None:
    parts = [{"type": "text", "text": "northern region"}, {"type": "text", "text": "revenue"}]
    (multimodal,) = vectors(embed(client, [{"content": parts}]))
    assert multimodal == vectors(embed(client, "northern region revenue"))[0]


def test_an_empty_account_gets_402_and_no_vectors(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.set_credits(0)
    response = embed(client, "hello")
    assert response.status_code == 402 and "Insufficient credits" in response.json()["error"]["message"]


def test_faults_apply_to_the_embeddings_route(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.fail_next("/embeddings", status=503, retry_after=2)
    response = embed(client, "hello")
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert embed(client, "hello").status_code == 200
    assert len(emu.requests_to("/embeddings", method="POST")) == 2


# -- the catalogue -----------------------------------------------------------------------------------


def test_embedding_models_list_sizes_and_input_prices(client: httpx.Client) -> None:
    listed = client.get("/embeddings/models").json()
    models = {m["id"]: m for m in listed["data"]}
    assert set(models) == set(NATIVE) and listed["total_count"] == len(NATIVE)
    small = models[SMALL]
    assert small["pricing"]["prompt"] == "0.00000002" and small["pricing"]["completion"] == "0"
    assert small["architecture"]["output_modalities"] == ["embeddings"]
    assert small["context_length"] == 8192 and "1536-dimensional" in small["description"]
    assert models["openai/text-embedding-3-large"]["pricing"]["prompt"] == "0.00000013"
    assert "4096-dimensional" in models["qwen/qwen3-embedding-8b"]["description"]


def test_models_lists_embedding_models_only_when_asked(client: httpx.Client) -> None:
    default = {m["id"] for m in client.get("/models").json()["data"]}
    assert SMALL not in default and "openai/gpt-4o-mini" in default
    embeddings = {
        m["id"] for m in client.get("/models", params={"output_modalities": "embeddings"}).json()["data"]
    }
    assert embeddings == set(NATIVE)
    everything = client.get("/models", params={"output_modalities": "all"}).json()
    assert {SMALL, "openai/gpt-4o-mini"} <= {m["id"] for m in everything["data"]}


def test_model_lists_page_with_offset_and_limit(client: httpx.Client) -> None:
    first = client.get("/embeddings/models", params={"offset": 0, "limit": 2}).json()
    assert len(first["data"]) == 2 and first["total_count"] == len(NATIVE)
    assert first["links"]["next"] == "/api/v1/embeddings/models?offset=2&limit=2"
    rest = client.get("/embeddings/models", params={"offset": 2, "limit": 1000}).json()
    ids = [m["id"] for m in first["data"] + rest["data"]]
    assert sorted(ids) == sorted(NATIVE) and rest["links"]["next"] is None
    assert client.get("/embeddings/models", params={"limit": 1001}).status_code == 400


def test_an_embedding_model_has_an_endpoints_page(client: httpx.Client) -> None:
    data = client.get(f"/models/{SMALL}/endpoints").json()["data"]
    assert data["id"] == SMALL and data["endpoints"][0]["provider_name"] == "OpenAI"


def test_a_chat_request_to_an_embedding_model_is_refused(client: httpx.Client) -> None:
    response = client.post(
        "/chat/completions", json={"model": SMALL, "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"{SMALL} is an embedding model and cannot be used with the chat/completions endpoint. "
        "Use the /embeddings endpoint instead."
    )
