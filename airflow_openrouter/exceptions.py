"""The provider's errors: one hierarchy, mapped from HTTP status and OpenRouter error codes.

::

    OpenRouterError                         anything this provider raises on purpose
    ├── OpenRouterConnectionError           the request never got an answer (DNS, refused, reset)
    │   └── OpenRouterTimeoutError          connect or read timeout
    ├── OpenRouterAPIError                  OpenRouter answered with an error
    │   ├── OpenRouterBadRequestError       400, 413, 422: change the request
    │   ├── OpenRouterAuthenticationError   401: fix the API key on the connection
    │   │   └── OpenRouterMissingKeyError   no API key at all (also an OpenRouterConfigError)
    │   ├── OpenRouterPaymentRequiredError  402: add credits
    │   ├── OpenRouterPermissionDeniedError 403: moderation, guardrail or account policy
    │   ├── OpenRouterNotFoundError         404: unknown model, batch or generation
    │   ├── OpenRouterConflictError         409: e.g. deleting a batch that still runs
    │   ├── OpenRouterRateLimitError        429
    │   └── OpenRouterServerError           408, 5xx, 524, 529, and errors reported inside a 200
    │       └── OpenRouterPaginationError   results pages that do not add up (a repeated cursor, ...)
    ├── OpenRouterOutputValidationError     the model's reply did not match the requested schema
    ├── OpenRouterConfigError               a bad argument, connection field or setting (also a ValueError;
    │                                       permanent: fails a task without retries)
    ├── PromptRenderError                   a prompt template failed to load or render
    ├── BatchInputError                     a bulk item cannot be turned into a request
    ├── CostCapReached                      a bulk item was not started: max_cost_usd was reached
    └── OpenRouterCostLimitError            a run's estimated cost exceeds max_cost_usd: nothing was sent

Every error says whether it is ``transient``: whether the same call may succeed if tried again later
(connection failures, timeouts, 408, 429, 5xx). The hook's retry policy, the batch watch and the bulk
engines all read that one attribute instead of deciding again. Whether the *hook* retries is a policy
on top of it (see ``RetryPolicy``): a transient failure of a request that was sent and may have been
billed (a chat completion that timed out) is left to the task's retries.

Two errors are permanent by their class, wherever they are raised: :class:`OpenRouterConfigError` and
:class:`OpenRouterCostLimitError` are also Airflow's ``AirflowFailException``, so a task (any operator,
the sensor, or your own ``@task`` using the hook) fails without retries: a retry would fail the same way
until the DAG, the connection or the setting is fixed. Whether an API error is permanent depends on
where it happens (one bulk item, or every item); the bulk engines decide that
(:func:`airflow_openrouter.batch.failures.as_permanent`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from airflow.exceptions import AirflowException

from airflow_openrouter._compat import AirflowFailException

__all__ = [
    "TRANSIENT_STATUSES",
    "BatchInputError",
    "CostCapReached",
    "OpenRouterAPIError",
    "OpenRouterAuthenticationError",
    "OpenRouterBadRequestError",
    "OpenRouterConfigError",
    "OpenRouterConflictError",
    "OpenRouterConnectionError",
    "OpenRouterConnectionLookupError",
    "OpenRouterCostLimitError",
    "OpenRouterError",
    "OpenRouterMissingKeyError",
    "OpenRouterNotFoundError",
    "OpenRouterOutputValidationError",
    "OpenRouterPaginationError",
    "OpenRouterPaymentRequiredError",
    "OpenRouterPermissionDeniedError",
    "OpenRouterRateLimitError",
    "OpenRouterServerError",
    "OpenRouterTimeoutError",
    "PromptRenderError",
]

#: HTTP statuses (and in-band error codes) after which the same request may succeed later.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 524, 529})


class OpenRouterError(AirflowException):
    """Base class of every error this provider raises on purpose.

    :attr transient: whether trying the same thing again later may succeed. ``False`` unless a
        subclass says otherwise.
    :attr systemic: whether, in a bulk job, the same error will come back for every other request
        (same key, same model), so that starting more of them only repeats it. ``False`` unless an
        API error says otherwise.
    """

    transient: bool = False
    systemic: bool = False


class OpenRouterConnectionError(OpenRouterError):
    """No answer came back: the connection failed, was reset, or timed out.

    :param request_sent: ``False`` when the failure happened before the request left this machine
        (connect errors), which makes even a non-idempotent call safe to retry.
    """

    transient = True

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class OpenRouterTimeoutError(OpenRouterConnectionError):
    """A connect, read or idle timeout passed, or the attempt's ``request_deadline`` (see the
    connection's ``timeout`` / ``connect_timeout`` / ``request_deadline``)."""


