"""The connection: the API key as secret files and copy-paste leave it, connection ids that do not
exist, connections added with the CLI and used outside a task, and what ``test_connection()`` shows."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_openrouter.exceptions import (
    OpenRouterAuthenticationError,
    OpenRouterConfigError,
    OpenRouterConnectionError,
)
from airflow_openrouter.hooks.openrouter import ClientSettings, OpenRouterHook, RetryPolicy
from airflow_openrouter.testing import OpenRouterEmulator
from tests.hooks.conftest import MESSAGES, MODEL

# Built at run time: never commit a string shaped like a real key.
CORE = "sk-or-v1-" + "ab12" * 16


@pytest.fixture
def strict(monkeypatch):
    """An emulator that accepts only CORE (so a key sent with anything around it is refused)."""
    with OpenRouterEmulator(api_keys=[CORE]) as emulator:
        yield emulator


def connection_with_key(
    emulator: OpenRouterEmulator, monkeypatch, password: str | None, conn_id="openrouter_default"
):
    conn = {"conn_type": "openrouter", "host": emulator.base_url}
    if password is not None:
        conn["password"] = password
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def assert_nowhere(key: str, *texts: str) -> None:
    for text in texts:
        assert key not in text and key.strip() not in text, text
        assert "ab12ab12ab12ab12" not in text, "a long piece of the key leaked"


# --- the key as it is pasted or read from a file -------------------------------------------------

SURROUNDINGS = ["\n", "\r\n", " ", "\t", " \n\t", "\u00a0"]


@pytest.mark.parametrize("around", SURROUNDINGS, ids=["lf", "crlf", "space", "tab", "mixed", "nbsp"])
def test_a_key_with_whitespace_around_it_is_stripped_and_works(strict, monkeypatch, caplog, capsys, around):
    connection_with_key(strict, monkeypatch, around + CORE + around)

    with caplog.at_level(logging.DEBUG), OpenRouterHook() as hook:
        assert hook.chat_completion(model=MODEL, messages=MESSAGES).content
        ok, message = hook.test_connection()

    assert strict.requests_to("/chat/completions")[0].headers["authorization"] == f"Bearer {CORE}"
    assert ok, message
    out = capsys.readouterr()
    assert_nowhere(CORE + around, caplog.text, out.out, out.err, message)


@pytest.mark.parametrize("around", SURROUNDINGS[:3], ids=["lf", "crlf", "space"])
def test_an_environment_key_with_whitespace_around_it_is_stripped(strict, monkeypatch, around):
    connection_with_key(strict, monkeypatch, None)
    monkeypatch.setenv("OPENROUTER_API_KEY", CORE + around)

    assert OpenRouterHook().chat_completion(model=MODEL, messages=MESSAGES).content
    assert strict.requests_to("/chat/completions")[0].headers["authorization"] == f"Bearer {CORE}"


BAD_KEYS = {
    "non-ascii": (CORE[:20] + "é" + CORE[20:], "U+00E9 at position 21"),
    "nbsp-inside": (CORE[:30] + "\u00a0" + CORE[30:], "U+00A0 at position 31"),
    "newline-inside": (CORE[:12] + "\n" + CORE[12:], "U+000A at position 13"),
    "nul": (CORE + "\x00x", "U+0000 at position 74"),
    "bearer-prefix": ("Bearer " + CORE, "a space at position 7"),
}


@pytest.mark.parametrize("name", BAD_KEYS)
def test_a_key_with_a_character_no_key_has_is_refused_before_sending(
    strict, monkeypatch, caplog, capsys, name
):
    key, where = BAD_KEYS[name]
    connection_with_key(strict, monkeypatch, key)

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(OpenRouterConfigError) as info:
            OpenRouterHook().chat_completion(model=MODEL, messages=MESSAGES)
        ok, message = OpenRouterHook().test_connection()

    error = str(info.value)
    assert "'openrouter_default'" in error and where in error
    assert ("without the 'Bearer ' prefix" in error) == (name == "bearer-prefix")
    assert strict.requests == [], "nothing was sent"
    out = capsys.readouterr()
    assert_nowhere(key, error, repr(info.value), message, caplog.text, out.out, out.err)
    assert not ok and message == error


def test_transport_error_text_quoting_the_header_is_redacted_everywhere(emu, monkeypatch, caplog, capsys):
    """h11 quotes the whole Authorization header when it rejects it: a key that got past the checks
    (here set directly) must still not reach a log line, an error or test_connection()."""
    key = CORE + "\n"
    waits: list[float] = []
    hook = OpenRouterHook(retry_policy=RetryPolicy(max_retries=2, sleep=waits.append, async_sleep=_no_wait))
    hook._settings = ClientSettings(conn_id="openrouter_default", base_url=emu.base_url, api_key=key)

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(OpenRouterConnectionError) as sync_error:
            hook.get_key()
        ok, message = hook.test_connection()

        async def call():
            async with hook:
                await hook.aget_key()

        with pytest.raises(OpenRouterConnectionError) as async_error:
            asyncio.run(call())

    assert "LocalProtocolError" in str(sync_error.value) and "Bearer ***" in str(sync_error.value)
    assert len(waits) >= 2, "the retry warnings were logged"
    assert not ok
    out = capsys.readouterr()
    texts = [str(sync_error.value), repr(sync_error.value), str(async_error.value), message]
    assert_nowhere(key, *texts, caplog.text, out.out, out.err)


async def _no_wait(seconds: float) -> None:
    return None


# --- connection ids that do not exist --------------------------------------------------------------


def test_an_undefined_connection_id_says_so_and_never_falls_back_to_the_environment_key(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", CORE)
    monkeypatch.delenv("AIRFLOW_CONN_OPENROUTER_PROD", raising=False)
    sent: list[httpx.Request] = []
    hook = OpenRouterHook("openrouter_prod", transport=httpx.MockTransport(lambda r: sent.append(r)))

    with pytest.raises(OpenRouterConfigError) as info:
        hook.chat_completion(model=MODEL, messages=MESSAGES)

    error = str(info.value)
    assert error.startswith("Connection 'openrouter_prod' does not exist.")
    assert "AIRFLOW_CONN_OPENROUTER_PROD" in error and "the metadata database" in error
    assert "airflow connections add openrouter_prod --conn-type openrouter" in error
    assert "OPENROUTER_API_KEY stands in only for the default connection" in error
    assert sent == [] and CORE not in error


def test_an_undefined_connection_id_in_async_code_says_so_too(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", CORE)

    async def call():
        async with OpenRouterHook("openrouter_typo") as hook:
            await hook.aget_key()

    with pytest.raises(OpenRouterConfigError, match="Connection 'openrouter_typo' does not exist"):
        asyncio.run(call())


def test_the_default_connection_undefined_uses_the_environment_key_and_logs_it(emu, monkeypatch, capsys):
    monkeypatch.delenv("AIRFLOW_CONN_OPENROUTER_DEFAULT")
    monkeypatch.setenv("OPENROUTER_API_KEY", emu.api_key)
    hook = OpenRouterHook(timeout=5)

    assert hook.settings.api_key == emu.api_key and hook.settings.base_url == "https://openrouter.ai/api/v1"
    assert "'openrouter_default' does not exist; using OPENROUTER_API_KEY" in capsys.readouterr().out


def test_calls_started_at_once_on_a_fresh_hook_look_the_connection_up_once(emu, monkeypatch, capsys):
    """Each lookup may be a request to Airflow's API server inside a task: 50 calls gathered on a new
    hook must not make 50 of them (nor log 50 times which key is used)."""
    connection_with_key(emu, monkeypatch, emu.api_key)
    lookups = []
    real_lookup = OpenRouterHook._look_up_settings

    async def counted(self):
        lookups.append(1)
        return await real_lookup(self)

    monkeypatch.setattr(OpenRouterHook, "_look_up_settings", counted)

    async def gathered():
        async with OpenRouterHook() as hook:
            return await asyncio.gather(
                *(hook.achat_completion(model=MODEL, messages=MESSAGES) for _ in range(50))
            )

    answers = asyncio.run(gathered())

    assert len(answers) == 50 and all(answer.content for answer in answers)
    assert lookups == [1]
    assert capsys.readouterr().out.count("Using the API key of connection 'openrouter_default'") == 1


def test_a_failed_lookup_is_tried_again_by_the_next_call(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", raising=False)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    hook = OpenRouterHook()

    async def twice():
        with pytest.raises(OpenRouterAuthenticationError):
            await hook.asettings()
        monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test-key")
        return await hook.asettings()

    assert asyncio.run(twice()).api_key == "sk-or-test-key"


def test_a_defined_connection_without_a_password_uses_the_environment_key(emu, monkeypatch, capsys):
    connection_with_key(emu, monkeypatch, None, conn_id="openrouter_nightly")
    monkeypatch.setenv("OPENROUTER_API_KEY", emu.api_key)

    assert OpenRouterHook("openrouter_nightly").chat_completion(model=MODEL, messages=MESSAGES).content
    assert "'openrouter_nightly' has no API key; using OPENROUTER_API_KEY" in capsys.readouterr().out


def test_the_default_connection_undefined_without_an_environment_key_says_both(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_OPENROUTER_DEFAULT", raising=False)
    with pytest.raises(OpenRouterAuthenticationError) as info:
        _ = OpenRouterHook().settings
    assert "connection 'openrouter_default' does not exist and OPENROUTER_API_KEY is not set" in str(
        info.value
    )


# --- outside a task --------------------------------------------------------------------------------


def airflow_cli(*args: str) -> subprocess.CompletedProcess:
    airflow = Path(sys.executable).parent / "airflow"
    # This test process read its configuration before `airflow db migrate` wrote an airflow.cfg with a
    # Fernet key, so it has none: store the password unencrypted for it to read (as it would be, with
    # one shared airflow.cfg, in a real deployment).
    env = {**os.environ, "AIRFLOW__CORE__FERNET_KEY": ""}
    return subprocess.run([str(airflow), *args], capture_output=True, text=True, env=env)


@pytest.fixture
def cli_connection(airflow_db, emulator):
    """A connection added with ``airflow connections add`` (the metadata database), pointing at the
    emulator with its key; deleted afterwards."""
    conn_id = "openrouter_cli_added"
    added = airflow_cli(
        "connections", "add", conn_id, "--conn-type", "openrouter",
        "--conn-host", emulator.base_url, "--conn-password", emulator.api_key,
        "--conn-extra", json.dumps({"default_model": MODEL, "timeout": 30}),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    yield conn_id
    airflow_cli("connections", "delete", conn_id)


def test_outside_a_task_a_connection_added_with_the_cli_is_read_from_the_metadata_database(
    cli_connection, emulator, capsys
):
    with OpenRouterHook(cli_connection) as hook:
        assert hook.chat_completion(messages=MESSAGES).model == MODEL
        assert hook.settings.timeout == 30
    assert (
        f"Outside a task: read connection {cli_connection!r} from the metadata database"
        in capsys.readouterr().out
    )
    assert (
        emulator.requests_to("/chat/completions")[-1].headers["authorization"] == f"Bearer {emulator.api_key}"
    )


def test_a_plain_python_script_uses_a_connection_added_with_the_cli(cli_connection, emulator):
    script = (
        "from airflow_openrouter.hooks.openrouter import OpenRouterHook\n"
        f"hook = OpenRouterHook({cli_connection!r})\n"
        "print('ANSWER', bool(hook.chat_completion(messages=[{'role': 'user', 'content': 'hi'}]).content))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert "ANSWER True" in done.stdout, done.stderr[-2000:]


def test_outside_a_task_without_a_readable_metadata_database_the_error_says_so(monkeypatch, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path / 'empty.db'}"
    script = (
        "from airflow_openrouter.hooks.openrouter import OpenRouterHook\n"
        "try:\n"
        "    OpenRouterHook('openrouter_elsewhere').get_key()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert "OpenRouterConfigError Connection 'openrouter_elsewhere' does not exist" in done.stdout, (
        done.stderr
    )
    assert "the metadata database, which could not be read here (OperationalError)" in done.stdout


# --- test_connection() -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-or-short", CORE], ids=["short", "real-size"])
def test_test_connection_never_shows_a_label_that_gives_the_key_away(monkeypatch, key):
    with OpenRouterEmulator(api_keys=[key]) as emulator:
        connection_with_key(emulator, monkeypatch, key)
        ok, message = OpenRouterHook().test_connection()

    assert ok, message
    assert key not in message
    assert not any(key[i : i + 16] in message for i in range(max(1, len(key) - 15)))
    assert "with key " in message and "remaining" in message


class TimingOutSecretsBackend:
    """A secrets backend (Vault, say) that cannot answer: every lookup times out."""

    def __init__(self, **kwargs: object) -> None:
        pass

    def _set_connection_class(self, _cls: object) -> None:
        pass

    def get_connection(self, conn_id: str, team_name: str | None = None) -> None:
        raise TimeoutError(f"secrets backend timed out reading {conn_id}")

    def get_variable(self, key: str, team_name: str | None = None) -> None:
        raise TimeoutError(key)

    def get_config(self, key: str) -> None:
        return None


def test_a_secrets_backend_that_times_out_is_not_a_permanent_missing_connection(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW__SECRETS__BACKEND"] = f"{__name__}.TimingOutSecretsBackend"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    script = (
        "from airflow_openrouter._compat import AirflowFailException\n"
        "from airflow_openrouter.hooks.openrouter import OpenRouterHook\n"
        "try:\n"
        "    OpenRouterHook('openrouter_in_vault').get_key()\n"
        "except Exception as exc:\n"
        "    print('PERMANENT' if isinstance(exc, AirflowFailException) else 'RETRYABLE', type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert "Connection 'openrouter_in_vault' does not exist" in done.stdout, done.stderr[-2000:]
    assert "TimingOutSecretsBackend" in done.stdout  # the error names the backend it looked in
    assert done.stdout.startswith("RETRYABLE"), done.stdout
