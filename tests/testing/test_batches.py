"""The Batch API: submission checks, lifecycle, listing, results, deletion and batch faults."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import MODEL, batch_body, submit, user


def _create(client: httpx.Client, n: int = 3, **item_body: object) -> dict:
    response = submit(client, batch_body(n, **item_body))
    assert response.status_code == 202, response.text
    return response.json()


def _complete(emu: OpenRouterEmulator) -> None:
    emu.advance(10)


def test_create_returns_202_validating_batch_object(client: httpx.Client) -> None:
    batch = _create(client)
    assert batch["id"].startswith("batch_") and batch["object"] == "batch"
    assert batch["status"] == "validating" and batch["endpoint"] == "/v1/chat/completions"
    assert batch["model"] == MODEL and batch["completion_window"] == "24h"
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert batch["usage"] is None and batch["results"] is None and batch["error"] is None
    assert batch["finalized_at"] is None


def test_lifecycle_follows_the_manual_clock(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    batch = _create(client, n=10)

    def poll() -> dict:
        return client.get(f"/batches/{batch['id']}").json()

    assert poll()["status"] == "validating"
    emu.advance(1.5)  # half-way through in_progress (durations 1.0, 1.0, 0.5)
    running = poll()
    assert running["status"] == "in_progress" and running["request_counts"]["completed"] == 5
    assert running["results"] is None
    emu.advance(0.75)
    assert poll()["status"] == "finalizing"
    emu.advance(1)
    done = poll()
    assert done["status"] == "completed" and done["finalized_at"] >= done["created_at"]
    assert done["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    assert len(done["results"]) == 10 and done["usage"]["total_tokens"] > 0


def test_lifecycle_follows_the_real_clock_with_short_durations() -> None:
    with (
        OpenRouterEmulator(batch_durations=(0.05, 0.05, 0.05)) as emu,
        httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}) as client,
    ):
        batch = _create(client)
        deadline = time.monotonic() + 5
        while client.get(f"/batches/{batch['id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_beta_prefix_serves_the_same_batches(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    created = submit(client, batch_body(), path=f"{emu.base_url.replace('/v1', '/beta')}/batches").json()
    assert client.get(f"/batches/{created['id']}").status_code == 200
    assert len(emu.requests_to("/batches", method="POST")) == 1


def test_results_rows_match_synchronous_chat_content(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    batch = _create(client, n=4)
    _complete(emu)
    rows = {row["custom_id"]: row for row in client.get(f"/batches/{batch['id']}").json()["results"]}
    row = rows["req-2"]
    assert row["id"].startswith("batch_req_") and row["error"] is None
    assert row["response"]["status_code"] == 200 and row["response"]["request_id"]
    body = row["response"]["body"]
    assert body["id"].startswith("gen-batch-") and body["object"] == "chat.completion"
    sync = client.post(
        "/chat/completions", json={"model": MODEL, "messages": user("Summarize document number 2")}
    ).json()
    assert body["choices"][0]["message"]["content"] == sync["choices"][0]["message"]["content"]
    assert body["usage"]["cost"] == pytest.approx(sync["usage"]["cost"] / 2)


def test_usage_is_billed_at_half_the_sync_price(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    batch = _create(client, n=5)
    _complete(emu)
    done = client.get(f"/batches/{batch['id']}").json()
    usage = done["usage"]
    full_price = usage["prompt_tokens"] * 10e-6 + usage["completion_tokens"] * 30e-6
    assert usage["cost"] == pytest.approx(full_price / 2)
    assert usage["cost"] == pytest.approx(
        sum(r["response"]["body"]["usage"]["cost"] for r in done["results"])
    )
    assert client.get("/key").json()["data"]["usage"] == pytest.approx(usage["cost"])


def test_results_are_shuffled_deterministically(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    batch = _create(client, n=20)
    _complete(emu)
    first = [r["custom_id"] for r in client.get(f"/batches/{batch['id']}").json()["results"]]
    second = [r["custom_id"] for r in client.get(f"/batches/{batch['id']}").json()["results"]]
    assert first == second and sorted(first) == sorted(f"req-{i}" for i in range(20))
    assert first != [f"req-{i}" for i in range(20)]


def test_results_endpoint_pages_with_an_opaque_cursor(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    batch = _create(client, n=7)
    _complete(emu)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/batches/{batch['id']}/results", params=params).json()
        assert page["object"] == "list"
        seen += [row["custom_id"] for row in page["data"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3 and sorted(seen) == sorted(f"req-{i}" for i in range(7))
    again = client.get(f"/batches/{batch['id']}/results", params={"limit": 3, "cursor": cursor}).json()
    assert [row["custom_id"] for row in again["data"]] == seen[-1:]  # pages are stable on retry


def test_results_endpoint_rejects_bad_cursor_and_unfinished_batches(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    batch = _create(client)
    unfinished = client.get(f"/batches/{batch['id']}/results")
    assert unfinished.status_code == 409 and "validating" in unfinished.json()["error"]["message"]
    _complete(emu)
    assert client.get(f"/batches/{batch['id']}/results", params={"cursor": "bogus"}).status_code == 400
    assert client.get(f"/batches/{batch['id']}/results", params={"limit": 0}).status_code == 400


def test_large_batch_results_page_lazily_with_max_tokens_sized_outputs(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    batch = _create(client, n=300, max_tokens=500)
    _complete(emu)
    page = client.get(f"/batches/{batch['id']}/results", params={"limit": 1000}).json()
    assert len(page["data"]) == 300 and not page["has_more"]
    sizes = [len(row["response"]["body"]["choices"][0]["message"]["content"]) for row in page["data"]]
    assert min(sizes) > 1500


# -- submission checks --------------------------------------------------------------------------


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == status
    return response.json()["error"]["message"]


def test_requests_before_endpoint_and_model_is_rejected(client: httpx.Client) -> None:
    body = batch_body()
    reordered = {"requests": body["requests"], "endpoint": body["endpoint"], "model": body["model"]}
    assert "before `requests`" in _error(submit(client, reordered), 400)
    assert "before `requests`" in _error(
        submit(client, {"endpoint": body["endpoint"], "requests": body["requests"]}), 400
    )


def test_missing_custom_id_names_the_request(client: httpx.Client) -> None:
    body = batch_body()
    del body["requests"][1]["custom_id"]
    assert _error(submit(client, body), 400) == "custom_id is required on requests[1]."


def test_duplicate_and_overlong_custom_ids_are_422(client: httpx.Client) -> None:
    body = batch_body()
    body["requests"][2]["custom_id"] = "req-0"
    assert "Duplicate" in _error(submit(client, body), 422)
    body["requests"][2]["custom_id"] = "x" * 65
    assert "64" in _error(submit(client, body), 422)


def test_too_many_requests_names_the_limit() -> None:
    with (
        OpenRouterEmulator(max_batch_requests=3) as emu,
        httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}) as client,
    ):
        assert "at most 3" in _error(submit(client, batch_body(4)), 400)


def test_oversized_payload_is_413(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_openrouter.testing._batch_submit.MAX_BATCH_PAYLOAD_BYTES", 100)
    assert _error(submit(client, batch_body()), 413) == "Batch input exceeds the 200 MB payload limit."


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            lambda b: b["requests"][0]["body"].update(model="openai/gpt-4o-mini"),
            400,
            "does not match the batch model",
        ),
        (
            lambda b: b.update(model="mistralai/mistral-7b-instruct:free"),
            400,
            "Model 'mistralai/mistral-7b-instruct:free' does not have a :batch endpoint.",
        ),
        (lambda b: b.update(model="nobody/nothing"), 400, "is not a valid model ID"),
        (lambda b: b.update(endpoint="/v1/responses"), 400, "unsupported in emulator"),
        (
            lambda b: b.update(endpoint="/v1/embeddings"),
            400,
            "openai/gpt-4-1106-preview is not an embedding model",
        ),
        (lambda b: b.update(endpoint="/v2/other"), 400, "endpoint must be one of"),
        (lambda b: b.update(requests=[]), 400, "non-empty"),
        (lambda b: b["requests"][0]["body"].update(stream=True), 400, "stream"),
        (
            lambda b: b["requests"][0]["body"].update(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            ),
            400,
            "text only",
        ),
    ],
    ids=[
        "model-mismatch",
        "no-batch-endpoint",
        "unknown-model",
        "unsupported-endpoint",
        "chat-model-on-embeddings",
        "bad-endpoint",
        "no-requests",
        "stream",
        "multimodal",
    ],
)
def test_invalid_submissions_are_rejected(
    client: httpx.Client, change: Callable[[dict], object], status: int, message: str
) -> None:
    body = batch_body()
    change(body)
    assert message in _error(submit(client, body), status)


def test_invalid_request_body_fails_the_batch_after_validation(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    body = batch_body()
    body["requests"][1]["body"]["messages"] = []
    batch = submit(client, body)
    assert batch.status_code == 202
    emu.advance(1)
    failed = client.get(f"/batches/{batch.json()['id']}").json()
    assert failed["status"] == "failed" and failed["results"] is None
    assert "requests[1]" in failed["error"]["message"]


def test_no_credits_refuses_new_batches_with_402(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.set_credits(0)
    assert _error(submit(client, batch_body()), 402) == "Insufficient balance for this batch."


# -- list and delete ----------------------------------------------------------------------------


def test_list_is_newest_first_with_after_pagination(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    ids = []
    for _ in range(3):
        ids.append(_create(client)["id"])
        emu.advance(1)
    first = client.get("/batches", params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    assert first["first_id"] == ids[2] and first["last_id"] == ids[1]
    assert all(b["results"] is None for b in first["data"])
    rest = client.get("/batches", params={"limit": 2, "after": first["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False


def test_list_filters_by_status_and_creation_time(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    old = _create(client)
    emu.advance(10)
    new = _create(client)
    completed = client.get("/batches", params={"status": "completed"}).json()["data"]
    assert [b["id"] for b in completed] == [old["id"]]
    both = client.get("/batches", params=[("status", "completed"), ("status", "validating")]).json()["data"]
    assert len(both) == 2
    after = client.get("/batches", params={"created_after": str(old["created_at"] + 5)}).json()["data"]
    assert [b["id"] for b in after] == [new["id"]]
    before = client.get("/batches", params={"created_before": "2000-01-01"}).json()["data"]
    assert before == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"status": "finalizing"},
        {"created_after": "yesterday"},
        {"after": "batch_nope"},
    ],
)
def test_invalid_list_query_is_400(client: httpx.Client, params: dict) -> None:
    assert _error(client.get("/batches", params=params), 400) == "Invalid batch list query."


def test_delete_is_409_until_terminal_then_deletes(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    batch = _create(client)
    message = _error(client.delete(f"/batches/{batch['id']}"), 409)
    assert (
        message
        == "Only completed, failed, expired, or cancelled batches can be deleted. Wait for the batch to finish and try again."
    )
    _complete(emu)
    deleted = client.delete(f"/batches/{batch['id']}").json()
    assert deleted == {
        "id": batch["id"],
        "object": "batch",
        "deletion": {"openrouter": "deleted", "upstream": {"provider": "OpenAI", "status": "deleted"}},
    }
    assert client.get(f"/batches/{batch['id']}").status_code == 404


def test_unknown_batch_is_404(client: httpx.Client) -> None:
    assert "not found" in _error(client.get("/batches/batch_missing"), 404)


# -- batch faults -------------------------------------------------------------------------------


def test_batch_outcome_failed_carries_the_reason(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.batch_outcome_next("failed", reason="provider rejected the file")
    batch = _create(client)
    _complete(emu)
    failed = client.get(f"/batches/{batch['id']}").json()
    assert failed["status"] == "failed" and failed["error"] == {"message": "provider rejected the file"}
    assert failed["results"] is None and failed["finalized_at"] is not None
    assert client.get(f"/batches/{_create(client)['id']}").json()["error"] is None  # only the next batch


def test_batch_outcome_expired_has_no_results(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.batch_outcome_next("expired")
    batch = _create(client)
    _complete(emu)
    expired = client.get(f"/batches/{batch['id']}").json()
    assert expired["status"] == "expired" and expired["results"] is None and expired["usage"] is None


def test_batch_outcome_cancelled_passes_through_cancelling(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    emu.batch_outcome_next("cancelled")
    batch = _create(client)
    emu.advance(2.2)
    assert client.get(f"/batches/{batch['id']}").json()["status"] == "cancelling"
    _complete(emu)
    cancelled = client.get(f"/batches/{batch['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["results"] is None


def test_batch_item_errors_by_custom_id(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.batch_item_errors_next(custom_ids=["req-1"])
    batch = _create(client)
    _complete(emu)
    done = client.get(f"/batches/{batch['id']}").json()
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    row = next(r for r in done["results"] if r["custom_id"] == "req-1")
    assert row["response"] is None and set(row["error"]) >= {"type", "message", "param"}


def test_batch_item_errors_by_fraction(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.batch_item_errors_next(fraction=0.1)
    batch = _create(client, n=50)
    _complete(emu)
    rows = client.get(f"/batches/{batch['id']}/results", params={"limit": 100}).json()["data"]
    assert sum(r["error"] is not None for r in rows) == 5


def test_batch_invalid_output_for_chosen_items(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"topic": {"type": "string"}},
        "required": ["topic"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}
    emu.batch_invalid_output_next(custom_ids=["req-0"])
    batch = _create(client, response_format=response_format)
    _complete(emu)
    rows = {
        r["custom_id"]: json.loads(r["response"]["body"]["choices"][0]["message"]["content"])
        for r in client.get(f"/batches/{batch['id']}").json()["results"]
    }
    assert "topic" not in rows["req-0"] and isinstance(rows["req-1"]["topic"], str)


def test_payment_required_until_credits_are_added(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.batch_payment_required_until_credits()
    batch = _create(client)
    assert client.get(f"/batches/{batch['id']}").status_code == 200  # only finished batches are withheld
    _complete(emu)
    held = client.get(f"/batches/{batch['id']}")
    assert held.status_code == 402
    assert (
        held.json()["results"] is None
        and held.json()["error"]["code"] == 402
        and held.json()["status"] == "completed"
    )
    assert client.get(f"/batches/{batch['id']}/results").status_code == 402
    emu.add_credits(5)
    released = client.get(f"/batches/{batch['id']}")
    assert released.status_code == 200 and len(released.json()["results"]) == 3


def test_new_batch_is_not_found_for_a_while(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.batch_not_found_for(seconds=2.0)
    batch = _create(client)
    assert client.get(f"/batches/{batch['id']}").status_code == 404
    assert client.get("/batches").json()["data"] == []
    emu.advance(2)
    assert client.get(f"/batches/{batch['id']}").status_code == 200


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"order": ["openai"]}, "provider.order is not supported for batches"),
        (
            {"only": ["openai"], "sort": "price", "ignore": []},
            "provider.ignore, provider.sort are not supported",
        ),
        ({"require_parameters": True}, "provider.require_parameters is not supported"),
        ({"only": "openai"}, "provider.only must be an array of provider slugs."),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks must be a boolean."),
        (["openai"], "provider must be an object."),
    ],
    ids=["order", "several", "require-parameters", "only-not-a-list", "fallbacks-not-bool", "not-an-object"],
)
def test_batch_provider_accepts_only_only_and_allow_fallbacks(
    emu: OpenRouterEmulator, client: httpx.Client, provider: object, message: str
) -> None:
    body = {"endpoint": "/v1/chat/completions", "model": MODEL, "provider": provider, **batch_body()}
    response = submit(client, body)
    assert response.status_code == 400
    error = response.json()
    # The batch error envelope: code and message only, no metadata; nothing is stored.
    assert set(error) == {"error"} and set(error["error"]) == {"code", "message"}
    assert error["error"]["message"].startswith(message)
    assert client.get("/batches").json()["data"] == []
    accepted = {"only": ["openai"], "allow_fallbacks": False}
    assert submit(client, {**body, "provider": accepted}).status_code == 202


def test_expires_at_and_provider_follow_the_assigned_provider(client: httpx.Client) -> None:
    openai_batch = _create(client)
    assert openai_batch["provider"] == "OpenAI"
    assert openai_batch["expires_at"] == openai_batch["created_at"] + 24 * 3600
    vertex = submit(client, batch_body(model="google/gemini-2.5-flash")).json()
    assert vertex["provider"] == "Google" and vertex["expires_at"] == vertex["created_at"] + 96 * 3600
    with OpenRouterEmulator(manual_clock=True, batch_expiry_hours={"Google": None, "OpenAI": 1}) as emu:
        auth = {"Authorization": f"Bearer {emu.api_key}"}
        with httpx.Client(base_url=emu.base_url, headers=auth) as other:
            assert submit(other, batch_body(model="google/gemini-2.5-flash")).json()["expires_at"] is None
            short = submit(other, batch_body()).json()
            assert short["expires_at"] == short["created_at"] + 3600


def test_batch_results_are_served_by_the_assigned_provider(
    emu: OpenRouterEmulator, client: httpx.Client
) -> None:
    batch = submit(client, batch_body(2, model="google/gemini-2.5-flash")).json()
    _complete(emu)
    rows = client.get(f"/batches/{batch['id']}").json()["results"]
    assert {row["response"]["body"]["provider"] for row in rows} == {"Google"}
    usage = rows[0]["response"]["body"]["usage"]
    assert usage["cost_details"]["upstream_inference_prompt_cost"] > 0 and usage["is_byok"] is False
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    deleted = client.delete(f"/batches/{batch['id']}").json()
    assert deleted["deletion"]["upstream"]["provider"] == "Google"


def test_a_batch_still_running_at_expires_at_is_expired() -> None:
    # Durations longer than the provider's window: the provider gives up at expires_at.
    with OpenRouterEmulator(manual_clock=True, batch_durations=(1, 30 * 3600, 1)) as emu:
        auth = {"Authorization": f"Bearer {emu.api_key}"}
        with httpx.Client(base_url=emu.base_url, headers=auth) as http:
            batch = submit(http, batch_body(4)).json()
            emu.advance(24 * 3600 - 1)
            assert http.get(f"/batches/{batch['id']}").json()["status"] == "in_progress"
            emu.advance(2)
            expired = http.get(f"/batches/{batch['id']}").json()
    assert expired["status"] == "expired" and expired["finalized_at"] == batch["expires_at"]
    assert expired["results"] is None and 0 < expired["request_counts"]["completed"] < 4
