"""Every request the emulator receives, for tests to assert on."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ._routes import relative_route, route_matches


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


class Journal:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[RecordedRequest] = []

    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._entries)

    def matching(self, pattern: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.snapshot()
            if route_matches(pattern, r.route) and (method is None or r.method == method.upper())
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
