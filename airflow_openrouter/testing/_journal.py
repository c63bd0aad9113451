"""Every request the emulator receives, for tests to assert on.

Besides method, path, query, headers and the parsed JSON body, a recorded request says who sent it:
``attribution`` is the ``user``, ``session_id`` (the body's, else the ``x-session-id`` header's) and
``metadata`` of a chat or embeddings request, and ``item_attributions`` the same for each request body of
a batch submission, keyed by ``custom_id``. Both show what was *sent*, valid or not.

The journal keeps headers as received, so a test can check which key was sent
(``headers["authorization"]``), but never *shows* a credential: the ``repr`` of a recorded request and
of its headers prints ``Authorization`` as ``Bearer sk-or-v1-abc...xyz`` (the masked label OpenRouter
itself shows), so a failing assertion that prints the journal does not print the key.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._account import key_label
from ._attribution import SESSION_HEADER, Attribution
from ._routes import relative_route, route_matches

# Header values that carry a credential (lower-case names).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})


def redact_header(name: str, value: str) -> str:
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, _, credential = value.partition(" ")
    if credential:
        return f"{scheme} {key_label(credential.strip())}"
    return key_label(value)


class Headers(dict[str, str]):
    """A plain dict of the request headers whose ``repr`` masks credentials."""

    def __repr__(self) -> str:
        return repr({name: redact_header(name, value) for name, value in self.items()})

    __str__ = __repr__


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as received, e.g. "/api/v1/chat/completions"
    query: dict[str, list[str] | str]  # single values unwrapped, repeated keys (?status=a&status=b) as lists
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body is empty or not JSON
    at: float  # emulator clock time of arrival
    route: str = field(init=False)  # path relative to /api/v1 (the beta prefix folds into it too)

    def __post_init__(self) -> None:
        object.__setattr__(self, "route", relative_route(self.path))
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))

    @property
    def attribution(self) -> Attribution:
        """The attribution fields of a chat or embeddings body (all ``None`` when absent)."""
        return _attribution_of(self.body, self.headers.get(SESSION_HEADER))

    @property
    def item_attributions(self) -> dict[str, Attribution]:
        """For a batch submission: each request body's attribution, by ``custom_id``."""
        requests = self.body.get("requests") if isinstance(self.body, dict) else None
        return {
            str(item.get("custom_id")): _attribution_of(item.get("body"), None)
            for item in requests or ()
            if isinstance(item, dict)
        }

    def __repr__(self) -> str:
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, query={self.query!r}, "
            f"headers={self.headers!r}, body={self.body!r}, at={self.at!r})"
        )

    __str__ = __repr__


def _attribution_of(body: Any, session_header: str | None) -> Attribution:
    if not isinstance(body, dict):
        return Attribution(session_id=session_header)
    session = body.get("session_id")
    return Attribution(
        user=body.get("user"),
        session_id=session if session is not None else session_header,
        metadata=body.get("metadata"),
    )


class Journal:
    def __init__(self, on_read: Callable[[], None] | None = None) -> None:
        """``on_read`` is called before every read (it collects what worker processes recorded)."""
        self._lock = threading.Lock()
        self._entries: list[RecordedRequest] = []
        self._on_read = on_read or (lambda: None)

    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def record_elsewhere(self, entry: RecordedRequest) -> None:
        """An entry a worker process recorded: placed by arrival time among the others."""
        with self._lock:
            bisect.insort(self._entries, entry, key=lambda e: e.at)

    def snapshot(self) -> list[RecordedRequest]:
        self._on_read()
        with self._lock:
            return list(self._entries)

    def matching(self, pattern: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.snapshot()
            if route_matches(pattern, r.route) and (method is None or r.method == method.upper())
        ]

    def clear(self) -> None:
        self._on_read()  # what workers sent before the clear goes with it
        with self._lock:
            self._entries.clear()
