"""Structured output: what to ask for, how to read the reply, and how to ask again.

``response_format`` on the operators may be a pydantic model class, a JSON Schema dict,
``"json_object"``, or ``None``/``"text"``. :func:`output_spec` turns it into an :class:`OutputSpec`,
which gives the wire ``response_format`` and parses a reply into a plain JSON value (never a pydantic
instance: XCom gets dicts and lists).

**Strict schemas.** A schema is sent with ``strict: true``, which OpenAI-style providers only accept
in a restricted form: every object closes ``additionalProperties`` and lists every property as
required. :func:`strict_schema` rewrites a schema that way. A property that was optional becomes
required *and nullable*, so the model can still say "no value" by answering ``null``; defaults are
removed from the wire schema, because a required field's default means nothing to the model.

**Validation against what the user wrote.** A reply follows the strict schema; the user's code
expects the original one. So, before validating, :func:`drop_optional_nulls` removes the ``null``
of every property that was optional in the original and does not itself allow ``null``; the field
is then simply absent, and pydantic fills in its default. The value is then validated against the
original schema (pydantic model, or the JSON Schema with its declared draft, 2020-12 by default).
This keeps one rule for both kinds of schema and never accepts a value the user's schema rejects.

Objects without ``properties`` (free-form maps such as ``dict[str, int]``) are left as they are:
closing them would silently force the model to return ``{}``. A provider that insists on strict
maps will reject the request, with an error naming the problem.

**Logs.** Validation messages quote values from the reply, and the reply is user data (see the design's
"secrets stay secret"): what is logged at WARNING and above, and ``str()`` of
:class:`~airflow_openrouter.exceptions.OpenRouterOutputValidationError`, name only the error paths,
the failed keywords, counts and generation ids. The messages themselves are sent back to the model for
repair, kept on the exception's ``errors`` (and the reply on ``raw_output``), and logged at DEBUG.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from airflow_openrouter.exceptions import OpenRouterConfigError, OpenRouterOutputValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from airflow_openrouter.types import ChatCompletion

log = logging.getLogger(__name__)


class _Logger(Protocol):  # a stdlib logger, or an operator's self.log
    def debug(self, msg: Any, /, *args: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any) -> Any: ...


_NULL = {"type": "null"}
_NAME_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]+")
# Schema keywords whose value is a map of name -> subschema, or a subschema / list of subschemas.
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SUBSCHEMAS = frozenset(
    {
        "items",
        "prefixItems",
        "additionalProperties",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "contains",
        "if",
        "then",
        "else",
    }
)
_MAX_ERRORS = 20
_MAX_SUMMARISED = 10


class Problem(NamedTuple):
    """One reason a reply is invalid."""

    #: where, as a JSON path (``$.items[0].name``)
    path: str
    #: which rule failed: the JSON Schema keyword (``type``, ``maxItems``), the pydantic error type
    #: (``missing``, ``float_parsing``), or ``json`` when the reply is not JSON at all
    keyword: str
    #: the readable message; **may quote values from the reply**
    message: str

    @property
    def line(self) -> str:
        """``path: message``, as sent back to the model and kept on the exception's ``errors``."""
        return f"{self.path}: {self.message}"

    @property
    def summary(self) -> str:
        """``path (keyword)``: no value from the reply, so fit for logs."""
        return f"{self.path} ({self.keyword})"


def summarise(problems: Sequence[Problem]) -> str:
    """``2 error(s): $.a (type); $.b (missing)``, for logs and exception messages."""
    listed = "; ".join(p.summary for p in problems[:_MAX_SUMMARISED])
    more = f"; and {len(problems) - _MAX_SUMMARISED} more" if len(problems) > _MAX_SUMMARISED else ""
    return f"{len(problems)} error(s): {listed}{more}"


