"""Reading replies (:mod:`airflow_openrouter.schemas.replies`): JSON found in fences and prose, and errors
that name paths and keywords but never the reply's values."""

from __future__ import annotations

import pytest

from airflow_openrouter.exceptions import OpenRouterOutputValidationError
from airflow_openrouter.schemas import (
    JsonOutput,
    JsonSchemaOutput,
    PydanticOutput,
    extract_json,
)
from tests.schemas.support import CANARY, TAGGED, Address


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '```json\n{"a": 1}\n```',
        '```\n{"a": 1}\n```',
        'Here you go:\n```json\n{"a": 1}\n```\nAnything else?',
        'Sure! {"a": 1} Hope that helps.',
    ],
)
def test_extract_json_tolerates_fences_and_prose(text):
    assert extract_json(text) == {"a": 1}


@pytest.mark.parametrize(
    ("text", "reason"), [("", "empty"), ("no json here", "not valid JSON"), ('{"a": ', "not valid JSON")]
)
def test_extract_json_explains_what_is_wrong(text, reason):
    with pytest.raises(ValueError, match=reason):
        extract_json(text)


@pytest.mark.parametrize(
    ("spec", "reply", "summary"),
    [
        (
            JsonSchemaOutput(TAGGED),
            f'{{"tags": ["{CANARY}", "{CANARY}"], "n": "{CANARY}"}}',
            "2 error(s): $.n (type); $.tags (maxItems)",
        ),
        (PydanticOutput(Address), f'{{"city": ["{CANARY}"]}}', "1 error(s): $.city (string_type)"),
        (JsonOutput(), f'["{CANARY}"]', "1 error(s): $ (type)"),
        (PydanticOutput(Address), f"Sorry, {CANARY} is not an address.", "1 error(s): $ (json)"),
    ],
    ids=["json-schema", "pydantic", "json-object", "not-json"],
)
def test_validation_error_names_paths_and_keywords_but_never_the_reply(spec, reply, summary):
    with pytest.raises(OpenRouterOutputValidationError) as info:
        spec.parse(reply)

    assert str(info.value).endswith(f": {summary}.")
    assert CANARY not in str(info.value)
    assert info.value.raw_output == reply


def test_many_errors_are_counted_and_the_first_ten_listed():
    schema = {"type": "object", "properties": {f"p{i:02}": {"type": "integer"} for i in range(12)}}

    with pytest.raises(OpenRouterOutputValidationError) as info:
        JsonSchemaOutput(schema).parse(str({f"p{i:02}": "x" for i in range(12)}).replace("'", '"'))

    listed = "; ".join(f"$.p{i:02} (type)" for i in range(10))
    assert str(info.value).endswith(f"12 error(s): {listed}; and 2 more.")
    assert len(info.value.errors) == 12
