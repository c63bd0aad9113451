"""The provider's errors: one hierarchy, mapped from HTTP status and OpenRouter error codes.

::

    OpenRouterError                         anything this provider raises on purpose
    ├── OpenRouterConnectionError           the request never got an answer (DNS, refused, reset)
    │   └── OpenRouterTimeoutError          connect or read timeout
    ├── OpenRouterAPIError                  OpenRouter answered with an error
    │   ├── OpenRouterBadRequestError       400, 413, 422: change the request
    │   ├── OpenRouterAuthenticationError   401: fix the API key on the connection
    │   ├── OpenRouterPaymentRequiredError  402: add credits
    │   ├── OpenRouterPermissionDeniedError 403: moderation, guardrail or account policy
    │   ├── OpenRouterNotFoundError         404: unknown model, batch or generation
    │   ├── OpenRouterConflictError         409: e.g. deleting a batch that still runs
    │   ├── OpenRouterRateLimitError        429
    │   └── OpenRouterServerError           408, 5xx, 524, 529, and errors reported inside a 200
    ├── OpenRouterOutputValidationError     the model's reply did not match the requested schema
    └── PromptRenderError                   a prompt template failed to load or render (prompts.py)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.exceptions import AirflowException


class OpenRouterError(AirflowException):
    """Base class of every error this provider raises on purpose."""


class OpenRouterConnectionError(OpenRouterError):
    """No answer came back: the connection failed, was reset, or timed out.

    :param request_sent: ``False`` when the failure happened before the request left this machine
        (connect errors), which makes even a non-idempotent call safe to retry.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class OpenRouterTimeoutError(OpenRouterConnectionError):
    """A connect or read timeout passed (see the connection's ``timeout`` / ``connect_timeout``)."""


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


class OpenRouterConflictError(OpenRouterAPIError):
    """409: the resource is in a state that forbids the operation."""


class OpenRouterRateLimitError(OpenRouterAPIError):
    """429: rate limited by OpenRouter or by the upstream provider."""


class OpenRouterServerError(OpenRouterAPIError):
    """408, 5xx, 524, 529, or a provider error reported inside a 200 response or a stream."""


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
