"""``OpenRouterEmulator(workers=N)``: several processes on one port, with the stateful parts exact.

Each request here opens its own connection (``Connection: close``), so the kernel spreads them over the
main process and its workers; the tests check what a user relies on whichever process answers: spend,
credits, the journal, generations, faults, the manual clock, batches, auth, and that no worker outlives
its emulator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from airflow_openrouter.testing import OpenRouterEmulator
from airflow_openrouter.testing._journal import Journal

from .helpers import MODEL, batch_body, user

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers use SO_REUSEPORT; checked on Linux")
CLOSE = {"Connection": "close"}  # one connection per request: the kernel picks the process each time


@pytest.fixture(scope="module")
def _pooled() -> Iterator[OpenRouterEmulator]:
    with OpenRouterEmulator(workers=3, manual_clock=True) as emulator:
        yield emulator


@pytest.fixture
def pooled(_pooled: OpenRouterEmulator) -> OpenRouterEmulator:
    _pooled.reset()
    return _pooled


@pytest.fixture
def http(pooled: OpenRouterEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {pooled.api_key}", **CLOSE}
    with httpx.Client(base_url=pooled.base_url, headers=headers, timeout=30) as client:
        yield client


def chat(http: httpx.Client, text: str = "hello", **body: object) -> httpx.Response:
    return http.post("/chat/completions", json={"model": MODEL, "messages": user(text), **body})


def test_workers_answer_and_the_journal_spend_and_generations_see_every_answer(
    pooled: OpenRouterEmulator, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_workers: list[object] = []
    original = Journal.record_elsewhere
    monkeypatch.setattr(
        Journal, "record_elsewhere", lambda self, e: (from_workers.append(e), original(self, e))
    )
    answers = [chat(http, f"document {i}", user=f"u{i}").json() for i in range(40)]
    embedded = http.post("/embeddings", json={"model": "openai/text-embedding-3-small", "input": "x"}).json()
    assert from_workers, "no request reached a worker process"
    recorded = pooled.requests_to("/chat/completions", method="POST")
    assert [r.body["messages"][0]["content"] for r in recorded] == [f"document {i}" for i in range(40)]
    costs = [a["usage"]["cost"] for a in answers] + [embedded["usage"]["cost"]]
    assert pooled.billed_usd == pytest.approx(sum(costs), abs=1e-12)
    assert http.get("/credits").json()["data"]["total_usage"] == pytest.approx(sum(costs), abs=1e-9)
    for i, answer in enumerate(answers):
        data = http.get("/generation", params={"id": answer["id"]}).json()["data"]
        assert data["external_user"] == f"u{i}" and data["total_cost"] == answer["usage"]["cost"]


def test_clearing_the_journal_clears_what_workers_recorded(
    pooled: OpenRouterEmulator, http: httpx.Client
) -> None:
    for _ in range(10):
        assert chat(http).status_code == 200
    pooled.clear_requests()
    assert pooled.requests == []
    assert chat(http, "after").status_code == 200
    assert [r.body["messages"][0]["content"] for r in pooled.requests] == ["after"]


def test_faults_are_taken_in_order_exactly_once_by_any_process(
    pooled: OpenRouterEmulator, http: httpx.Client
) -> None:
    pooled.fail_next(status=429, times=3, retry_after=1)
    pooled.fail_next("/embeddings", status=503)
    statuses = [chat(http).status_code for _ in range(8)]
    assert statuses == [429, 429, 429, 200, 200, 200, 200, 200]
    assert (
        http.post("/embeddings", json={"model": "openai/text-embedding-3-small", "input": "x"}).status_code
        == 503
    )
    assert all(chat(http).status_code == 200 for _ in range(10))


def test_credits_and_the_manual_clock_reach_every_process(
    pooled: OpenRouterEmulator, http: httpx.Client
) -> None:
    before = {chat(http).json()["created"] for _ in range(8)}
    pooled.advance(3600)
    after = {chat(http).json()["created"] for _ in range(8)}
    assert len(before) == len(after) == 1 and after.pop() == before.pop() + 3600
    pooled.set_credits(0)
    assert {chat(http).status_code for _ in range(12)} == {402}
    pooled.add_credits(5)
    assert {chat(http).status_code for _ in range(12)} == {200}


def test_after_a_reset_every_process_sees_the_fresh_account(
    pooled: OpenRouterEmulator, http: httpx.Client
) -> None:
    for _ in range(4):
        assert chat(http, "spend", max_tokens=2000).status_code == 200  # about $0.05 each
    spent = pooled.billed_usd
    pooled.reset()  # nothing spent since: a worker that counted the old spend would refuse with 402
    pooled.set_credits(0.01)
    assert pooled.billed_usd == 0 and spent > 0.01
    assert {chat(http, max_tokens=5).status_code for _ in range(12)} == {200}  # $0.0002 each
    assert http.get("/credits").json()["data"]["total_usage"] == pytest.approx(pooled.billed_usd, abs=1e-9)


def test_a_stream_cut_by_the_client_is_billed_for_what_was_sent_in_any_process(
    pooled: OpenRouterEmulator, http: httpx.Client
) -> None:
    full = chat(http, "a long essay please", max_tokens=400).json()["usage"]["cost"]
    pooled.set_token_delay(20)
    billed_before = pooled.billed_usd
    for _ in range(6):
        body = {"model": MODEL, "messages": user("a long essay please"), "max_tokens": 400, "stream": True}
        with http.stream("POST", "/chat/completions", json=body) as response:
            for _line in zip(range(4), response.iter_lines(), strict=False):
                pass
    deadline = time.monotonic() + 10
    while pooled.billed_usd == billed_before and time.monotonic() < deadline:
        time.sleep(0.05)
    cut = (pooled.billed_usd - billed_before) / 6
    assert 0 < cut < full


def test_batches_work_through_whichever_process_takes_the_connection(
    pooled: OpenRouterEmulator, http: httpx.Client
) -> None:
    ids = []
    for _ in range(6):
        response = http.post(
            "/batches", content=json.dumps(batch_body(3)), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    pooled.advance(10)
    for batch_id in ids:
        batch = http.get(f"/batches/{batch_id}").json()
        assert batch["status"] == "completed" and len(batch["results"]) == 3
        page = http.get(f"/batches/{batch_id}/results", params={"limit": 2}).json()
        assert len(page["data"]) == 2 and page["has_more"] is True
    assert len(http.get("/batches", params={"limit": 100}).json()["data"]) == 6
    assert len(pooled.requests_to("/batches", method="POST")) == 6


def test_a_dropped_connection_fault_is_a_dropped_connection_through_a_worker(
    pooled: OpenRouterEmulator, http: httpx.Client
) -> None:
    pooled.drop_connection_next(times=4)
    for _ in range(4):
        with pytest.raises(httpx.RemoteProtocolError):
            chat(http)
    assert chat(http).status_code == 200


def test_the_openai_sdk_runs_against_workers(pooled: OpenRouterEmulator) -> None:
    with openai.OpenAI(
        base_url=pooled.base_url, api_key=pooled.api_key, max_retries=0, default_headers=CLOSE
    ) as client:
        for _ in range(6):
            answer = client.chat.completions.create(model=MODEL, messages=user("hi"))
            assert answer.choices[0].message.content
            assert len(client.embeddings.create(model="openai/text-embedding-3-small", input="x").data) == 1


def test_workers_check_the_key_and_never_see_it_on_their_command_line() -> None:
    key = "sk-or-v1-" + "ab12" * 16
    with OpenRouterEmulator(workers=2, api_keys=[key]) as emu:
        pids = [w.process.pid for w in emu._pool._workers]  # type: ignore[union-attr]
        for pid in pids:
            assert key not in Path(f"/proc/{pid}/cmdline").read_text()
        with httpx.Client(base_url=emu.base_url, headers=CLOSE, timeout=10) as client:
            for _ in range(8):
                response = client.post(
                    "/chat/completions",
                    json={"messages": user("x")},
                    headers={"Authorization": "Bearer wrong"},
                )
                assert response.status_code == 401
                ok = client.post(
                    "/chat/completions",
                    json={"messages": user("x")},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert ok.status_code == 200
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


def test_worker_processes_exit_when_the_cli_emulator_is_killed(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_openrouter.testing", "--port", "0", "--workers", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(2)]
        assert "listening on" in banner[0] and banner[1].startswith("Workers: 3 processes share the port")
        children = [
            int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        ]
        assert len(children) == 2
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(Path(f"/proc/{pid}").exists() for pid in children), "a worker outlived its emulator"
    finally:
        process.kill()
        process.wait()


def test_workers_must_be_a_positive_integer() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="workers must be a positive integer"):
            OpenRouterEmulator(workers=bad)  # type: ignore[arg-type]
