"""Structured output: what to ask for, how to read the reply, and how to ask again.

One job per module, each with its rules in its docstring:

* :mod:`.outputs` -- :func:`output_spec` turns an operator's ``response_format`` (a pydantic model
  class, a JSON Schema dict, ``"json_object"``, ``None``/``"text"``) into an :class:`OutputSpec`: the
  wire ``response_format``, and the parsing of a reply into a plain JSON value validated against the
  schema the user wrote;
* :mod:`.strict` -- schemas in the form ``strict: true`` takes (:func:`strict_schema`), the nulls of
  optional fields dropped again before validation (:func:`drop_optional_nulls`), and the check of a
  user's schema against its meta-schema (:func:`check_json_schema`);
* :mod:`.replies` -- the JSON in a reply (:func:`extract_json`) and the problems that make it invalid,
  named in logs by path and keyword only, never by the reply's values;
* :mod:`.repair` -- the repair round-trip (:func:`complete_validated`) and tool calls.

Every name is importable from here, as before the package was split.
"""

from __future__ import annotations

from airflow_openrouter.schemas.outputs import (
    JsonOutput,
    JsonSchemaOutput,
    OutputSpec,
    PydanticOutput,
    TextOutput,
    output_spec,
    provider_preferences,
)
from airflow_openrouter.schemas.repair import ValidatedReply, complete_validated, repair_messages, tool_calls
from airflow_openrouter.schemas.replies import Problem, extract_json, json_path, summarise
from airflow_openrouter.schemas.strict import (
    accepts_null,
    check_json_schema,
    drop_optional_nulls,
    schema_name,
    strict_schema,
)

__all__ = [
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
