"""Both clients go through the proxy the environment names (``HTTP_PROXY`` / ``HTTPS_PROXY``) and around
it for the hosts ``NO_PROXY`` lists, as httpx does. The scripted server plays the proxy: a proxied
request names the whole target URL on its request line."""

from __future__ import annotations

import pytest

from tests.transport.conftest import call_hook

TARGET = "http://openrouter.invalid/api/v1"  # .invalid never resolves: only a proxy can reach it
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_requests_go_through_the_proxy_the_environment_names(server, server_hook, monkeypatch, mode):
    server.script = lambda exchange: exchange.send_json({"data": {"label": "through the proxy"}})
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")

    key = call_hook(server_hook(base_url=TARGET), "key", mode)

    assert key.label == "through the proxy"
    assert server.requests == [("GET", f"{TARGET}/key")]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_host_no_proxy_lists_is_reached_directly(server, server_hook, monkeypatch, mode):
    server.script = lambda exchange: exchange.send_json({"data": {"label": "direct"}})
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    key = call_hook(server_hook(max_retries=0), "key", mode)

    assert key.label == "direct"
    assert server.requests == [("GET", "/api/v1/key")]
