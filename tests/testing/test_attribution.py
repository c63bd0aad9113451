"""Request attribution: ``user``, ``session_id`` and ``metadata`` are checked against the documented limits
before anything is billed, returned by ``GET /generation`` where the API returns them, and visible to
tests in the journal (also for each request body of a batch submission)."""

from __future__ import annotations

import httpx
import pytest

from airflow_openrouter.testing import Attribution, OpenRouterEmulator

from .helpers import MODEL, batch_body, submit, user

METADATA = {"dag_id": "nightly", "task_id": "summarize", "run_id": "scheduled__2026-12-01", "map_index": "3"}


@pytest.fixture
def client(checked_client: httpx.Client) -> httpx.Client:
    """Every JSON answer of this module is checked against the SDK models."""
    return checked_client


def chat(client: httpx.Client, headers: dict[str, str] | None = None, **body: object) -> httpx.Response:
    return client.post(
        "/chat/completions", json={"model": MODEL, "messages": user("hello"), **body}, headers=headers or {}
    )


def test_generation_returns_user_and_session_and_the_journal_keeps_the_metadata(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    response = chat(
        client,
        user="airflow:nightly",
        session_id="nightly/2026-12-01",
        metadata=METADATA,
        headers={"HTTP-Referer": "https://airflow.example", "User-Agent": "dag-test/1"},
    )
    assert response.status_code == 200
    data = client.get("/generation", params={"id": response.json()["id"]}).json()["data"]
    assert data["external_user"] == "airflow:nightly" and data["session_id"] == "nightly/2026-12-01"
    assert data["http_referer"] == "https://airflow.example" and data["user_agent"] == "dag-test/1"
    assert "metadata" not in data  # the real GenerationResponse has no metadata field
    (recorded,) = emu.requests_to("/chat/completions", method="POST")
    assert recorded.attribution == Attribution("airflow:nightly", "nightly/2026-12-01", METADATA)


def test_without_attribution_the_fields_are_null(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    generation_id = chat(client).json()["id"]
    data = client.get("/generation", params={"id": generation_id}).json()["data"]
    assert data["external_user"] is None and data["session_id"] is None and data["http_referer"] is None
    assert emu.requests[-2].attribution == Attribution()


def test_the_session_header_applies_unless_the_body_names_a_session(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    from_header = chat(client, headers={"x-session-id": "from-header"}).json()["id"]
    body_wins = chat(client, headers={"x-session-id": "from-header"}, session_id="from-body").json()["id"]
    assert emu.generation(from_header)["session_id"] == "from-header"  # type: ignore[index]
    assert emu.generation(body_wins)["session_id"] == "from-body"  # type: ignore[index]
    sessions = [r.attribution.session_id for r in emu.requests_to("/chat/completions")]
    assert sessions == ["from-header", "from-body"]


def test_the_limits_hold_at_the_limit(client: httpx.Client) -> None:
    at_limit = {f"k{i:02d}" + "k" * 61: "v" * 512 for i in range(16)}
    assert all(len(key) == 64 for key in at_limit)
    assert chat(client, metadata=at_limit, session_id="s" * 256).status_code == 200


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, {}, "too many properties. Expected at most 16"),
        ({"metadata": {"k" * 65: "v"}}, {}, "keys may have at most 64"),
        (
            {"metadata": {"dag_id": "v" * 513}},
            {},
            "metadata.dag_id is 513 characters; values may have at most 512",
        ),
        ({"metadata": {"map_index": 3}}, {}, "metadata.map_index must be a string"),
        ({"metadata": ["dag_id"]}, {}, "metadata must be an object"),
        ({"session_id": "s" * 257}, {}, "session_id must be at most 256 characters"),
        ({}, {"x-session-id": "s" * 257}, "the x-session-id header must be at most 256"),
        ({"user": 42}, {}, "user must be a string"),
    ],
    ids=[
        "17-pairs",
        "long-key",
        "long-value",
        "int-value",
        "not-an-object",
        "long-session",
        "long-header",
        "int-user",
    ],
)
def test_attribution_past_the_limits_is_a_400_before_anything_is_billed(
    emu: OpenRouterEmulator, client: httpx.Client, body: dict, headers: dict, message: str
) -> None:
    response = chat(client, headers=headers, **body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400 and message in response.json()["error"]["message"]
    assert emu.billed_usd == 0
    streamed = chat(client, headers=headers, stream=True, **body)
    assert streamed.status_code == 400 and emu.billed_usd == 0


def test_a_batch_body_carries_attribution_and_the_journal_shows_it_per_item(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    body = batch_body(3, user="airflow:nightly", metadata={"dag_id": "nightly"})
    body["requests"][1]["body"]["metadata"] = {"dag_id": "nightly", "map_index": "1"}
    assert submit(client, body).status_code == 202
    (recorded,) = emu.requests_to("/batches", method="POST")
    items = recorded.item_attributions
    assert set(items) == {"req-0", "req-1", "req-2"}
    assert items["req-1"] == Attribution("airflow:nightly", None, {"dag_id": "nightly", "map_index": "1"})


def test_a_batch_body_past_the_metadata_limits_fails_the_batch_naming_it(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    body = batch_body(2)
    body["requests"][1]["body"]["metadata"] = {f"k{i}": "v" for i in range(17)}
    created = submit(client, body)
    assert created.status_code == 202
    emu.advance(10)
    batch = client.get(f"/batches/{created.json()['id']}").json()
    assert batch["status"] == "failed" and "custom_id 'req-1'" in batch["error"]["message"]
    assert "too many properties" in batch["error"]["message"] and emu.billed_usd == 0


def test_a_top_level_batch_metadata_is_dropped_silently(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    body = {"endpoint": "/v1/chat/completions", "model": MODEL, "metadata": {"dag_id": "d"}, **batch_body(1)}
    created = submit(client, body)
    assert created.status_code == 202 and "metadata" not in created.json()
    emu.advance(10)
    assert client.get(f"/batches/{created.json()['id']}").json()["status"] == "completed"
