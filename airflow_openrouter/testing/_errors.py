"""The OpenRouter error envelope, shared by every route of the emulator."""

from __future__ import annotations

from typing import Any

# Default messages copied from the examples in the official OpenAPI spec (and the batch supplement),
# so a client that logs ``error.message`` sees what it would see in production.
DEFAULT_MESSAGES: dict[int, str] = {
    400: "Invalid request parameters",
    401: "No auth credentials found",
    402: "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
    403: "The selected provider or model is not allowed.",
    404: "Resource not found",
    408: "Operation timed out. Please try again later.",
    409: "Conflict",
    413: "Request payload too large",
    422: "Invalid argument",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "Service temporarily unavailable",
    504: "Gateway timeout",
    524: "Request timed out. Please try again later.",
    529: "Provider returned error",
}

# Stable ``metadata.error_type`` values (ApiErrorType in the spec) for provider-style errors.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request",
    401: "authentication",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    413: "payload_too_large",
    422: "unprocessable",
    429: "rate_limit_exceeded",
    500: "server",
    502: "provider_unavailable",
    503: "provider_overloaded",
    504: "timeout",
    524: "timeout",
    529: "provider_overloaded",
}


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status, "server" if status >= 500 else "invalid_request")


def error_envelope(status: int, message: str | None = None, metadata: dict[str, Any] | None = None) -> dict:
    """``{"error": {"code", "message", "metadata"?}}`` -- ``code`` is always the HTTP status."""
    error: dict[str, Any] = {"code": status, "message": message or DEFAULT_MESSAGES.get(status, "Error")}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error}


class ApiError(Exception):
    """Raised anywhere in request handling; the app turns it into the error envelope."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.message = message or DEFAULT_MESSAGES.get(status, "Error")
        self.metadata = metadata
        self.headers = headers or {}
        self._body = body  # replaces the envelope for the few responses with a richer shape (batch 402)
        super().__init__(f"{status}: {self.message}")

    def body(self) -> dict:
        return (
            self._body if self._body is not None else error_envelope(self.status, self.message, self.metadata)
        )
