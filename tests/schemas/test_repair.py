"""The repair round-trip (:mod:`airflow_openrouter.schemas.repair`): asking again with the errors, giving
up, tool calls, and what is logged at which level."""

from __future__ import annotations

import logging

import pytest

from airflow_openrouter.exceptions import OpenRouterOutputValidationError
from airflow_openrouter.schemas import (
    JsonSchemaOutput,
    PydanticOutput,
    complete_validated,
    repair_messages,
    tool_calls,
)
from tests.schemas.support import CANARY, TAGGED, Address, Invoice, completion


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
