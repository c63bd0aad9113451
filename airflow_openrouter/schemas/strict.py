"""JSON Schemas in the form OpenRouter's ``strict: true`` takes, and back to what the user wrote.

**Strict schemas.** A schema is sent with ``strict: true``, which OpenAI-style providers only accept
in a restricted form: every object closes ``additionalProperties`` and lists every property as
required. :func:`strict_schema` rewrites a schema that way. A property that was optional becomes
required *and nullable*, so the model can still say "no value" by answering ``null``; defaults are
removed from the wire schema, because a required field's default means nothing to the model.

**Validation against what the user wrote.** A reply follows the strict schema; the user's code
expects the original one. So, before validating, :func:`drop_optional_nulls` removes the ``null``
of every property that was optional in the original and does not itself allow ``null``; the field
is then simply absent, and pydantic fills in its default. The value is then validated against the
original schema (pydantic model, or the JSON Schema with its declared draft, 2020-12 by default:
:func:`check_json_schema`). This keeps one rule for both kinds of schema and never accepts a value the
user's schema rejects.

Objects without ``properties`` (free-form maps such as ``dict[str, int]``) are left as they are:
closing them would silently force the model to return ``{}``. A provider that insists on strict
maps will reject the request, with an error naming the problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_openrouter.exceptions import OpenRouterConfigError
from airflow_openrouter.schemas.replies import json_path, shorten

__all__ = ["accepts_null", "check_json_schema", "drop_optional_nulls", "schema_name", "strict_schema"]

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
            f"{shorten(error.message, 160)} (checked against the meta-schema {meta})."
        )
    return validator_class


def schema_name(raw: Any) -> str:
    """A schema name OpenRouter accepts (``^[a-zA-Z0-9_-]{1,64}$``)."""
    name = _NAME_ALLOWED.sub("_", str(raw or "")).strip("_")[:64]
    return name or "response"


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
