"""What a reply must be: the output specs behind ``response_format``.

``response_format`` on the operators may be a pydantic model class, a JSON Schema dict,
``"json_object"``, or ``None``/``"text"``. :func:`output_spec` turns it into an :class:`OutputSpec`,
which gives the wire ``response_format`` (a schema in strict form: :mod:`.strict`) and parses a reply
into a plain JSON value (never a pydantic instance: XCom gets dicts and lists), validated against the
schema the user wrote. An invalid reply raises
:class:`~airflow_openrouter.exceptions.OpenRouterOutputValidationError`, whose message names paths and
keywords only (:mod:`.replies`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_openrouter.exceptions import OpenRouterConfigError, OpenRouterOutputValidationError
from airflow_openrouter.schemas.replies import (
    MAX_ERRORS,
    Problem,
    extract_json,
    json_path,
    json_type,
    shorten,
    summarise,
)
from airflow_openrouter.schemas.strict import (
    check_json_schema,
    drop_optional_nulls,
    schema_name,
    strict_schema,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "JsonOutput",
    "JsonSchemaOutput",
    "OutputSpec",
    "PydanticOutput",
    "TextOutput",
    "output_spec",
    "provider_preferences",
]


class OutputSpec:
    """What a reply must be. Build one with :func:`output_spec`."""

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The ``response_format`` request field, or ``None`` to send none."""
        return None

    def parse(self, text: str | None) -> Any:
        """The reply as the caller's value; raises :class:`OpenRouterOutputValidationError` (``.errors``)."""
        raise NotImplementedError


class TextOutput(OutputSpec):
    """Free text: the reply is returned as it is."""

    def parse(self, text: str | None) -> str:
        return text or ""


class JsonOutput(OutputSpec):
    """Any JSON object (OpenRouter's ``json_object`` mode)."""

    description = "a JSON object"

    @property
    def response_format(self) -> dict[str, Any] | None:
        return {"type": "json_object"}

    def parse(self, text: str | None) -> Any:
        try:
            value = extract_json(text)
        except ValueError as exc:
            problems = [Problem("$", "json", str(exc))]
        else:
            value, problems = self._check(value)
        if problems:
            # The message names paths and keywords only: it is what task logs show.
            raise OpenRouterOutputValidationError(
                f"The model's reply is not {self.description}: {summarise(problems)}.",
                errors=[p.line for p in problems[:MAX_ERRORS]],
                raw_output=text,
            )
        return value

    def _check(self, value: Any) -> tuple[Any, list[Problem]]:
        """The validated value and its problems (none when valid)."""
        if not isinstance(value, dict):
            return value, [Problem("$", "type", f"expected a JSON object, got {json_type(value)}")]
        return value, []


class JsonSchemaOutput(JsonOutput):
    """JSON valid against a JSON Schema, sent in strict form (see the module docstring)."""

    def __init__(self, schema: Mapping[str, Any], *, name: str | None = None) -> None:
        self.schema = dict(schema)
        self.name = schema_name(name or self.schema.get("title"))
        self.strict_schema = strict_schema(self.schema)
        self.description = f"valid against the JSON schema {self.name!r}"
        # A broken schema fails here, before any request (operators check it at DAG parse already).
        self._validator = check_json_schema(self.schema)(self.schema)

    @property
    def response_format(self) -> dict[str, Any] | None:
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "strict": True, "schema": self.strict_schema},
        }

    def _check(self, value: Any) -> tuple[Any, list[Problem]]:
        value = drop_optional_nulls(value, self.schema)
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        return value, [
            Problem(json_path(e.absolute_path), str(e.validator), shorten(e.message)) for e in errors
        ]


class PydanticOutput(JsonSchemaOutput):
    """JSON valid against a pydantic model; parses to ``model.model_dump(mode="json")``."""

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__(model.model_json_schema(), name=model.__name__)
        self.model = model
        self.description = f"a valid {model.__name__}"

    def _check(self, value: Any) -> tuple[Any, list[Problem]]:
        from pydantic import ValidationError

        try:
            instance = self.model.model_validate(drop_optional_nulls(value, self.schema))
        except ValidationError as exc:
            return value, [Problem(json_path(e["loc"]), e["type"], e["msg"]) for e in exc.errors()]
        return instance.model_dump(mode="json"), []


def output_spec(response_format: type[BaseModel] | Mapping[str, Any] | str | None) -> OutputSpec:
    """The :class:`OutputSpec` of an operator's ``response_format`` argument.

    :param response_format: a pydantic model class, a JSON Schema dict, ``"json_object"``, or
        ``None``/``"text"`` for free text.
    """
    if response_format is None or response_format == "text":
        return TextOutput()
    if response_format == "json_object":
        return JsonOutput()
    if isinstance(response_format, type) and callable(getattr(response_format, "model_json_schema", None)):
        return PydanticOutput(response_format)
    if isinstance(response_format, Mapping):
        return JsonSchemaOutput(response_format)
    raise OpenRouterConfigError(
        "response_format must be a pydantic model class, a JSON Schema dict, 'json_object', 'text' or None; "
        f"got {response_format!r:.100}."
    )


def provider_preferences(spec: OutputSpec, provider: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``provider`` routing field to send with *spec*.

    A ``response_format`` is only honoured by some of the providers behind a model; without
    ``require_parameters`` OpenRouter may route to one that ignores it and answers in prose. So it
    is set whenever a format is sent, unless the caller chose the routing (*provider*) themselves.
    """
    if provider is not None or spec.response_format is None:
        return provider
    return {"require_parameters": True}
