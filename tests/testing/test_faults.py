"""HTTP faults, latency, auth and scenarios."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import pytest

from airflow_openrouter.testing import OpenRouterEmulator
from airflow_openrouter.testing._routes import route_matches

from .helpers import MODEL, chat

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True},
}


def test_fail_next_answers_the_status_with_retry_headers_once(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.fail_next(status=429, retry_after=2, retry_after_ms=1500)
    failed = chat(client)
    assert failed.status_code == 429
    assert failed.headers["Retry-After"] == "2" and failed.headers["retry-after-ms"] == "1500"
    assert (
        failed.json()["error"]["code"] == 429 and failed.json()["error"]["message"] == "Rate limit exceeded"
    )
    assert chat(client).status_code == 200


def test_fail_next_times_and_custom_body(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.fail_next(status=503, times=2, body={"error": {"code": 503, "message": "busy"}})
    assert [chat(client).status_code for _ in range(3)] == [503, 503, 200]
    emu.fail_next(status=500, body="upstream exploded")
    response = chat(client)
    assert response.status_code == 500 and response.text == "upstream exploded"


def test_fail_next_matches_route_and_method_only(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.fail_next(route="/batches/{id}", status=500, method="GET")
    assert chat(client).status_code == 200
    assert client.get("/batches").status_code == 200  # "/batches/{id}" does not match the list route
    assert client.delete("/batches/batch_x").status_code == 404  # nor the DELETE method
    assert client.get("/batches/batch_x").status_code == 500
    assert client.get("/batches/batch_x").status_code == 404


def test_faults_are_consumed_in_order(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.fail_next(status=502)
    emu.non_json_next()
    first, second = chat(client), chat(client)
    assert first.status_code == 502 and second.headers["content-type"].startswith("text/html")


def test_concurrent_requests_consume_exactly_times_faults(emu: OpenRouterEmulator) -> None:
    emu.fail_next(status=429, times=5)

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=emu.base_url, headers={"Authorization": "Bearer k"}) as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            responses = await asyncio.gather(
                *(client.post("/chat/completions", json=body) for _ in range(20))
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(run())
    assert statuses.count(429) == 5 and statuses.count(200) == 15


def test_drop_connection_closes_the_socket_mid_response(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.drop_connection_next()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(client)
    assert chat(client).status_code == 200


def test_error_body_next_is_http_200_with_an_error_object(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.error_body_next()
    response = chat(client)
    assert response.status_code == 200
    body = response.json()
    assert "choices" not in body and body["error"]["code"] == 502 and body["error"]["message"]


def test_non_json_next_returns_html(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.non_json_next(status=502)
    response = chat(client)
    assert response.status_code == 502 and response.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_invalid_output_next_violates_the_schema_then_recovers(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.invalid_output_next(times=1)
    assert chat(client).status_code == 200  # plain-text requests do not consume it

    def output() -> object:
        return json.loads(
            chat(client, response_format=JSON_SCHEMA_FORMAT).json()["choices"][0]["message"]["content"]
        )

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(output(), SCHEMA)
    jsonschema.validate(output(), SCHEMA)


def test_latency_delays_every_request(client: httpx.Client, emu: OpenRouterEmulator) -> None:
    emu.set_latency(150)
    started = time.monotonic()
    assert client.get("/key").status_code == 200
    assert time.monotonic() - started >= 0.15
    emu.set_latency(0)


def test_chat_and_embeddings_answers_errors_and_faults_all_wait_out_the_latency(
    client: httpx.Client, emu: OpenRouterEmulator
) -> None:
    emu.set_latency(150)
    emu.fail_next(status=429)
    calls = [
        lambda: client.post(
            "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        ),  # fault
        lambda: client.post("/chat/completions", json={"messages": []}),  # 400
        lambda: client.post("/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}),
        lambda: client.post("/embeddings", json={"model": "openai/text-embedding-3-small", "input": "x"}),
    ]
    statuses = []
    for call in calls:
        started = time.monotonic()
        statuses.append(call().status_code)
        assert time.monotonic() - started >= 0.15
    assert statuses == [429, 400, 200, 200]
    emu.set_latency(0)


def test_a_generation_is_billed_once_its_latency_has_passed(
    client: httpx.Client, emu: OpenRouterEmulator
) -> None:
    emu.set_latency(1000)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            client.post, "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
        while not emu.requests_to("/chat/completions"):
            time.sleep(0.005)
        assert emu.billed_usd == 0 and not answer.done()  # arrived, generating: not billed yet
        cost = answer.result().json()["usage"]["cost"]
    assert emu.billed_usd == cost
    emu.set_latency(0)


def test_missing_key_is_401(client: httpx.Client) -> None:
    response = client.post("/chat/completions", json={}, headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json() == {"error": {"code": 401, "message": "No auth credentials found"}}


def test_unknown_key_is_401_when_keys_are_configured() -> None:
    with OpenRouterEmulator(api_keys=["sk-good"]) as emu:
        assert emu.api_key == "sk-good"
        bad = httpx.get(f"{emu.base_url}/key", headers={"Authorization": "Bearer sk-bad"})
        assert bad.status_code == 401 and bad.json()["error"]["message"] == "User not found."
        assert (
            httpx.get(f"{emu.base_url}/key", headers={"Authorization": "Bearer sk-good"}).status_code == 200
        )
        assert httpx.get(f"{emu.base_url}/models").status_code == 200  # public


def test_unknown_route_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.json()["error"]["code"] == 404


def test_scenario_file_queues_faults_and_latency(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "latency_ms": 1,
                "credits": 5,
                "faults": [
                    {"fault": "fail_next", "status": 429, "times": 2},
                    {"fault": "non_json_next"},
                ],
            }
        )
    )
    with (
        OpenRouterEmulator(scenario=str(scenario)) as emu,
        httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}) as client,
    ):
        assert [chat(client).status_code for _ in range(2)] == [429, 429]
        assert chat(client).headers["content-type"].startswith("text/html")
        assert chat(client).json()["choices"]
        assert client.get("/key").json()["data"]["limit_remaining"] < 5


def test_scenario_rejects_unknown_faults() -> None:
    with pytest.raises(ValueError, match="fault"):
        OpenRouterEmulator(scenario={"faults": [{"fault": "explode"}]})


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/chat/completions", "/api/v1/chat/completions", True),
        ("/batches", "/api/beta/batches", True),
        ("/batches", "/api/v1/batches/b1", False),
        ("/batches/{id}", "/api/v1/batches/b1", True),
        ("/batches/{id}", "/api/v1/batches/b1/results", False),
        ("/batches/**", "/api/v1/batches/b1/results", True),
        ("/batches/*/results", "/api/v1/batches/b1/results", True),
    ],
)
def test_route_patterns_match_segment_by_segment(pattern: str, path: str, expected: bool) -> None:
    assert route_matches(pattern, path) is expected