# --- the output specs ------------------------------------------------------------------------------


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
                errors=[p.line for p in problems[:_MAX_ERRORS]],
                raw_output=text,
            )
        return value

    def _check(self, value: Any) -> tuple[Any, list[Problem]]:
        """The validated value and its problems (none when valid)."""
        if not isinstance(value, dict):
            return value, [Problem("$", "type", f"expected a JSON object, got {_json_type(value)}")]
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
            Problem(json_path(e.absolute_path), str(e.validator), _shorten(e.message)) for e in errors
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


def check_json_schema(schema: Mapping[str, Any], *, where: str | None = None) -> Any:
    """The jsonschema validator class of *schema*, after checking *schema* against its meta-schema.

    The draft is the one its ``$schema`` names, 2020-12 by default. Instead of jsonschema's
    ``SchemaError`` (which quotes the whole meta-schema) the error says where in *schema* the problem is.

    :param where: what the error names first, e.g. ``"Task 'summarise'"``.
    :raises OpenRouterConfigError: the wire form was passed, or *schema* is not a valid JSON Schema.
    """
    from jsonschema import exceptions, validators

    prefix = f"{where}: " if where else ""
    if schema.get("type") in ("json_schema", "json_object", "text"):
        raise OpenRouterConfigError(
            f"{prefix}response_format takes the schema itself (or a pydantic model), not the wire form "
            f"{{'type': {schema['type']!r}, ...}}: the operator builds that."
        )
    validator_class = validators.validator_for(schema, default=validators.Draft202012Validator)
    meta_validator = validator_class(validator_class.META_SCHEMA)
    error = exceptions.best_match(meta_validator.iter_errors(schema))
    if error is not None:
        meta = validator_class.META_SCHEMA.get("$schema", validator_class.__name__)
        raise OpenRouterConfigError(
            f"{prefix}response_format is not a valid JSON Schema: at {json_path(error.absolute_path)}, "
            f"{_shorten(error.message, 160)} (checked against the meta-schema {meta})."
        )
    return validator_class


