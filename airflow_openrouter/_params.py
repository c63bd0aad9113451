"""The request parameters of a chat completion: one definition of each, with its rule and its doc.

The chat operator, ``@task.openrouter`` and the batch operator take these as arguments and check them in
``__init__``, so that a broken DAG fails to import (the DAG processor shows the error) rather than a task
failing at run time. A value that is known only at run time (an argument of a mapped task fed from
XCom, a rendered template) goes through the same check right after rendering, before any request. The
batch engine checks every request body with :func:`check_request_params` before it submits, so that a
type error never costs a submitted batch.

Every error is an :class:`~airflow_openrouter.exceptions.OpenRouterConfigError` that names where the
value came from (``Task 'summarise'``, ``Item 3 (custom_id 'a')``), the argument and what is allowed.

Rules follow OpenRouter's chat API (``../shared/reference/openrouter-api.md``, section 1.1). Fields
without a rule here (``provider``, ``transforms``, ...) are sent as given. The DAG processor imports this
module on every parse: it imports only the standard library (jsonschema when a schema dict is given).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from airflow_openrouter.exceptions import OpenRouterConfigError

__all__ = [
    "CHAT_ONLY_PARAMS",
    "REQUEST_PARAMS",
    "SHARED_PARAMS",
    "TEMPLATE_EXTENSIONS",
    "RequestParam",
    "check_request_params",
    "check_response_format",
    "config_error",
    "is_resolvable",
]

TEMPLATE_EXTENSIONS: tuple[str, ...] = (".j2", ".jinja2", ".md", ".txt")
"""A prompt string ending in one of these is a template *file name*, as with Airflow's ``template_ext``."""


def is_resolvable(value: Any) -> bool:
    """Whether *value* is an Airflow reference resolved at run time: an ``XComArg``, a mapped task
    group's argument, or ``literal(...)`` (all implement ``ResolveMixin.resolve(context)``)."""
    # Paths have a resolve() too, with another meaning; classes have unbound methods.
    return callable(getattr(value, "resolve", None)) and not isinstance(value, (os.PathLike, type))


def _error(message: str) -> OpenRouterConfigError:
    # Imported when there is an error to raise: the exception tree is not needed to parse a good DAG.
    from airflow_openrouter.exceptions import OpenRouterConfigError

    return OpenRouterConfigError(message)


class RequestParam(NamedTuple):
    """One request body field: what it does, what it accepts and how that is checked."""

    name: str
    #: what is allowed, as the error message says it: ``"a number from 0 to 2"``
    allowed: str
    accepts: Callable[[Any], bool]
    doc: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(low: int, high: int | None = None) -> tuple[str, Callable[[Any], bool]]:
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
    return allowed, lambda v: _is_int(v) and low <= v and (high is None or v <= high)


def _number(low: float, high: float) -> tuple[str, Callable[[Any], bool]]:
    return f"a number from {low} to {high}", lambda v: _is_number(v) and low <= v <= high


def _is_list_of(value: Any, accepts: Callable[[Any], bool]) -> bool:
    return isinstance(value, (list, tuple)) and all(accepts(v) for v in value)


def _is_stop(value: Any) -> bool:
    return isinstance(value, str) or (_is_list_of(value, lambda v: isinstance(v, str)) and len(value) <= 4)


def _is_logit_bias(value: Any) -> bool:
    def token(key: Any) -> bool:
        return _is_int(key) or (isinstance(key, str) and key.isdigit())

    return isinstance(value, Mapping) and all(
        token(k) and _is_number(v) and -100 <= v <= 100 for k, v in value.items()
    )


def _is_tool_choice(value: Any) -> bool:
    return value in ("none", "auto", "required") or isinstance(value, Mapping)


def _is_tool(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("type"), str)


def _is_plugin(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("id"), str)


_SEED = _integer(-(2**63), 2**63 - 1)
_TOKENS = _integer(1)
_PENALTY = _number(-2, 2)
_UNIT = _number(0, 1)

REQUEST_PARAMS: Mapping[str, RequestParam] = {
    p.name: p
    for p in (
        RequestParam("seed", *_SEED, "sample deterministically, where the provider supports it"),
        RequestParam("max_tokens", *_TOKENS, "the most tokens the reply may have"),
        RequestParam("max_completion_tokens", *_TOKENS, "the newer name of max_tokens"),
        RequestParam("temperature", *_number(0, 2), "sampling temperature"),
        RequestParam("top_p", *_UNIT, "nucleus sampling: the probability mass to sample from"),
        RequestParam("top_k", *_integer(0), "sample from the k likeliest tokens (not for OpenAI models)"),
        RequestParam("min_p", *_UNIT, "the least probability of a token, relative to the likeliest"),
        RequestParam("top_a", *_UNIT, "dynamic top-p filtering"),
        RequestParam("frequency_penalty", *_PENALTY, "penalise tokens by how often they appeared"),
        RequestParam("presence_penalty", *_PENALTY, "penalise tokens that appeared at all"),
        RequestParam("repetition_penalty", *_number(0, 2), "penalise repetition (1 leaves it alone)"),
        RequestParam(
            "stop", "a string or a list of at most 4 strings", _is_stop, "stop generating at any of these"
        ),
        RequestParam(
            "logit_bias",
            "a dict of token id to a number from -100 to 100",
            _is_logit_bias,
            "raise or lower the odds of tokens",
        ),
        RequestParam("logprobs", "True or False", lambda v: isinstance(v, bool), "return token log-probs"),
        RequestParam("top_logprobs", *_integer(0, 20), "how many alternatives per token (needs logprobs)"),
        RequestParam(
            "tools", "a list of tool dicts, each with a 'type'", lambda v: _is_list_of(v, _is_tool), "tools"
        ),
        RequestParam(
            "tool_choice",
            "'none', 'auto', 'required' or a dict naming a function",
            _is_tool_choice,
            "whether and which tool the model must call",
        ),
        RequestParam(
            "models",
            "a list of model ids",
            lambda v: _is_list_of(v, lambda m: isinstance(m, str) and bool(m)),
            "fallback models, tried in order when the model is unavailable",
        ),
        RequestParam(
            "reasoning",
            "a dict such as {'effort': 'low'}",
            lambda v: isinstance(v, Mapping),
            "reasoning settings",
        ),
        RequestParam(
            "plugins",
            "a list of plugin dicts, each with an 'id'",
            lambda v: _is_list_of(v, _is_plugin),
            "OpenRouter plugins (web search, file parser, response healing, ...)",
        ),
        RequestParam("user", "a string", lambda v: isinstance(v, str), "a stable id of your end user"),
        RequestParam(
            "extra_body",
            "a dict of request fields",
            lambda v: isinstance(v, Mapping),
            "more request fields, merged into the body as they are",
        ),
    )
}

