"""The public surface: what the public modules export, the typing marker, and the connection defaults
written once (in ClientSettings) and read everywhere else."""

from __future__ import annotations

import importlib
import re
from importlib import resources

import pytest

from airflow_openrouter import get_provider_info
from airflow_openrouter._transport.settings import DEADLINE_FACTOR, ClientSettings, connection_defaults
from tests.conftest import REPO

PUBLIC_MODULES = [
    "airflow_openrouter",
    "airflow_openrouter.hooks.openrouter",
    "airflow_openrouter.exceptions",
    "airflow_openrouter.types",
    "airflow_openrouter.schemas",
]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_name_a_public_module_exports_exists(module):
    imported = importlib.import_module(module)
    assert imported.__all__, f"{module} declares its public names"
    missing = [name for name in imported.__all__ if not hasattr(imported, name)]
    assert missing == []


def test_the_schemas_package_keeps_every_public_name_of_the_module_it_was():
    from airflow_openrouter import schemas

    names_of_the_module = [
        "JsonOutput",
        "JsonSchemaOutput",
        "OutputSpec",
        "Problem",
        "PydanticOutput",
        "TextOutput",
        "ValidatedReply",
        "accepts_null",
        "check_json_schema",
        "complete_validated",
        "drop_optional_nulls",
        "extract_json",
        "json_path",
        "output_spec",
        "provider_preferences",
        "repair_messages",
        "schema_name",
        "strict_schema",
        "summarise",
        "tool_calls",
    ]
    assert sorted(schemas.__all__) == sorted(names_of_the_module)


def test_the_transport_types_are_public_where_the_hook_is():
    from airflow_openrouter import _streaming
    from airflow_openrouter._transport import clients, retry, settings
    from airflow_openrouter.hooks import openrouter

    assert openrouter.RetryPolicy is retry.RetryPolicy
    assert openrouter.ClientSettings is settings.ClientSettings
    assert openrouter.ChatStream is _streaming.ChatStream is clients.ChatStream
    assert openrouter.AsyncChatStream is _streaming.AsyncChatStream


def test_the_package_ships_its_typing_marker():
    assert resources.files("airflow_openrouter").joinpath("py.typed").is_file()


def test_the_connection_form_takes_its_defaults_from_client_settings():
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    defaults = connection_defaults()
    for name in ("timeout", "connect_timeout", "max_retries"):
        assert fields[name]["schema"]["default"] == defaults[name], name
    assert f"{DEADLINE_FACTOR} times the timeout" in fields["request_deadline"]["description"]
    assert set(defaults) <= set(fields), "every extra the hook reads is on the form"


def test_the_readme_states_the_defaults_client_settings_has():
    readme = (REPO / "README.md").read_text()
    defaults = ClientSettings(conn_id="c", base_url="u", api_key="k")
    assert f"default {defaults.timeout:g} and {defaults.connect_timeout:g})" in readme
    assert f"default {DEADLINE_FACTOR} times the request timeout" in readme
    assert re.search(rf"Max retries \| .*default {defaults.max_retries}\b", readme)


def test_a_hook_without_extras_has_the_client_settings_defaults(openrouter_emulator):
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    settings = OpenRouterHook().settings
    defaults = connection_defaults()
    assert {name: getattr(settings, name) for name in defaults} == defaults
    assert settings.deadline == DEADLINE_FACTOR * settings.timeout
