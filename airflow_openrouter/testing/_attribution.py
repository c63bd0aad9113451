"""Request attribution: ``user``, ``session_id`` and ``metadata`` of chat and embeddings requests.

The limits are the ones the official SDK's ``ChatRequest`` documents, checked before anything is billed
(400 in the usual error envelope, naming the field): ``metadata`` is at most 16 pairs of strings, keys of
at most 64 characters, values of at most 512; ``session_id`` is at most 256 characters, and a body value
wins over the ``x-session-id`` header. ``user`` is any string (OpenRouter hashes it before a provider
sees it). ``GET /generation`` returns ``user`` as ``external_user`` and ``session_id`` as ``session_id``;
it has no metadata field (the official ``GenerationResponse`` has none), so metadata is visible only in
the journal (``RecordedRequest.attribution``).

In a Batch API submission the request bodies follow the sync shape, so these fields pass the same
checks there (a body past the limits fails the whole batch after validation, like any invalid body),
but batch generations are not grouped by ``session_id``; a top-level ``metadata`` on the submission is
not a Batch API field and is dropped silently, like any unknown submission field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._errors import ApiError

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_SESSION_ID_CHARS = 256
SESSION_HEADER = "x-session-id"


@dataclass(frozen=True)
class Attribution:
    user: str | None = None
    session_id: str | None = None
    metadata: dict[str, str] | None = None

    def with_session_header(self, headers: Mapping[str, str]) -> Attribution:
        """The body's ``session_id``, else the ``x-session-id`` header's (checked the same way)."""
        if self.session_id is not None or SESSION_HEADER not in headers:
            return self
        return replace(self, session_id=_session_id(headers[SESSION_HEADER], f"the {SESSION_HEADER} header"))


def parse_attribution(body: Mapping[str, Any]) -> Attribution:
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, "user must be a string")
    session = body.get("session_id")
    return Attribution(
        user=user,
        session_id=None if session is None else _session_id(session, "session_id"),
        metadata=_metadata(body.get("metadata")),
    )


def _session_id(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    if len(value) > MAX_SESSION_ID_CHARS:
        raise ApiError(400, f"{name} must be at most {MAX_SESSION_ID_CHARS} characters (got {len(value)}).")
    return value


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, "metadata must be an object of string keys and string values")
    if len(value) > MAX_METADATA_PAIRS:
        raise ApiError(
            400,
            f"metadata: too many properties. Expected at most {MAX_METADATA_PAIRS} key-value pairs, "
            f"got {len(value)}.",
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise ApiError(
                400,
                f"metadata: key '{key[:20]}...' is {len(key)} characters; keys may have at most "
                f"{MAX_METADATA_KEY_CHARS}.",
            )
        if not isinstance(item, str):
            raise ApiError(400, f"metadata.{key} must be a string (got {type(item).__name__}).")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ApiError(
                400,
                f"metadata.{key} is {len(item)} characters; values may have at most "
                f"{MAX_METADATA_VALUE_CHARS}.",
            )
    return dict(value)