#: The request arguments of both operators (and the decorator), in the order their docstrings list them.
SHARED_PARAMS: tuple[str, ...] = (
    "seed",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "reasoning",
    "user",
    "extra_body",
)
#: The request arguments only the chat operator takes (a batch returns rows, not tool calls or logprobs).
CHAT_ONLY_PARAMS: tuple[str, ...] = (
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "models",
    "plugins",
)


def config_error(where: str, name: str, allowed: str, value: Any) -> OpenRouterConfigError:
    """``Task 't': temperature must be a number from 0 to 2, got 3.5.``"""
    return _error(f"{where}: {name} must be {allowed}, got {_shown(value)}.")


def check_request_params(params: Mapping[str, Any], *, where: str) -> None:
    """Check the request body fields in *params* against their rules; raise on the first bad one.

    *params* is a request body or part of one (operator arguments, a batch line's ``body``): fields
    without a rule are left alone, ``None`` means "not set", and the fields of an ``extra_body`` are
    checked as the body fields they become.

    :param where: what the error names first, e.g. ``"Task 'summarise'"`` or ``"Item 3 (custom_id 'a')"``.
    :raises OpenRouterConfigError: naming *where*, the field, what it allows and the value it got.
    """
    extra = params.get("extra_body")
    _check_fields(params, where, "{}")
    if isinstance(extra, Mapping):
        _check_fields(extra, where, "extra_body[{!r}]")
    merged = {**params, **(extra if isinstance(extra, Mapping) else {})}
    if merged.get("top_logprobs") is not None and merged.get("logprobs") is not True:
        raise _error(f"{where}: top_logprobs needs logprobs=True (got logprobs={merged.get('logprobs')!r}).")


def _check_fields(fields: Mapping[str, Any], where: str, label: str) -> None:
    for name, value in fields.items():
        param = REQUEST_PARAMS.get(name)
        if param is None or value is None:
            continue
        if is_resolvable(value):
            raise _error(
                f"{where}: {label.format(name)} is not a templated argument, so it cannot take an upstream "
                f"value ({type(value).__name__}). Pass the value itself, or map over upstream values with "
                f".partial(...).expand({name}=upstream.output)."
            )
        if not param.accepts(value):
            raise config_error(where, label.format(name), param.allowed, value)


def check_response_format(value: Any, *, where: str) -> None:
    """Check an operator's ``response_format``: a pydantic model class, a valid JSON Schema dict,
    ``"json_object"``, ``"text"`` or ``None``.

    A dict is checked against the JSON Schema meta-schema of its ``$schema`` (2020-12 by default); the
    error names the failing place in the schema. jsonschema and pydantic are imported only when such a
    value is given.

    :raises OpenRouterConfigError: naming *where* and what is wrong.
    """
    if value is None or value in ("text", "json_object"):
        return
    allowed = "a pydantic model class, a JSON Schema dict, 'json_object', 'text' or None"
    json_schema_of = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(json_schema_of):
        try:
            json_schema_of()
        except Exception as exc:  # pydantic raises several types for types it cannot describe
            raise _error(
                f"{where}: response_format {value.__name__} has no JSON Schema ({type(exc).__name__}: "
                f"{_shortened(str(exc))}). Use field types that pydantic can describe as JSON Schema."
            ) from None
        return
    if callable(json_schema_of):  # a pydantic instance
        name = type(value).__name__
        raise _error(
            f"{where}: response_format takes the model class, not an instance of it: pass "
            f"response_format={name}, not {name}(...)."
        )
    if isinstance(value, Mapping):
        from airflow_openrouter.schemas import check_json_schema

        check_json_schema(value, where=where)
        return
    if is_resolvable(value):
        raise _error(
            f"{where}: response_format is not a templated argument, so it cannot take an upstream value "
            f"({type(value).__name__}); pass {allowed}."
        )
    raise config_error(where, "response_format", allowed, value)


def _shown(value: Any) -> str:
    if _is_number(value):
        return repr(value)
    return f"{_shortened(repr(value))} ({type(value).__name__})"


def _shortened(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
