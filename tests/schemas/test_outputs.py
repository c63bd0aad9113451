"""The output specs (:mod:`airflow_openrouter.schemas.outputs`): every documented ``response_format``,
validated against the schema the user wrote."""

from __future__ import annotations

import pytest

from airflow_openrouter.exceptions import OpenRouterOutputValidationError
from airflow_openrouter.schemas import (
    JsonOutput,
    JsonSchemaOutput,
    PydanticOutput,
    TextOutput,
    output_spec,
)
from tests.schemas.support import Address, Invoice


def test_pydantic_output_returns_a_plain_dict_with_defaults_for_null_optionals():
    reply = '{"number": "F-1", "total": 12.5, "currency": null, "billing": {"city": "Ghent", "postcode": null}, "shipping": null, "lines": null}'

    value = PydanticOutput(Invoice).parse(reply)

    assert value == {
        "number": "F-1",
        "total": 12.5,
        "currency": "EUR",
        "billing": {"city": "Ghent", "postcode": None},
        "shipping": None,
        "lines": [],
    }
    assert type(value) is dict


def test_pydantic_errors_are_path_and_message_lines():
    with pytest.raises(OpenRouterOutputValidationError) as info:
        PydanticOutput(Invoice).parse('{"number": "F-1", "total": "lots", "billing": {}}')

    assert info.value.errors == [
        "$.total: Input should be a valid number, unable to parse string as a number",
        "$.billing.city: Field required",
    ]
    assert info.value.raw_output.startswith('{"number"')
    assert str(info.value) == (
        "The model's reply is not a valid Invoice: 2 error(s): $.total (float_parsing); $.billing.city (missing)."
    )


def test_json_schema_output_validates_against_the_original_schema():
    spec = JsonSchemaOutput(
        {
            "title": "Tags",
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "note": {"type": "string"},
            },
            "required": ["tags"],
        }
    )

    assert spec.parse('{"tags": ["a"], "note": null}') == {"tags": ["a"]}  # null optional -> absent
    with pytest.raises(OpenRouterOutputValidationError) as info:
        spec.parse('{"tags": ["a", 2, "c"], "note": null}')
    assert info.value.errors == ["$.tags: ['a', 2, 'c'] is too long", "$.tags[1]: 2 is not of type 'string'"]


def test_json_object_mode_requires_an_object():
    assert JsonOutput().response_format == {"type": "json_object"}
    with pytest.raises(
        OpenRouterOutputValidationError, match=r"^The model's reply is not a JSON object"
    ) as info:
        JsonOutput().parse("[1, 2]")
    assert info.value.errors == ["$: expected a JSON object, got an array"]


def test_unparseable_reply_is_a_validation_error_at_the_root():
    with pytest.raises(OpenRouterOutputValidationError) as info:
        PydanticOutput(Address).parse("I cannot help with that.")

    assert info.value.errors == ["$: the reply is not valid JSON (Expecting value: line 1 column 1)"]
    assert str(info.value) == "The model's reply is not a valid Address: 1 error(s): $ (json)."


@pytest.mark.parametrize(
    ("response_format", "kind"),
    [
        (None, TextOutput),
        ("text", TextOutput),
        ("json_object", JsonOutput),
        (Invoice, PydanticOutput),
        ({"type": "object"}, JsonSchemaOutput),
    ],
)
def test_output_spec_accepts_every_documented_form(response_format, kind):
    assert type(output_spec(response_format)) is kind


def test_output_spec_rejects_the_wire_form_with_a_hint():
    with pytest.raises(ValueError, match="takes the schema itself"):
        output_spec({"type": "json_schema", "json_schema": {}})


def test_text_output_sends_no_response_format_and_returns_the_text():
    assert TextOutput().response_format is None
    assert TextOutput().parse("hello") == "hello"
