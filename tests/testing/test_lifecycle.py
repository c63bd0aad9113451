"""Starting and stopping emulators, the connection helpers, the journal, the pytest plugin and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_openrouter.testing import OpenRouterEmulator

from .helpers import chat


def test_port_zero_binds_a_free_port_and_stop_releases_it() -> None:
    first, second = OpenRouterEmulator().start(), OpenRouterEmulator().start()
    try:
        assert first.port != second.port and first.running and second.running
        assert first.base_url == f"http://127.0.0.1:{first.port}/api/v1"
    finally:
        first.stop()
        second.stop()
    assert not first.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{first.base_url}/models")


def test_emulators_run_one_after_another_in_one_process() -> None:
    for _ in range(3):
        with OpenRouterEmulator() as emu:
            assert httpx.get(f"{emu.base_url}/models").status_code == 200


def test_connection_helpers_point_airflow_at_the_emulator(emu: OpenRouterEmulator) -> None:
    conn = json.loads(emu.connection_json(timeout=5))
    assert conn == {
        "conn_type": "openrouter",
        "host": emu.base_url,
        "password": "sk-or-emulator-key",
        "extra": {"timeout": 5},
    }
    env = emu.connection_env("my_router")
    assert (
        list(env) == ["AIRFLOW_CONN_MY_ROUTER"]
        and json.loads(env["AIRFLOW_CONN_MY_ROUTER"])["host"] == emu.base_url
    )


def test_journal_records_requests_and_filters_them(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    chat(client, seed=3)
    client.get("/batches", params=[("status", "completed"), ("status", "failed"), ("limit", "5")])
    first = emu.requests[0]
    assert (
        first.method == "POST"
        and first.path == "/api/v1/chat/completions"
        and first.route == "/chat/completions"
    )
    assert first.body["seed"] == 3 and first.headers["authorization"] == f"Bearer {emu.api_key}"
    listing = emu.requests_to("/batches", method="GET")[0]
    assert listing.query == {"status": ["completed", "failed"], "limit": "5"} and listing.body is None
    assert (
        len(emu.requests_to("/chat/completions")) == 1
        and emu.requests_to("/chat/completions", method="GET") == []
    )
    emu.clear_requests()
    assert emu.requests == []


def test_plugin_fixture_sets_the_default_connection(openrouter_emulator: OpenRouterEmulator) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_OPENROUTER_DEFAULT"])
    assert conn["host"] == openrouter_emulator.base_url and openrouter_emulator.running


def test_plugin_session_fixture_leaves_the_environment_alone(
    openrouter_emulator_session: OpenRouterEmulator,
) -> None:
    assert openrouter_emulator_session.running
    assert "AIRFLOW_CONN_OPENROUTER_DEFAULT" not in os.environ


def test_package_import_does_not_load_the_web_stack() -> None:
    code = "import sys, airflow_openrouter.testing; print('starlette' in sys.modules or 'uvicorn' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_prints_the_base_url_serves_and_stops_on_signal(signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_openrouter.testing", "--port", "0", "--api-key", "sk-cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().strip()
        prefix = "OpenRouter emulator listening on "
        assert first_line.startswith(prefix + "http://127.0.0.1:") and first_line.endswith("/api/v1")
        base_url = first_line[len(prefix) :]
        response = httpx.post(
            f"{base_url}/chat/completions",
            headers={"Authorization": "Bearer sk-cli"},
            json={"messages": [{"role": "user", "content": "hello"}]},
        )
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_reset_forgets_state_but_keeps_serving(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    chat(client)
    emu.fail_next(status=500)
    emu.set_latency(5)
    port = emu.port
    emu.reset()
    assert emu.requests == [] and emu.port == port
    cost = chat(client).json()["usage"]["cost"]  # no fault, no latency left over
    assert client.get("/key").json()["data"]["usage"] == pytest.approx(cost)  # earlier spend forgotten
    assert client.get("/batches").json()["data"] == []


SECRET = "sk-or-v1-" + "cd34" * 16  # shaped like a real key, built at run time


def test_journal_never_shows_the_key_but_keeps_it_for_assertions() -> None:
    with OpenRouterEmulator(api_keys=[SECRET]) as emu:
        auth = {"Authorization": f"Bearer {SECRET}", "Proxy-Authorization": f"Basic {SECRET}"}
        httpx.get(f"{emu.base_url}/key", headers=auth)
        recorded = emu.requests_to("/key")[0]
        assert recorded.headers["authorization"] == f"Bearer {SECRET}"
        shown = [repr(emu.requests), str(recorded), repr(recorded.headers), f"{emu.requests_to('/key')}"]
        # What pytest prints for a failing assertion about the journal.
        with pytest.raises(AssertionError) as caught:
            assert emu.requests_to("/key") == [], "journal"
        shown.append(str(caught.value))
    for text in shown:
        assert SECRET not in text and SECRET[9:30] not in text
        assert "Bearer sk-or-v1-cd3...d34" in text


def test_cli_banner_says_which_keys_are_accepted_without_printing_them() -> None:
    for argv, expected in (
        (["--api-key", SECRET], "Auth: only the 1 key given with --api-key (not shown)"),
        ([], "Auth: any non-empty bearer key is accepted"),
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_openrouter.testing", "--port", "0", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline().strip() for _ in range(3)]
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert banner[1].startswith(expected), banner
        assert SECRET not in "\n".join(banner) + out + err


def test_cli_on_a_busy_port_prints_one_line_and_exits_non_zero() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "airflow_openrouter.testing", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"OpenRouter emulator: cannot listen on 127.0.0.1:{port}: the port is already in use. "
        "Stop what is using it, or pick another port (port 0 picks a free one)."
    ]


def test_start_on_a_busy_port_raises_an_oserror_that_says_what_to_do() -> None:
    with OpenRouterEmulator() as first:
        with pytest.raises(
            OSError, match=f"cannot listen on 127.0.0.1:{first.port}: the port is already in use"
        ):
            OpenRouterEmulator(port=first.port).start()
        assert first.running


def test_apply_scenario_on_a_running_emulator(emu: OpenRouterEmulator, client: httpx.Client) -> None:
    emu.apply_scenario(
        {"credits": 0.5, "token_delay_ms": 0, "faults": [{"fault": "fail_next", "status": 503, "times": 2}]}
    )
    assert [chat(client).status_code for _ in range(3)] == [503, 503, 200]
    assert client.get("/key").json()["data"]["limit_remaining"] < 0.5
    with pytest.raises(ValueError, match="each fault needs 'fault'"):
        emu.apply_scenario([{"fault": "_state"}])


def test_scenario_module_does_not_reach_into_the_emulator() -> None:
    from airflow_openrouter.testing import _scenario

    source = Path(_scenario.__file__).read_text()
    assert "_state" not in source and "_emulator" not in source
