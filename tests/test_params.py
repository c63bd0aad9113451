"""The one definition of the request parameters: every rule rejects what OpenRouter would reject, and the
error names where the value came from, the field, what is allowed and what it got."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from airflow_openrouter._params import (
    CHAT_ONLY_PARAMS,
    REQUEST_PARAMS,
    SHARED_PARAMS,
    check_request_params,
    check_response_format,
)
from airflow_openrouter.exceptions import OpenRouterConfigError

WHERE = "Task 't'"


class Ticket(BaseModel):
    category: str


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": "100"}, "max_tokens must be an integer of at least 1, got '100' (str)."),
        ({"max_tokens": 0}, "max_tokens must be an integer of at least 1, got 0."),
        ({"max_tokens": True}, "max_tokens must be an integer of at least 1, got True (bool)."),
        ({"max_completion_tokens": 2.5}, "max_completion_tokens must be an integer of at least 1, got 2.5."),
        ({"seed": 1.0}, "seed must be an integer from -9223372036854775808 to 9223372036854775807, got 1.0."),
        ({"seed": 2**63}, "seed must be an integer from"),
        ({"temperature": "0.2"}, "temperature must be a number from 0 to 2, got '0.2' (str)."),
        ({"temperature": 2.01}, "temperature must be a number from 0 to 2, got 2.01."),
        ({"temperature": -0.1}, "temperature must be a number from 0 to 2, got -0.1."),
        ({"top_p": 1.5}, "top_p must be a number from 0 to 1, got 1.5."),
        ({"frequency_penalty": -2.5}, "frequency_penalty must be a number from -2 to 2, got -2.5."),
        ({"presence_penalty": 3}, "presence_penalty must be a number from -2 to 2, got 3."),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs must be an integer from 0 to 20, got 21."),
        ({"logprobs": "yes"}, "logprobs must be True or False, got 'yes' (str)."),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop must be a string or a list of at most 4 strings"),
        ({"stop": ["a", 1]}, "stop must be a string or a list of at most 4 strings"),
        (
            {"logit_bias": {"50256": -101}},
            "logit_bias must be a dict of token id to a number from -100 to 100",
        ),
        ({"logit_bias": {"the": 5}}, "logit_bias must be a dict of token id to a number from -100 to 100"),
        (
            {"tool_choice": "always"},
            "tool_choice must be 'none', 'auto', 'required' or a dict naming a function",
        ),
        ({"tools": [{"function": {}}]}, "tools must be a list of tool dicts, each with a 'type'"),
        ({"models": ["a", ""]}, "models must be a list of model ids"),
        ({"plugins": [{"name": "web"}]}, "plugins must be a list of plugin dicts, each with an 'id'"),
        ({"reasoning": "high"}, "reasoning must be a dict such as {'effort': 'low'}, got 'high' (str)."),
        ({"user": 7}, "user must be a string, got 7."),
        ({"extra_body": ["x"]}, "extra_body must be a dict of request fields, got ['x'] (list)."),
        (
            {"extra_body": {"temperature": 9}},
            "extra_body['temperature'] must be a number from 0 to 2, got 9.",
        ),
        ({"extra_body": {"top_k": -1}}, "extra_body['top_k'] must be an integer of at least 0, got -1."),
        ({"top_logprobs": 3}, "top_logprobs needs logprobs=True (got logprobs=None)."),
    ],
)
def test_a_bad_value_is_named_with_where_it_came_from_and_what_is_allowed(params, message):
    with pytest.raises(OpenRouterConfigError) as info:
        check_request_params(params, where=WHERE)

    assert str(info.value).startswith(f"{WHERE}: {message}")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"seed": 0, "max_tokens": 1, "temperature": 0, "top_p": 1, "frequency_penalty": -2},
        {"temperature": 2, "presence_penalty": 2.0, "stop": "\n", "logit_bias": {"50256": -100, 42: 100}},
        {"stop": ["a", "b", "c", "d"], "logprobs": True, "top_logprobs": 0, "user": "u"},
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function"}},
        {"models": ["a/b"], "plugins": [{"id": "web"}], "reasoning": {"effort": "low"}},
        {"extra_body": {"transforms": ["middle-out"], "logprobs": True}, "top_logprobs": 2},
        # None means "not set"; fields without a rule are not this module's business
        {"temperature": None, "messages": "anything", "provider": {"only": ["x"]}},
    ],
)
def test_values_openrouter_accepts_pass(params):
    check_request_params(params, where=WHERE)


def test_an_upstream_reference_in_a_request_field_says_the_field_is_not_templated():
    class XComArgLike:
        def resolve(self, context):
            return 0.5

    with pytest.raises(OpenRouterConfigError, match=r"temperature is not a templated argument.*\.expand\("):
        check_request_params({"temperature": XComArgLike()}, where=WHERE)


def test_every_operator_argument_has_a_rule_and_a_doc():
    for name in (*SHARED_PARAMS, *CHAT_ONLY_PARAMS):
        assert REQUEST_PARAMS[name].doc and REQUEST_PARAMS[name].allowed
    assert not set(SHARED_PARAMS) & set(CHAT_ONLY_PARAMS)


# --- response_format -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "text", "json_object", Ticket, {"type": "object"}])
def test_every_documented_response_format_passes(value):
    check_response_format(value, where=WHERE)


def test_a_pydantic_instance_says_to_pass_the_class():
    with pytest.raises(OpenRouterConfigError) as info:
        check_response_format(Ticket(category="x"), where=WHERE)

    assert str(info.value) == (
        "Task 't': response_format takes the model class, not an instance of it: pass "
        "response_format=Ticket, not Ticket(...)."
    )


def test_an_invalid_json_schema_names_the_place_in_the_schema_not_the_meta_schema():
    schema = {"type": "object", "properties": {"n": {"type": "integr"}}}

    with pytest.raises(OpenRouterConfigError) as info:
        check_response_format(schema, where=WHERE)

    message = str(info.value)
    assert message.startswith(
        "Task 't': response_format is not a valid JSON Schema: at $.properties.n.type, "
    )
    assert len(message) < 400  # not the whole meta-schema, as jsonschema's SchemaError would print


def test_the_wire_form_is_refused_with_a_hint():
    with pytest.raises(OpenRouterConfigError, match=r"takes the schema itself .* not the wire form"):
        check_response_format({"type": "json_schema", "json_schema": {}}, where=WHERE)


@pytest.mark.parametrize("value", ["json", 42, int, ["a"]])
def test_other_response_formats_list_what_is_allowed(value):
    with pytest.raises(OpenRouterConfigError, match="response_format must be a pydantic model class, a JSON"):
        check_response_format(value, where=WHERE)


def test_a_model_pydantic_cannot_describe_fails_naming_it():
    class Opaque:
        pass

    class Holder(BaseModel, arbitrary_types_allowed=True):
        thing: Opaque

    with pytest.raises(OpenRouterConfigError, match="response_format Holder has no JSON Schema"):
        check_response_format(Holder, where=WHERE)
