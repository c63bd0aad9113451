"""From what went wrong on the wire to the typed error of :mod:`airflow_openrouter.exceptions`, with advice.

* An error answer (non-2xx, or an ``error`` object inside a 200 body or an SSE chunk) keeps OpenRouter's
  status, code, message and metadata; the class comes from the status, the advice from the class.
* A request that got no answer becomes :class:`OpenRouterConnectionError` / :class:`OpenRouterTimeoutError`,
  saying whether the request had been sent, which limit passed and which connection field raises it.
  For a billed call (a non-streamed chat completion) it also says that the generation may have been
  billed, which is why the hook does not send it again.
* Every text this provider did not write is redacted (``ClientSettings.redact``) before it is quoted.

Both clients come here: answers as :class:`Answer`, failures as httpx's exceptions (the async client
translates aiohttp's into them), so a failure means the same whichever client met it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from airflow_openrouter._text import excerpt, join_sentences
from airflow_openrouter._transport.retry import retry_after_seconds
from airflow_openrouter._transport.wire import Answer
from airflow_openrouter.exceptions import (
    OpenRouterAPIError,
    OpenRouterAuthenticationError,
    OpenRouterBadRequestError,
    OpenRouterConflictError,
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterNotFoundError,
    OpenRouterPaymentRequiredError,
    OpenRouterPermissionDeniedError,
    OpenRouterRateLimitError,
    OpenRouterServerError,
    OpenRouterTimeoutError,
)

if TYPE_CHECKING:
    from airflow_openrouter._transport.calls import Call
    from airflow_openrouter._transport.settings import ClientSettings
    from airflow_openrouter._transport.sockets import Deadline

_ERROR_CLASSES: dict[int, type[OpenRouterAPIError]] = {
    400: OpenRouterBadRequestError,
    401: OpenRouterAuthenticationError,
    402: OpenRouterPaymentRequiredError,
    403: OpenRouterPermissionDeniedError,
    404: OpenRouterNotFoundError,
    409: OpenRouterConflictError,
    413: OpenRouterBadRequestError,
    422: OpenRouterBadRequestError,
    429: OpenRouterRateLimitError,
}


def api_error(
    status: int | None,
    message: str,
    *,
    conn_id: str,
    code: int | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    generation_id: str | None = None,
    retry_after: float | None = None,
    billed: bool = False,
) -> OpenRouterAPIError:
    """The typed error for an OpenRouter error, with a message that says what to change."""
    kind = status if isinstance(status, int) else (code if isinstance(code, int) else None)
    if kind in _ERROR_CLASSES:
        cls = _ERROR_CLASSES[kind]
    elif kind is None or kind == 408 or kind >= 500:
        cls = OpenRouterServerError
    else:
        cls = OpenRouterAPIError
    metadata = dict(metadata or {})
    where = f" (provider {metadata['provider_name']})" if metadata.get("provider_name") else ""
    text = join_sentences(
        f"OpenRouter error {kind or '?'}{where}: {message.strip() or 'no message'}",
        _advice(cls, conn_id, metadata),
    )
    if generation_id:
        text += f" [generation {generation_id}]"
    return cls(
        text,
        status=status,
        code=code,
        metadata=metadata,
        generation_id=generation_id,
        retry_after=retry_after,
        billed=billed,
    )


def _advice(cls: type[OpenRouterAPIError], conn_id: str, metadata: Mapping[str, Any]) -> str | None:
    if cls is OpenRouterAuthenticationError:
        return (
            f"Check the API key in the password (API Key) field of connection {conn_id!r}, "
            "or OPENROUTER_API_KEY when the connection has none"
        )
    if cls is OpenRouterPaymentRequiredError:
        return "Add credits at https://openrouter.ai/settings/credits or raise the key's limit"
    if cls is OpenRouterPermissionDeniedError and metadata.get("reasons"):
        return f"Flagged for: {', '.join(map(str, metadata['reasons']))}"
    return None


def error_from_response(response: Answer, settings: ClientSettings) -> OpenRouterAPIError:
    """Map a non-2xx answer to the typed error, keeping OpenRouter's code, message and metadata."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code, metadata = error.get("code"), error.get("metadata")
    else:
        message, code, metadata = excerpt(response.text), None, None
    return api_error(
        response.status_code,
        settings.redact(message),
        conn_id=settings.conn_id,
        code=code,
        metadata=metadata if isinstance(metadata, dict) else None,
        generation_id=response.headers.get("x-generation-id"),
        retry_after=retry_after_seconds(response.headers),
    )