def provider_preferences(spec: OutputSpec, provider: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``provider`` routing field to send with *spec*.

    A ``response_format`` is only honoured by some of the providers behind a model; without
    ``require_parameters`` OpenRouter may route to one that ignores it and answers in prose. So it
    is set whenever a format is sent, unless the caller chose the routing (*provider*) themselves.
    """
    if provider is not None or spec.response_format is None:
        return provider
    return {"require_parameters": True}


def schema_name(raw: Any) -> str:
    """A schema name OpenRouter accepts (``^[a-zA-Z0-9_-]{1,64}$``)."""
    name = _NAME_ALLOWED.sub("_", str(raw or "")).strip("_")[:64]
    return name or "response"


# --- strict schemas --------------------------------------------------------------------------------


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of *schema* in the form ``strict: true`` requires (see the module docstring)."""
    return _strict(dict(schema))


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SUBSCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMAS:
            out[key] = _strict(value)
        elif key != "default":  # literal keywords (enum, const, required, ...) are copied as they are
            out[key] = value
    properties = out.get("properties")
    if isinstance(properties, Mapping):
        required = set(node.get("required", ()))
        out["properties"] = {
            name: sub if name in required else _nullable(sub) for name, sub in properties.items()
        }
        out["required"] = list(properties)
        out["additionalProperties"] = False
    return out


def _nullable(schema: Any) -> Any:
    """*schema*, also accepting ``null``."""
    if not isinstance(schema, Mapping) or accepts_null(schema):
        return schema
    kind = schema.get("type")
    if kind is not None and not {"$ref", "anyOf", "oneOf", "allOf", "const"} & schema.keys():
        out = {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}
        if "enum" in schema:
            out["enum"] = [*schema["enum"], None]
        return out
    if isinstance(schema.get("anyOf"), list):
        return {**schema, "anyOf": [*schema["anyOf"], _NULL]}
    # $ref, oneOf, allOf, const: wrap. Annotations (description, title) stay beside the anyOf.
    annotations = {k: v for k, v in schema.items() if k in ("title", "description")}
    core = {k: v for k, v in schema.items() if k not in annotations}
    return {**annotations, "anyOf": [core, _NULL]}


def accepts_null(schema: Mapping[str, Any]) -> bool:
    """Whether *schema* (without following ``$ref``) lets ``null`` through."""
    if "enum" in schema:
        return None in schema["enum"]
    if "const" in schema:
        return schema["const"] is None
    kind = schema.get("type")
    if kind is not None:
        return kind == "null" or (isinstance(kind, list) and "null" in kind)
    branches = [*schema.get("anyOf", ()), *schema.get("oneOf", ())]
    if branches:
        return any(isinstance(b, Mapping) and accepts_null(b) for b in branches)
    return not {"$ref", "allOf", "not"} & schema.keys()  # no constraint at all


def drop_optional_nulls(value: Any, schema: Mapping[str, Any]) -> Any:
    """*value* without the ``null`` of properties the (original) *schema* neither requires nor allows null."""
    return _drop_nulls(value, schema, schema)


def _drop_nulls(value: Any, schema: Any, root: Mapping[str, Any]) -> Any:
    schema = _deref(schema, root)
    if not isinstance(schema, Mapping):
        return value
    branch = _single_branch(schema)
    if branch is not None:
        return _drop_nulls(value, branch, root)
    properties = schema.get("properties")
    if isinstance(value, dict) and isinstance(properties, Mapping):
        required = set(schema.get("required", ()))
        kept = {}
        for key, item in value.items():
            sub = _deref(properties.get(key, {}), root)
            if item is None and key not in required and isinstance(sub, Mapping) and not accepts_null(sub):
                continue
            kept[key] = _drop_nulls(item, sub, root)
        return kept
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        return [_drop_nulls(item, items, root) for item in value]
    return value


def _single_branch(schema: Mapping[str, Any]) -> Any:
    """The one non-null branch of ``anyOf``/``oneOf``/``allOf`` (``Optional[Model]``), if there is one."""
    for key in ("anyOf", "oneOf", "allOf"):
        branches = [b for b in schema.get(key, ()) if b != _NULL]
        if len(branches) == 1:
            return branches[0]
    return None


def _deref(schema: Any, root: Mapping[str, Any]) -> Any:
    """Follow local ``$ref`` pointers (``#/$defs/Name``)."""
    seen = set()
    while isinstance(schema, Mapping) and isinstance(ref := schema.get("$ref"), str) and ref.startswith("#"):
        if ref in seen:  # a cycle: give up, leaving the value unchanged
            return {}
        seen.add(ref)
        target: Any = root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        schema = target
    return schema


# --- reading replies -------------------------------------------------------------------------------

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def extract_json(text: str | None) -> Any:
    """The JSON value of a reply, tolerating a Markdown code fence and prose around one object.

    Raises ``ValueError`` with a short reason when there is no JSON to be found.
    """
    if not text or not text.strip():
        raise ValueError("the reply is empty")
    candidate = text.strip()
    if fence := _FENCE.search(candidate):
        candidate = fence.group(1).strip()
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as exc:
        error = exc
    # Prose around the value ("Here is the result: {...} Hope this helps"): decode from the first
    # bracket and ignore whatever follows the value.
    for bracket in "{[":
        start = candidate.find(bracket)
        if start >= 0:
            try:
                return _DECODER.raw_decode(candidate, start)[0]
            except json.JSONDecodeError:
                pass
    raise ValueError(f"the reply is not valid JSON ({error.msg}: line {error.lineno} column {error.colno})")


def json_path(parts: Sequence[Any]) -> str:
    """``$.items[0].name`` for the path ``("items", 0, "name")``."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _shorten(message: str, limit: int = 200) -> str:
    # jsonschema messages quote the offending value, which can be a whole document.
    return message if len(message) <= limit else f"{message[: limit - 1]}…"


# --- the repair round-trip -------------------------------------------------------------------------


def repair_messages(reply: str | None, errors: Sequence[str]) -> list[dict[str, Any]]:
    """The two messages that ask the model to correct *reply*: the reply itself, then the errors."""
    listed = "\n".join(f"- {e}" for e in errors[:_MAX_ERRORS])
    return [
        {"role": "assistant", "content": reply or ""},
        {
            "role": "user",
            "content": "Your previous reply does not match the required JSON format:\n"
            f"{listed}\n\n"
            "Reply again with only the corrected JSON: no explanation and no code fence.",
        },
    ]


@dataclass
class ValidatedReply:
    """The outcome of :func:`complete_validated`."""

    #: the parsed value, or the tool calls (see :func:`tool_calls`) when the model called tools
    value: Any
    #: every completion made, first to last: one, plus one per repair
    completions: list[ChatCompletion] = field(default_factory=list)


def complete_validated(
    complete: Callable[[list[dict[str, Any]]], ChatCompletion],
    messages: list[dict[str, Any]],
    spec: OutputSpec,
    *,
    max_repair_attempts: int = 1,
    logger: _Logger = log,
) -> ValidatedReply:
    """Call *complete* until the reply parses, sending the errors back up to *max_repair_attempts* times.

    A reply with tool calls is returned as the tool calls, unvalidated: the caller runs the tools.

    :param complete: sends a messages list, returns the completion (the hook call; no I/O here).
    :raises OpenRouterOutputValidationError: the last reply was still invalid; ``attempts`` and
        ``generation_id`` say how many calls were made and which generation failed last.
    """
    reply = ValidatedReply(value=None)
    for attempt in range(1, max_repair_attempts + 2):
        completion = complete(messages)
        reply.completions.append(completion)
        calls = tool_calls(completion)
        if calls is not None:
            reply.value = calls
            return reply
        try:
            reply.value = spec.parse(completion.content)
            return reply
        except OpenRouterOutputValidationError as exc:
            # str(exc) names paths and keywords only; the messages quote the reply: DEBUG only.
            logger.debug("Reply %s failed validation: %s", completion.id, exc.errors)
            if attempt > max_repair_attempts:
                raise OpenRouterOutputValidationError(
                    f"Reply {completion.id or '(no generation id)'} is still invalid after {attempt} "
                    f"attempt(s) ({max_repair_attempts} repair(s) allowed, see max_repair_attempts). {exc}",
                    errors=exc.errors,
                    raw_output=exc.raw_output,
                    attempts=attempt,
                    generation_id=completion.id or None,
                ) from None
            logger.warning(
                "Reply %s is invalid; asking the model to repair it (repair %d of %d). %s",
                completion.id,
                attempt,
                max_repair_attempts,
                exc,
            )
            messages = [*messages, *repair_messages(completion.content, exc.errors)]
    raise AssertionError("unreachable")  # the loop always returns or raises


def tool_calls(completion: ChatCompletion) -> list[dict[str, Any]] | None:
    """The tool calls of a reply as ``[{"id", "name", "arguments"}]`` (arguments parsed), or ``None``."""
    calls = completion.choices[0].message.tool_calls if completion.choices else None
    if not calls:
        return None
    out = []
    for call in calls:
        try:
            arguments = call.parsed_arguments()
        except ValueError as exc:  # json's messages give a position, never the text
            raise OpenRouterOutputValidationError(
                f"The model called tool {call.function.name!r} with arguments that are not valid JSON "
                f"({exc}) in reply {completion.id or '(no generation id)'}.",
                errors=[f"$.arguments: {exc}"],
                raw_output=call.function.arguments,
                generation_id=completion.id or None,
            ) from exc
        out.append({"id": call.id, "name": call.function.name, "arguments": arguments})
    return out