class OpenRouterAPIError(OpenRouterError):
    """OpenRouter answered with an error.

    :param status: HTTP status, or the in-band error code of a 200 response or an SSE chunk.
    :param code: OpenRouter's ``error.code`` (usually equal to ``status``).
    :param metadata: ``error.metadata``: moderation ``reasons``, ``provider_name``, ``error_type``, ...
    :param generation_id: the generation the error belongs to, when known.
    :param retry_after: seconds the server asked us to wait, when it said so.
    :param billed: output had been generated (and charged) before the error; never retried automatically.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        generation_id: str | None = None,
        retry_after: float | None = None,
        billed: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.generation_id = generation_id
        self.retry_after = retry_after
        self.billed = billed

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status in TRANSIENT_STATUSES

    @property
    def systemic(self) -> bool:  # type: ignore[override]
        """401 and 402 (the key, the credits), 403 for the key or account policy (not the moderation of
        one input), 404 (no such model, or no endpoint can serve the request's parameters) and a 400
        that names the model as invalid: every request of a bulk job would get the same answer."""
        if self.status in (401, 402, 404):
            return True
        if self.status == 403:
            return not (self.metadata.get("reasons") or self.metadata.get("flagged_input"))
        text = self.message.lower()
        return self.status == 400 and ("valid model" in text or "unknown model" in text)

    @property
    def provider_name(self) -> str | None:
        return self.metadata.get("provider_name")

    def with_message(self, message: str) -> OpenRouterAPIError:
        """The same error (class, status, code, metadata) with a message that says what to do here."""
        return type(self)(
            message,
            status=self.status,
            code=self.code,
            metadata=self.metadata,
            generation_id=self.generation_id,
            retry_after=self.retry_after,
            billed=self.billed,
        )


class OpenRouterBadRequestError(OpenRouterAPIError):
    """400, 413 or 422: the request is invalid; retrying it unchanged will fail again."""


class OpenRouterAuthenticationError(OpenRouterAPIError):
    """401: the API key is missing, wrong or disabled."""


class OpenRouterPaymentRequiredError(OpenRouterAPIError):
    """402: the account or the key has run out of credits."""


class OpenRouterPermissionDeniedError(OpenRouterAPIError):
    """403: moderation flagged the input, a guardrail blocked it, or account policy forbids it."""

    @property
    def reasons(self) -> list[str]:
        return list(self.metadata.get("reasons") or [])


class OpenRouterNotFoundError(OpenRouterAPIError):
    """404: no such model, endpoint, batch or generation."""

    # AirflowException says 500 for every error; common-ai tells a vanished batch by status_code 404.
    status_code = HTTPStatus.NOT_FOUND


class OpenRouterConflictError(OpenRouterAPIError):
    """409: the resource is in a state that forbids the operation."""


class OpenRouterRateLimitError(OpenRouterAPIError):
    """429: rate limited by OpenRouter or by the upstream provider."""


class OpenRouterServerError(OpenRouterAPIError):
    """408, 5xx, 524, 529, or a provider error reported inside a 200 response or a stream."""


class OpenRouterPaginationError(OpenRouterServerError):
    """The pages of a batch's results do not add up: a cursor came back again, ``has_more`` came without
    a cursor, or more rows arrived than the batch has. Nothing is billed by fetching results, so trying
    again later is safe."""

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return True


class OpenRouterOutputValidationError(OpenRouterError):
    """The model's reply did not validate against the requested schema, even after repair attempts.

    ``str()`` is *message* alone, which never quotes the model's output (it ends up in task logs):
    the raiser lists error paths and keywords there. The details are attributes, for code.

    :param errors: one readable line per validation error (``path: message``); messages may quote
        values from the reply.
    :param raw_output: the last reply as received, kept whole.
    """

    def __init__(
        self,
        message: str,
        *,
        errors: Sequence[str] = (),
        raw_output: str | None = None,
        attempts: int = 1,
        generation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.errors = list(errors)
        self.raw_output = raw_output
        self.attempts = attempts
        self.generation_id = generation_id


class PromptRenderError(OpenRouterError):
    """A prompt template could not be loaded or rendered.

    :param problem: what went wrong, e.g. ``'doc' is undefined``.
    :param template_name: the template file name, or ``"inline prompt"`` (``"inline system_prompt"``, ...).
    :param lineno: the line of the template where it went wrong, when known.
    :param variable: the undefined variable, when that is the problem.
    :param context: where the caller was, e.g. ``"item 17"``; see :meth:`with_context`.
    """

    def __init__(
        self,
        problem: str,
        *,
        template_name: str,
        lineno: int | None = None,
        variable: str | None = None,
        context: str | None = None,
    ) -> None:
        self.problem = problem
        self.template_name = template_name
        self.lineno = lineno
        self.variable = variable
        self.context = context
        where = f"prompt template {template_name!r}" + (f", line {lineno}" if lineno else "")
        prefix = f"{context}: " if context else ""
        hint = (
            f" Define {variable!r} in prompt_vars or use a task context variable; upstream values can be"
            " passed as prompt_vars={'name': some_task.output}."
            if variable
            else ""
        )
        super().__init__(f"{prefix}Cannot render {where}: {problem}.{hint}")

    def with_context(self, context: str) -> PromptRenderError:
        """The same error, prefixed with where the caller was (for example the batch item index)."""
        error = PromptRenderError(
            self.problem,
            template_name=self.template_name,
            lineno=self.lineno,
            variable=self.variable,
            context=context,
        )
        error.__cause__ = self.__cause__
        return error


class BatchInputError(OpenRouterError):
    """An item cannot be turned into a request; the message names the item's index."""


class CostCapReached(OpenRouterError):
    """The item was not started: the billed cost had reached ``max_cost_usd``."""

    def __init__(self, spent_usd: float, max_cost_usd: float) -> None:
        super().__init__(
            f"Not started: the billed cost (${spent_usd:.4f}) reached max_cost_usd (${max_cost_usd:.4f}). "
            "Raise max_cost_usd and retry the task to run the rest; items already done are skipped."
        )
        self.spent_usd = spent_usd
        self.max_cost_usd = max_cost_usd


class OpenRouterCostLimitError(OpenRouterError, AirflowFailException):
    """The estimated cost of a run (its upper bound, plus what earlier tries of the task run were billed)
    exceeds ``max_cost_usd``, or cannot be known: nothing was sent. Permanent (the task fails without
    retries: a retry would estimate the same); the message shows the estimate, the cap and the largest
    contributors.

    :param estimate_usd: the upper bound, or ``None`` when it cannot be known.
    :param contributors: the largest parts of the estimate, as the message lists them.
    """

    def __init__(
        self,
        message: str,
        *,
        estimate_usd: float | None,
        max_cost_usd: float,
        contributors: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.estimate_usd = estimate_usd
        self.max_cost_usd = max_cost_usd
        self.contributors = list(contributors)


class OpenRouterConfigError(OpenRouterError, AirflowFailException, ValueError):
    """An argument, connection field or setting is invalid: the message names it, the task and what is
    allowed. Raised before anything is sent (at DAG parse time for static arguments).

    Permanent: found only when a task runs (a connection without a key, a value rendered from a
    template, a setting of the worker), it fails the task without retries (it is an
    ``AirflowFailException``), because a retry would fail the same way until the cause is fixed."""


class OpenRouterConnectionLookupError(OpenRouterError):
    """Airflow reported the connection as missing while a secrets backend is configured. Airflow reports
    a backend that could not answer (a timeout, a throttled vault) the same way, so this is transient:
    a retry looks again. Without a secrets backend, a missing connection is an
    :class:`OpenRouterConfigError` (permanent)."""

    transient = True


class OpenRouterMissingKeyError(OpenRouterAuthenticationError, OpenRouterConfigError):
    """No API key at all: the connection has none (or does not exist, for the default connection id)
    and ``OPENROUTER_API_KEY`` is not set. Nothing was sent. An authentication error (``except
    OpenRouterAuthenticationError`` catches it, as it catches a 401) that is also a configuration error,
    and so permanent."""