def in_band_error(
    error: Mapping[str, Any], conn_id: str, generation_id: str | None, *, billed: bool = False
) -> OpenRouterAPIError:
    """The typed error for an ``error`` object inside a 200 body or an SSE chunk.

    ``billed``: output was already generated (and charged) before the error, so a retry would pay again.
    """
    code = error.get("code")
    status = code if isinstance(code, int) else 502
    return api_error(
        status,
        str(error.get("message") or ""),
        conn_id=conn_id,
        code=code,
        metadata=error.get("metadata") if isinstance(error.get("metadata"), dict) else None,
        generation_id=generation_id,
        billed=billed,
    )


def error_from_transport(
    exc: httpx.TransportError, call: Call[Any], settings: ClientSettings, deadline: Deadline | None = None
) -> OpenRouterConnectionError:
    """The error for a request that got no (complete) answer."""
    target = f"{call.method} {settings.base_url}{call.path}"
    conn = settings.conn_id
    # Connect failures happen before a byte of the request is sent: safe to retry even a batch creation.
    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    # A billed call sent without an answer is not sent again (RetryPolicy): say why, and what helps.
    billing = (
        "Not sent again: the request was sent, so the generation may have run and been billed "
        "(a second request could pay twice)"
        if sent and call.billed
        else None
    )
    idle = "With stream=True the timeout is an idle timeout between chunks instead" if billing else None
    if deadline is not None and deadline.expired():
        part = "the stream" if call.stream else "the answer"
        return OpenRouterTimeoutError(
            join_sentences(
                f"{target} was cut at the request deadline ({deadline.seconds:g} s) while {part} was still "
                "arriving",
                f"Raise 'request_deadline' on connection {conn!r} if the model needs longer",
                billing,
            ),
            request_sent=sent,
        )
    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, httpx.ConnectTimeout):
            which, limit, setting = "connect", settings.connect_timeout, "connect_timeout"
        elif isinstance(exc, httpx.PoolTimeout):
            which, limit, setting = "connection pool", settings.timeout, "timeout"
        else:
            which = "write" if isinstance(exc, httpx.WriteTimeout) else "read"
            limit, setting = settings.timeout, "timeout"
        return OpenRouterTimeoutError(
            join_sentences(
                f"{target} hit the {which} timeout ({limit:g} s)",
                f"Raise {setting!r} on connection {conn!r} if the model needs longer",
                billing,
                idle,
            ),
            request_sent=sent,
        )
    detail = settings.redact(str(exc)) or "connection closed"
    return OpenRouterConnectionError(
        join_sentences(f"{target} failed: {type(exc).__name__}: {detail}", billing), request_sent=sent
    )


def decoded_body(response: Answer, settings: ClientSettings) -> Any:
    """The JSON body of a 2xx answer; an ``error`` inside it raises the typed error."""
    try:
        data = response.json()
    except ValueError:
        # Typically an HTML page from a proxy or gateway in front of the API.
        raise OpenRouterServerError(
            f"OpenRouter answered {response.status_code} but not with JSON "
            f"({response.headers.get('content-type', 'no content type')}): "
            f"{settings.redact(excerpt(response.text))}",
            status=response.status_code,
            generation_id=response.headers.get("x-generation-id"),
        ) from None
    # A batch object also has an "error" field (why it failed) next to its "status": that is data.
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and "status" not in data:
        generation_id = data.get("id") or response.headers.get("x-generation-id")
        raise in_band_error(data["error"], settings.conn_id, generation_id)
    return data


def unexpected_shape(
    call: Call[Any], status: int, exc: Exception, settings: ClientSettings
) -> OpenRouterError:
    """An answer that decoded but is not what the endpoint returns."""
    return OpenRouterServerError(
        f"OpenRouter's answer to {call.method} {call.path} has an unexpected shape "
        f"({type(exc).__name__}: {settings.redact(excerpt(str(exc)))})",
        status=status,
    )
