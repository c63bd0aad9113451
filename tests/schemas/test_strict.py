"""Strict wire schemas (:mod:`airflow_openrouter.schemas.strict`): closed objects, optional fields made
nullable, schema names, and a user's schema checked against its meta-schema."""

from __future__ import annotations

import pytest

from airflow_openrouter.exceptions import OpenRouterConfigError
from airflow_openrouter.schemas import (
    JsonSchemaOutput,
    PydanticOutput,
    schema_name,
    strict_schema,
)
from tests.schemas.support import Invoice


def test_strict_schema_closes_every_object_and_requires_every_property():
    schema = PydanticOutput(Invoice).response_format["json_schema"]["schema"]

    for obj in (schema, schema["$defs"]["Address"]):
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])


def test_strict_schema_makes_optional_fields_nullable_and_drops_defaults():
    schema = strict_schema(Invoice.model_json_schema())
    props = schema["properties"]

    assert props["number"] == {"description": "invoice number", "title": "Number", "type": "string"}
    assert props["currency"]["type"] == ["string", "null"]
    assert "default" not in props["currency"]
    assert props["shipping"]["anyOf"] == [{"$ref": "#/$defs/Address"}, {"type": "null"}]  # no second null
    assert props["lines"]["type"] == ["array", "null"]
    assert props["billing"] == {"$ref": "#/$defs/Address"}
    assert schema["$defs"]["Address"]["properties"]["postcode"]["anyOf"][-1] == {"type": "null"}


def test_strict_schema_recurses_into_array_items_and_anyof_branches():
    schema = {
        "type": "object",
        "properties": {
            "rows": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}},
            "either": {
                "anyOf": [{"type": "object", "properties": {"b": {"enum": ["x", "y"], "type": "string"}}}]
            },
        },
        "required": ["rows", "either"],
    }

    strict = strict_schema(schema)

    row = strict["properties"]["rows"]["items"]
    assert (row["additionalProperties"], row["properties"]["a"]["type"]) == (False, ["integer", "null"])
    branch = strict["properties"]["either"]["anyOf"][0]
    assert branch["properties"]["b"] == {"enum": ["x", "y", None], "type": ["string", "null"]}
    assert schema["properties"]["rows"]["items"] == {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
    }


def test_strict_schema_leaves_free_form_maps_open():
    schema = {
        "type": "object",
        "properties": {"m": {"type": "object", "additionalProperties": {"type": "integer"}}},
    }

    assert strict_schema(schema)["properties"]["m"] == {
        "type": ["object", "null"],
        "additionalProperties": {"type": "integer"},
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Invoice", "Invoice"),
        ("My invoice (v2)!", "My_invoice_v2"),
        ("", "response"),
        (None, "response"),
        ("x" * 80, "x" * 64),
    ],
)
def test_schema_name_is_sanitised(raw, expected):
    assert schema_name(raw) == expected


def test_dict_schema_name_comes_from_its_title():
    assert (
        JsonSchemaOutput({"title": "Tag list", "type": "object"}).response_format["json_schema"]["name"]
        == "Tag_list"
    )


def test_invalid_json_schema_fails_with_a_short_error_naming_the_place_in_the_schema():
    with pytest.raises(OpenRouterConfigError) as info:
        JsonSchemaOutput({"type": "object", "properties": {"a": {"type": 12}}})

    assert str(info.value) == (
        "response_format is not a valid JSON Schema: at $.properties.a.type, 12 is not valid under any of "
        "the given schemas (checked against the meta-schema https://json-schema.org/draft/2020-12/schema)."
    )


def test_a_schema_is_checked_against_the_draft_its_dollar_schema_names():
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "required": "a"}

    with pytest.raises(OpenRouterConfigError, match=r"at \$\.required, 'a' is not of type 'array'.*draft-07"):
        JsonSchemaOutput(draft7)
