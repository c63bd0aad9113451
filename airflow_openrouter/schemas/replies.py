"""Reading a reply: the JSON in it, and the problems that make it invalid, fit for logs.

:func:`extract_json` tolerates what models wrap JSON in: a Markdown code fence, prose around one
object. A reason a reply is invalid is a :class:`Problem`: its JSON path, the rule that failed and a
readable message.

**Logs.** Validation messages quote values from the reply, and the reply is user data (see the design's
"secrets stay secret"): :attr:`Problem.summary` and :func:`summarise` -- what is logged at WARNING and
above, and ``str()`` of :class:`~airflow_openrouter.exceptions.OpenRouterOutputValidationError` -- name
only the error paths, the failed keywords and counts. :attr:`Problem.line`, with the message, is sent
back to the model for repair and kept on the exception's ``errors``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["MAX_ERRORS", "Problem", "extract_json", "json_path", "json_type", "shorten", "summarise"]

#: Problems kept on an error (and sent back to the model), at most.
MAX_ERRORS = 20
#: Problems named in a summary, at most.
MAX_SUMMARISED = 10


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
    listed = "; ".join(p.summary for p in problems[:MAX_SUMMARISED])
    more = f"; and {len(problems) - MAX_SUMMARISED} more" if len(problems) > MAX_SUMMARISED else ""
    return f"{len(problems)} error(s): {listed}{more}"


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


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def shorten(message: str, limit: int = 200) -> str:
    # jsonschema messages quote the offending value, which can be a whole document.
    return message if len(message) <= limit else f"{message[: limit - 1]}…"
