"""Structured output: strict wire schemas, tolerant parsing, readable errors, the repair loop."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, Field

from airflow_openrouter.exceptions import OpenRouterConfigError, OpenRouterOutputValidationError
from airflow_openrouter.schemas import (
    JsonOutput,
    JsonSchemaOutput,
    PydanticOutput,
    TextOutput,
    complete_validated,
    extract_json,
    output_spec,
    repair_messages,
    schema_name,
    strict_schema,
    tool_calls,
)
from airflow_openrouter.types import ChatCompletion


class Address(BaseModel):
    city: str
    postcode: str | None = None


class Invoice(BaseModel):
    number: str = Field(description="invoice number")
    total: float
    currency: str = "EUR"
    billing: Address
    shipping: Address | None = None
    lines: list[Address] = []


def completion(content=None, *, tool_call_args=None, gen_id="gen-1", cost=0.01):
    message = {"role": "assistant", "content": content}
    if tool_call_args is not None:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": tool_call_args}}
        ]
    return ChatCompletion.model_validate(
        {"id": gen_id, "model": "m", "choices": [{"message": message}], "usage": {"cost": cost}}
    )


# --- strict schemas --------------------------------------------------------------------------------


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


# --- parsing and validation ------------------------------------------------------------------------


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


# --- repair ----------------------------------------------------------------------------------------


def test_repair_messages_quote_the_reply_and_list_the_errors():
    assistant, user = repair_messages('{"x": 1}', ["$.y: Field required", "$.x: bad"])

    assert assistant == {"role": "assistant", "content": '{"x": 1}'}
    assert user["role"] == "user"
    assert "- $.y: Field required\n- $.x: bad" in user["content"]
    assert "only the corrected JSON" in user["content"]


def test_complete_validated_repairs_once_then_succeeds():
    replies = iter([completion('{"city": 3}', gen_id="g1"), completion('{"city": "Oslo"}', gen_id="g2")])
    sent = []

    def complete(messages):
        sent.append(messages)
        return next(replies)

    first = [{"role": "user", "content": "where?"}]
    result = complete_validated(complete, first, PydanticOutput(Address), max_repair_attempts=1)

    assert result.value == {"city": "Oslo", "postcode": None}
    assert [c.id for c in result.completions] == ["g1", "g2"]
    assert sent[1][:2] == [first[0], {"role": "assistant", "content": '{"city": 3}'}]
    assert "$.city: Input should be a valid string" in sent[1][2]["content"]


def test_complete_validated_gives_up_after_max_repairs():
    calls = []

    def complete(messages):
        calls.append(messages)
        return completion("not json", gen_id=f"g{len(calls)}")

    with pytest.raises(OpenRouterOutputValidationError) as info:
        complete_validated(
            complete, [{"role": "user", "content": "x"}], PydanticOutput(Address), max_repair_attempts=2
        )

    assert len(calls) == 3
    assert (info.value.attempts, info.value.generation_id, info.value.raw_output) == (3, "g3", "not json")


def test_tool_calls_are_returned_structured_and_unvalidated():
    reply = completion(tool_call_args='{"city": "Oslo"}')

    result = complete_validated(lambda m: reply, [{"role": "user", "content": "x"}], PydanticOutput(Invoice))

    assert result.value == [{"id": "call_1", "name": "lookup", "arguments": {"city": "Oslo"}}]


def test_tool_call_with_malformed_arguments_is_a_validation_error():
    with pytest.raises(OpenRouterOutputValidationError) as info:
        tool_calls(completion(tool_call_args='{"city": "Zanzibar-canary", "days": '))

    assert str(info.value) == (
        "The model called tool 'lookup' with arguments that are not valid JSON "
        "(Expecting value: line 1 column 37 (char 36)) in reply gen-1."
    )
    assert info.value.raw_output == '{"city": "Zanzibar-canary", "days": '


# --- no model output in logs or in str(error) -------------------------------------------------------

CANARY = "Zanzibar-canary-7731"
TAGGED = {
    "title": "Tagged",
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
        "n": {"type": "integer"},
    },
    "required": ["tags", "n"],
}


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


def test_repair_loop_logs_paths_keywords_and_generation_ids_and_quotes_the_reply_only_at_debug(caplog):
    replies = iter(
        [
            completion(f'{{"tags": ["{CANARY}", "b"], "n": 1}}', gen_id="gen-a"),
            completion(f'{{"tags": ["{CANARY}"], "n": "{CANARY}"}}', gen_id="gen-b"),
        ]
    )
    logger = logging.getLogger("tests.schemas.repair")
    caplog.set_level(logging.DEBUG, logger=logger.name)

    with pytest.raises(OpenRouterOutputValidationError) as info:
        complete_validated(
            lambda messages: next(replies),
            [{"role": "user", "content": "tag it"}],
            JsonSchemaOutput(TAGGED),
            max_repair_attempts=1,
            logger=logger,
        )

    [warning] = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        "Reply gen-a is invalid; asking the model to repair it (repair 1 of 1). The model's reply is not "
        "valid against the JSON schema 'Tagged': 1 error(s): $.tags (maxItems)."
    )
    assert str(info.value) == (
        "Reply gen-b is still invalid after 2 attempt(s) (1 repair(s) allowed, see max_repair_attempts). "
        "The model's reply is not valid against the JSON schema 'Tagged': 1 error(s): $.n (type)."
    )
    assert CANARY in info.value.raw_output
    assert info.value.errors == [f"$.n: '{CANARY}' is not of type 'integer'"]
    # The quoted values are there, at DEBUG only.
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 2 and all(CANARY in m for m in debug)
