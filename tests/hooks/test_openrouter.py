"""OpenRouterHook against the emulator over loopback: the calls, the retry policy, the errors."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
import threading

import httpx
import pytest

from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterBadRequestError,
    OpenRouterConflictError,
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterNotFoundError,
    OpenRouterPaymentRequiredError,
    OpenRouterPermissionDeniedError,
    OpenRouterRateLimitError,
    OpenRouterServerError,
    OpenRouterTimeoutError,
)
from airflow_openrouter.hooks.openrouter import ClientSettings, OpenRouterHook, RetryPolicy
from airflow_openrouter.testing import OpenRouterEmulator
from tests.hooks.conftest import MESSAGES, MODEL

# --- chat completions ---------------------------------------------------------------------------


def test_chat_completion_returns_typed_answer_with_usage_and_cost(hook, emu):
    result = hook.chat_completion(model=MODEL, messages=MESSAGES, seed=7, max_tokens=50)

    assert result.id.startswith("gen-")
    assert result.choices[0].message.content
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    # $10 / $30 per million tokens for the seed model.
    expected = (result.usage.prompt_tokens * 10 + result.usage.completion_tokens * 30) / 1e6
    assert result.usage.cost == pytest.approx(expected)
    assert result.provider


def test_chat_completion_sends_every_parameter_and_extra_body(hook, emu):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    hook.chat_completion(
        model=MODEL,
        messages=MESSAGES,
        seed=7,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],
        frequency_penalty=0.1,
        presence_penalty=0.1,
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        tools=tools,
        tool_choice="auto",
        models=["openai/gpt-4o-mini"],
        provider={"sort": "price"},
        reasoning={"effort": "low"},
        plugins=[{"id": "response-healing"}],
        user="etl",
        max_tokens=None,
        extra_body={"session_id": "nightly"},
    )

    body = emu.requests_to("/chat/completions")[-1].body
    assert body["seed"] == 7 and body["tools"] == tools and body["session_id"] == "nightly"
    assert body["models"] == ["openai/gpt-4o-mini"] and body["provider"] == {"sort": "price"}
    assert "max_tokens" not in body, "None-valued parameters are not sent"
    assert body["messages"] == MESSAGES


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_both_clients_send_the_key_attribution_and_a_json_body_the_same_way(hook, emu, mode):
    if mode == "sync":
        hook.chat_completion(model=MODEL, messages=MESSAGES, seed=1)
    else:

        async def run():
            async with hook:
                await hook.achat_completion(model=MODEL, messages=MESSAGES, seed=1)

        asyncio.run(run())

    sent = emu.requests_to("/chat/completions")[-1]
    assert sent.headers["authorization"] == f"Bearer {emu.api_key}"
    assert sent.headers["http-referer"] == "https://example.org"
    assert sent.headers["x-openrouter-title"] == sent.headers["x-title"] == "nightly-etl"
    assert sent.headers["user-agent"].startswith("airflow-openrouter/")
    assert sent.headers["content-type"] == "application/json"
    assert "gzip" in sent.headers["accept-encoding"]
    assert list(sent.body) == ["model", "seed", "messages"], "body fields in the order they were given"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_line_per_answer_is_info_unless_the_caller_asks_for_debug(hook, emu, caplog, mode):
    async def async_calls():
        async with hook:
            await hook.achat_completion(model=MODEL, messages=MESSAGES)
            await hook.achat_completion(model=MODEL, messages=MESSAGES, log_level=logging.DEBUG)

    with caplog.at_level(logging.DEBUG, logger="airflow_openrouter.transport"):
        if mode == "sync":
            hook.chat_completion(model=MODEL, messages=MESSAGES)
            hook.chat_completion(model=MODEL, messages=MESSAGES, log_level=logging.DEBUG)
        else:
            asyncio.run(async_calls())

    answers = [r for r in caplog.records if r.getMessage().startswith("OpenRouter POST /chat/completions ->")]
    assert [r.levelno for r in answers] == [logging.INFO, logging.DEBUG]
    assert all("generation=gen-" in r.getMessage() and "cost=$" in r.getMessage() for r in answers)
    assert all("log_level" not in request.body for request in emu.requests_to("/chat/completions"))


def test_same_request_and_seed_give_the_same_answer(hook):
    first = hook.chat_completion(model=MODEL, messages=MESSAGES, seed=3)
    second = hook.chat_completion(model=MODEL, messages=MESSAGES, seed=3)
    assert first.content == second.content


def test_sync_and_async_paths_give_equal_results(hook):
    sync = hook.chat_completion(model=MODEL, messages=MESSAGES, seed=11)

    async def run():
        async with hook:
            return await hook.achat_completion(model=MODEL, messages=MESSAGES, seed=11)

    async_ = asyncio.run(run())
    assert async_.content == sync.content
    assert async_.usage.total_tokens == sync.usage.total_tokens
    assert async_.model == sync.model


def test_http_200_with_error_body_raises_typed_error(hook, emu):
    emu.error_body_next(times=10)
    with pytest.raises(OpenRouterServerError, match="Provider returned error") as info:
        hook.chat_completion(model=MODEL, messages=MESSAGES)
    assert info.value.status == 502
    assert info.value.provider_name


def test_http_200_with_error_body_is_retried_like_its_code(hook, emu, sleeps):
    emu.error_body_next(times=1)
    assert hook.chat_completion(model=MODEL, messages=MESSAGES).content
    assert len(sleeps) == 1


def test_non_json_body_raises_typed_error_not_decode_error(hook, emu):
    emu.non_json_next()
    with pytest.raises(OpenRouterServerError, match="not with JSON"):
        hook.chat_completion(model=MODEL, messages=MESSAGES)


def test_unknown_model_is_a_bad_request_naming_the_model(hook):
    with pytest.raises(OpenRouterBadRequestError, match="no-such/model"):
        hook.chat_completion(model="no-such/model", messages=MESSAGES)


# --- retries -------------------------------------------------------------------------------------


def test_429_is_retried_after_the_retry_after_the_server_asked_for(hook, emu, sleeps):
    emu.fail_next(status=429, times=2, retry_after=7)

    result = hook.chat_completion(model=MODEL, messages=MESSAGES)

    assert result.content
    assert sleeps == [7.0, 7.0]
    assert len(emu.requests_to("/chat/completions")) == 3


def test_retry_after_ms_takes_precedence(hook, emu, sleeps):
    emu.fail_next(status=429, retry_after=9, retry_after_ms=250)
    hook.chat_completion(model=MODEL, messages=MESSAGES)
    assert sleeps == [0.25]


def test_503_is_retried_with_jittered_backoff_then_succeeds(hook, emu, sleeps):
    emu.fail_next(status=503, times=2)

    assert hook.chat_completion(model=MODEL, messages=MESSAGES).content
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter under 0.5 * 2**n


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, OpenRouterBadRequestError),
        (401, OpenRouterAuthenticationError),
        (402, OpenRouterPaymentRequiredError),
        (403, OpenRouterPermissionDeniedError),
        (404, OpenRouterNotFoundError),
        (409, OpenRouterConflictError),
        (413, OpenRouterBadRequestError),
        (422, OpenRouterBadRequestError),
    ],
)
def test_client_errors_are_not_retried(hook, emu, sleeps, status, error):
    emu.fail_next(status=status)
    with pytest.raises(error):
        hook.chat_completion(model=MODEL, messages=MESSAGES)
    assert sleeps == []
    assert len(emu.requests_to("/chat/completions")) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 524, 529])
def test_transient_statuses_are_retried(hook, emu, sleeps, status):
    emu.fail_next(status=status)
    assert hook.chat_completion(model=MODEL, messages=MESSAGES).content
    assert len(sleeps) == 1
    assert len(emu.requests_to("/chat/completions")) == 2


def test_async_calls_retry_with_the_same_policy(hook, emu, sleeps):
    emu.fail_next(status=429, times=2, retry_after=3)

    async def run():
        async with hook:
            return await hook.achat_completion(model=MODEL, messages=MESSAGES)

    assert asyncio.run(run()).content
    assert sleeps == [3.0, 3.0]


def test_retry_after_as_http_date_is_honoured(hook, emu, sleeps):
    when = email.utils.format_datetime(
        datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30), usegmt=True
    )
    emu.fail_next(status=503, retry_after=when)
    hook.chat_completion(model=MODEL, messages=MESSAGES)
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 31


def test_unreadable_retry_after_falls_back_to_backoff(hook, emu, sleeps):
    emu.fail_next(status=503, retry_after="soon")
    assert hook.chat_completion(model=MODEL, messages=MESSAGES).content
    assert len(sleeps) == 1 and sleeps[0] <= 0.5


def test_402_carrying_retry_after_is_retried(hook, emu, sleeps):
    emu.fail_next(status=402, retry_after=2)
    assert hook.chat_completion(model=MODEL, messages=MESSAGES).content
    assert sleeps == [2.0]


def test_retries_stop_at_max_retries_with_the_last_error(hook, emu, sleeps):
    emu.fail_next(status=429, times=10, retry_after=1)
    with pytest.raises(OpenRouterRateLimitError) as info:
        hook.chat_completion(model=MODEL, messages=MESSAGES)
    assert len(sleeps) == 3  # max_retries=3 in the fixture
    assert info.value.retry_after == 1.0


def test_retries_stop_when_total_wait_would_exceed_the_cap(emu, sleeps):
    policy = RetryPolicy(max_retries=10, max_total_wait=10, sleep=sleeps)
    emu.fail_next(status=503, times=5, retry_after=4)
    with pytest.raises(OpenRouterServerError):
        OpenRouterHook(retry_policy=policy).chat_completion(model=MODEL, messages=MESSAGES)
    assert sleeps == [4.0, 4.0]


def test_a_read_dropped_mid_answer_is_retried(hook, emu, sleeps):
    emu.drop_connection_next(route="/key")
    assert hook.get_key().limit_remaining is not None
    assert len(sleeps) == 1 and len(emu.requests_to("/key")) == 2


def test_a_chat_completion_dropped_after_sending_is_not_sent_again(hook, emu, sleeps):
    emu.drop_connection_next()
    with pytest.raises(OpenRouterConnectionError, match="may have run and been billed") as info:
        hook.chat_completion(model=MODEL, messages=MESSAGES)
    assert info.value.request_sent and info.value.transient
    assert sleeps == [] and len(emu.requests_to("/chat/completions")) == 1


def test_read_timeout_of_a_chat_completion_names_the_setting_and_is_not_sent_again(emu, sleeps):
    emu.set_latency(1500)
    hook = OpenRouterHook(timeout=0.3, retry_policy=RetryPolicy(max_retries=1, sleep=sleeps))
    with pytest.raises(OpenRouterTimeoutError, match="read timeout") as info:
        hook.chat_completion(model=MODEL, messages=MESSAGES)
    message = str(info.value)
    assert "'timeout' on connection 'openrouter_default'" in message
    assert "billed" in message and "stream=True" in message
    assert sleeps == [] and len(emu.requests_to("/chat/completions")) == 1


def test_read_timeout_of_a_read_is_retried(emu, sleeps):
    emu.set_latency(800)
    hook = OpenRouterHook(timeout=0.2, retry_policy=RetryPolicy(max_retries=1, sleep=sleeps))
    with pytest.raises(OpenRouterTimeoutError, match="read timeout") as info:
        hook.get_key()
    assert "billed" not in str(info.value)
    assert len(sleeps) == 1 and len(emu.requests_to("/key")) == 2


def test_batch_creation_is_not_retried_on_5xx(hook, emu, sleeps):
    emu.fail_next(route="/batches", status=503, method="POST")
    with pytest.raises(OpenRouterServerError):
        hook.create_batch(model=MODEL, requests=[{"custom_id": "a", "body": {"messages": MESSAGES}}])
    assert sleeps == []
    assert len(emu.requests_to("/batches", method="POST")) == 1


def test_batch_creation_is_retried_on_429(hook, emu, sleeps):
    emu.fail_next(route="/batches", status=429, method="POST", retry_after=1)
    batch = hook.create_batch(model=MODEL, requests=[{"custom_id": "a", "body": {"messages": MESSAGES}}])
    assert batch.status == "validating"
    assert sleeps == [1.0]


def test_batch_creation_is_retried_when_the_connection_was_refused(sleeps):
    calls = []

    def refuse_then_answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(202, json={"id": "batch_1", "status": "validating"})

    # No server can refuse a connection and then accept it on the same port: a mock transport can.
    hook = OpenRouterHook(
        retry_policy=RetryPolicy(sleep=sleeps), transport=httpx.MockTransport(refuse_then_answer)
    )
    hook._settings = _settings()
    assert hook.create_batch(model=MODEL, requests=[{"custom_id": "a", "body": {}}]).id == "batch_1"
    assert len(calls) == 2


def test_batch_creation_is_not_retried_after_the_request_was_sent(sleeps):
    def reset_after_sending(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    hook = OpenRouterHook(
        retry_policy=RetryPolicy(sleep=sleeps), transport=httpx.MockTransport(reset_after_sending)
    )
    hook._settings = _settings()
    with pytest.raises(OpenRouterConnectionError):
        hook.create_batch(model=MODEL, requests=[{"custom_id": "a", "body": {}}])
    assert sleeps == []


def _settings():
    return ClientSettings(conn_id="openrouter_default", base_url="http://127.0.0.1:9/api/v1", api_key="k")


# --- streaming -----------------------------------------------------------------------------------


def test_stream_yields_chunks_and_assembles_the_same_answer(hook):
    plain = hook.chat_completion(model=MODEL, messages=MESSAGES, seed=5)

    stream = hook.stream_chat_completion(model=MODEL, messages=MESSAGES, seed=5)
    chunks = list(stream)

    assert len(chunks) > 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.content
    completion = stream.completion()
    assert completion.content == plain.content
    assert completion.usage is not None and completion.usage.total_tokens == plain.usage.total_tokens


def test_async_stream_matches_sync_stream(hook):
    sync_text = "".join(
        c.choices[0].delta.content or ""
        for c in hook.stream_chat_completion(model=MODEL, messages=MESSAGES, seed=5)
        if c.choices
    )

    async def run():
        stream = await hook.astream_chat_completion(model=MODEL, messages=MESSAGES, seed=5)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == sync_text


def test_stream_error_chunk_mid_stream_raises_typed_error(hook, emu, sleeps):
    emu.stream_error_next(after_tokens=2, code=502)
    stream = hook.stream_chat_completion(model=MODEL, messages=MESSAGES)
    with pytest.raises(OpenRouterServerError) as info:
        list(stream)
    assert info.value.status == 502
    assert info.value.billed, "tokens were generated before the error: a retry would pay again"
    assert stream.completion().content, "the tokens received before the error are kept"
    assert sleeps == [] and len(emu.requests_to("/chat/completions")) == 1


def test_stream_cut_before_done_raises_connection_error(hook, emu):
    emu.cut_stream_next(after_tokens=2)
    with pytest.raises(OpenRouterConnectionError, match=r"before \[DONE\]"):
        list(hook.stream_chat_completion(model=MODEL, messages=MESSAGES))


def test_stream_error_before_first_byte_is_retried(hook, emu, sleeps):
    emu.fail_next(status=429, retry_after=1)
    assert list(hook.stream_chat_completion(model=MODEL, messages=MESSAGES))
    assert sleeps == [1.0]


# --- batches -------------------------------------------------------------------------------------


def test_create_batch_serialises_endpoint_and_model_before_requests(hook, emu):
    requests = [{"custom_id": f"r{i}", "body": {"messages": MESSAGES}} for i in range(3)]
    batch = hook.create_batch(model=MODEL, requests=requests, provider={"only": ["openai"]})

    keys = list(emu.requests_to("/batches", method="POST")[-1].body)  # parsed in wire order
    assert keys.index("endpoint") < keys.index("requests") and keys.index("model") < keys.index("requests")
    assert batch.id and batch.status == "validating" and batch.request_counts.total == 3


def test_batch_lifecycle_get_list_results_delete(hook, emu):
    requests = [{"custom_id": f"r{i}", "body": {"messages": MESSAGES, "max_tokens": 20}} for i in range(7)]
    batch = hook.create_batch(model=MODEL, requests=requests)

    with pytest.raises(OpenRouterConflictError, match="Only completed"):
        hook.delete_batch(batch.id)
    done = _wait_terminal(hook, batch.id)
    assert done.status == "completed" and done.usage.cost > 0

    rows = list(hook.iter_batch_results(batch.id, page_size=3))
    assert sorted(r.custom_id for r in rows) == sorted(f"r{i}" for i in range(7))
    assert all(r.completion().content for r in rows)

    listed = hook.list_batches(limit=100, status="completed")
    assert batch.id in [b.id for b in listed.data]

    assert hook.delete_batch(batch.id).deletion["openrouter"] == "deleted"


def test_async_batch_calls_match_sync(hook, emu):
    batch = hook.create_batch(model=MODEL, requests=[{"custom_id": "x", "body": {"messages": MESSAGES}}])
    _wait_terminal(hook, batch.id)

    async def run():
        async with hook:
            got = await hook.aget_batch(batch.id)
            rows = [r async for r in hook.aiter_batch_results(batch.id)]
            return got, rows

    got, rows = asyncio.run(run())
    assert got.status == "completed"
    assert [r.custom_id for r in rows] == ["x"]
    assert rows[0].completion().content == next(iter(hook.iter_batch_results(batch.id))).completion().content


def _wait_terminal(hook, batch_id, deadline_s: float = 10.0):
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        batch = hook.get_batch(batch_id)
        if batch.is_terminal:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not finish")


# --- account and catalogue -----------------------------------------------------------------------


def test_get_generation_reports_billed_cost(hook):
    result = hook.chat_completion(model=MODEL, messages=MESSAGES)
    generation = hook.get_generation(result.id)
    assert generation.id == result.id
    assert generation.total_cost == pytest.approx(result.usage.cost)


def test_list_models_includes_the_seed_model_with_prices(hook):
    models = {m.id: m for m in hook.list_models()}
    seed = models[MODEL]
    assert seed.context_length == 128000
    assert float(seed.pricing.prompt) == pytest.approx(10 / 1e6)
    assert "response_format" in seed.supported_parameters


def test_test_connection_reports_key_label_and_remaining_credit(hook):
    ok, message = hook.test_connection()
    assert ok, message
    assert "remaining" in message


def test_test_connection_with_rejected_key_is_false_with_reason(monkeypatch):
    with OpenRouterEmulator(api_keys=["sk-or-the-right-one"]) as strict:
        conn = {**json.loads(strict.connection_json()), "password": "sk-or-a-wrong-one"}
        monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", json.dumps(conn))
        ok, message = OpenRouterHook().test_connection()
    assert not ok
    assert "401" in message and "openrouter_default" in message


# --- keys ----------------------------------------------------------------------------------------


def test_env_var_key_is_used_when_the_connection_has_no_password(emu, monkeypatch, capsys):
    conn = json.loads(emu.connection_json())
    conn.pop("password")
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-from-env")

    OpenRouterHook().chat_completion(model=MODEL, messages=MESSAGES)

    assert emu.requests_to("/chat/completions")[-1].headers["authorization"] == "Bearer sk-or-from-env"
    assert "OPENROUTER_API_KEY from the environment" in capsys.readouterr().out


def test_env_var_key_is_used_when_the_connection_does_not_exist(monkeypatch, capsys):
    monkeypatch.delenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", raising=False)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-from-env")
    settings = OpenRouterHook().settings
    assert settings.base_url == "https://openrouter.ai/api/v1"
    assert "does not exist; using OPENROUTER_API_KEY" in capsys.readouterr().out


def test_missing_key_error_names_the_connection_and_the_env_var(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", raising=False)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(OpenRouterAuthenticationError) as info:
        OpenRouterHook().chat_completion(model=MODEL, messages=MESSAGES)
    assert "openrouter_default" in str(info.value) and "OPENROUTER_API_KEY" in str(info.value)


def test_bad_extra_names_the_connection_and_field(emu, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", emu.connection_json(timeout="soon"))
    with pytest.raises(OpenRouterError, match=r"openrouter_default.*'timeout'"):
        _ = OpenRouterHook().settings


def test_api_key_never_appears_in_logs_or_errors_of_a_failing_call(emu, monkeypatch, caplog, capsys, sleeps):
    secret = "sk-or-v1-" + "s3cr3t" * 8
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        json.dumps({**json.loads(emu.connection_json()), "password": secret}),
    )
    emu.fail_next(status=503, times=5)

    with caplog.at_level(logging.DEBUG), pytest.raises(OpenRouterServerError) as info:
        OpenRouterHook(retry_policy=RetryPolicy(max_retries=2, sleep=sleeps)).chat_completion(
            model=MODEL, messages=MESSAGES
        )

    assert len(emu.requests_to("/chat/completions")) == 3
    out = capsys.readouterr()
    for text in (caplog.text, str(info.value), repr(info.value), out.out, out.err):
        assert secret not in text
    assert all(secret not in r.getMessage() for r in caplog.records)


# --- edge cases no server here produces --------------------------------------------------------


def _mock_hook(handler, sleeps, **kwargs) -> OpenRouterHook:
    hook = OpenRouterHook(retry_policy=RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep), **kwargs)
    hook._settings = _settings()
    return hook


def test_error_status_on_a_stream_whose_body_breaks_is_typed_and_retried(sleeps):
    class BrokenBody(httpx.SyncByteStream):
        def __iter__(self):
            raise httpx.ReadTimeout("body stalled")

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(503, stream=BrokenBody())
        body = 'data: {"id":"gen-1","choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n'
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    hook = _mock_hook(handler, sleeps, transport=httpx.MockTransport(handler))
    chunks = list(hook.stream_chat_completion(model=MODEL, messages=MESSAGES))
    assert [c.choices[0].delta.content for c in chunks] == ["ok"]
    assert len(calls) == 2 and len(sleeps) == 1


def test_answer_of_an_unexpected_shape_is_a_typed_error(sleeps):
    handler = lambda request: httpx.Response(200, json={"data": "not-a-key-object"})  # noqa: E731
    hook = _mock_hook(handler, sleeps, transport=httpx.MockTransport(handler))
    with pytest.raises(OpenRouterServerError, match="unexpected shape"):
        hook.get_key()
    ok, message = hook.test_connection()
    assert not ok and "unexpected shape" in message


def test_in_band_error_after_billed_output_is_not_retried(sleeps):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "gen-1",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "error",
                        "message": {"content": "half an ans"},
                        "error": {"code": 502, "message": "provider died"},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 0.01},
            },
        )

    hook = _mock_hook(handler, sleeps, transport=httpx.MockTransport(handler))
    with pytest.raises(OpenRouterServerError, match="provider died") as info:
        hook.chat_completion(model=MODEL, messages=MESSAGES)
    assert info.value.billed and sleeps == []


def test_uri_style_connection_keeps_port_and_path(monkeypatch, emu):
    port = emu.base_url.split(":")[2].split("/")[0]
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT", f"openrouter://:sk-or-k@127.0.0.1:{port}/api%2Fv1?timeout=30"
    )
    hook = OpenRouterHook()
    assert hook.settings.base_url == f"http://127.0.0.1:{port}/api/v1"
    assert hook.settings.timeout == 30.0
    assert hook.chat_completion(model=MODEL, messages=MESSAGES).content


def test_one_async_client_per_running_loop_and_finished_loops_are_forgotten(hook):
    async def call():
        await hook.achat_completion(model=MODEL, messages=MESSAGES)
        return len(hook._async)

    seen = [asyncio.run(call()) for _ in range(4)]
    assert seen == [1, 1, 1, 1]


def test_api_key_stays_out_of_async_and_streamed_failures(emu, monkeypatch, capsys, sleeps):
    secret = "sk-or-v1-" + "t0ps3cr3t" * 6
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENROUTER_DEFAULT",
        json.dumps({**json.loads(emu.connection_json()), "password": secret}),
    )
    hook = OpenRouterHook(
        retry_policy=RetryPolicy(max_retries=1, sleep=sleeps, async_sleep=sleeps.async_sleep)
    )
    emu.fail_next(status=503, times=10)
    texts = []

    async def failing_async():
        with pytest.raises(OpenRouterServerError) as info:
            await hook.achat_completion(model=MODEL, messages=MESSAGES)
        texts.append(repr(info.value))

    asyncio.run(failing_async())
    emu.clear_faults()
    emu.stream_error_next(after_tokens=1)
    with pytest.raises(OpenRouterServerError) as info:
        list(hook.stream_chat_completion(model=MODEL, messages=MESSAGES))
    texts.append(repr(info.value))
    out = capsys.readouterr()
    for text in [*texts, out.out, out.err]:
        assert secret not in text


def test_large_async_answers_are_decoded_off_the_event_loop(hook, emu):
    """A completed batch inlines its results: the trigger's loop must not decode megabytes itself."""
    from airflow_openrouter._transport.calls import Call
    from airflow_openrouter._transport.clients import OFF_LOOP_BODY_BYTES

    requests = [{"custom_id": f"r{i}", "body": {"messages": MESSAGES, "max_tokens": 400}} for i in range(400)]
    batch = hook.create_batch(model=MODEL, requests=requests)
    _wait_terminal(hook, batch.id)
    parsed_in = {}

    def parse(data):
        parsed_in[len(json.dumps(data)) > OFF_LOOP_BODY_BYTES] = threading.current_thread()
        return data

    async def fetch(path):
        transport = await hook._async_transport_for_loop()
        return await transport.request(Call("GET", path, parse=parse))

    async def run():
        await fetch(f"/batches/{batch.id}")  # large: results inline
        await fetch("/key")  # small
        return threading.current_thread()

    loop_thread = asyncio.run(run())
    assert parsed_in[True] is not loop_thread
    assert parsed_in[False] is loop_thread


def test_sleep_injected_into_the_hook_keeps_the_connections_max_retries(emu, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", emu.connection_json(max_retries=2))
    emu.fail_next(status=503, times=5)
    waits: list[float] = []
    with pytest.raises(OpenRouterServerError):
        OpenRouterHook(sleep=waits.append).chat_completion(model=MODEL, messages=MESSAGES)
    assert len(waits) == 2 and len(emu.requests_to("/chat/completions")) == 3


def test_async_sleep_injected_into_the_hook_replaces_the_policys(emu):
    emu.fail_next(status=429, retry_after=5)
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    async def run():
        async with OpenRouterHook(async_sleep=record) as hook:
            return await hook.achat_completion(model=MODEL, messages=MESSAGES)

    assert asyncio.run(run()).content and waits == [5.0]
