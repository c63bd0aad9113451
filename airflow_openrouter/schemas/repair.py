"""The repair round-trip: ask again, with the errors, until the reply is valid or the attempts run out.

:func:`complete_validated` calls the model through a function it is given (the hook call: no I/O
here), parses each reply with the :class:`~.outputs.OutputSpec`, and sends an invalid reply back with
its errors (:func:`repair_messages`) up to ``max_repair_attempts`` times. A reply with tool calls is
returned as the tool calls (:func:`tool_calls`), unvalidated.

**Logs.** What is logged at WARNING names paths, keywords and generation ids only; the error messages,
which quote the reply, are logged at DEBUG (see :mod:`.replies`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airflow_openrouter.exceptions import OpenRouterOutputValidationError
from airflow_openrouter.schemas.replies import MAX_ERRORS

if TYPE_CHECKING:
    from airflow_openrouter.schemas.outputs import OutputSpec
    from airflow_openrouter.types import ChatCompletion

__all__ = ["ValidatedReply", "complete_validated", "repair_messages", "tool_calls"]

# The logger's name from before the package was split: logging configurations may name it.
log = logging.getLogger("airflow_openrouter.schemas")


class _Logger(Protocol):  # a stdlib logger, or an operator's self.log
    def debug(self, msg: Any, /, *args: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any) -> Any: ...


def repair_messages(reply: str | None, errors: Sequence[str]) -> list[dict[str, Any]]:
    """The two messages that ask the model to correct *reply*: the reply itself, then the errors."""
    listed = "\n".join(f"- {e}" for e in errors[:MAX_ERRORS])
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
