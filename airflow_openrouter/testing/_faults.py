"""Queued fault injections, consumed in order and safe to add from any thread.

Three families:

* HTTP faults (``fail``, ``drop``, ``drop_answer``, ``error_body``, ``non_json``) apply to any route:
  each request takes the *oldest* queued HTTP fault whose route pattern (see ``_routes``) and method
  match it. ``drop`` closes the connection before the handler runs (nothing happens); ``drop_answer``
  runs the handler (a batch is created, a completion billed) and then drops its answer.
* Chat faults (``cut_stream``, ``stream_error``, ``invalid_output``) are taken only by chat requests
  they can affect: streaming requests for the stream faults, ``json_schema`` requests for
  ``invalid_output``.
* Batch faults shape the *next created batch* (``BatchPlan``); each ``*_next`` call queues one
  plan field, and the next ``POST /batches`` that passes validation consumes all queued fields.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from ._routes import route_matches
from ._shared import SharedCells

HttpFaultKind = Literal["fail", "drop", "drop_answer", "error_body", "non_json"]
ChatFaultKind = Literal["cut_stream", "stream_error", "invalid_output"]
BatchOutcome = Literal["failed", "expired", "cancelled"]


@dataclass
class HttpFault:
    kind: HttpFaultKind
    route: str
    method: str | None
    remaining: int
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, route: str, method: str) -> bool:
        return route_matches(self.route, route) and (self.method is None or self.method.upper() == method)


@dataclass
class ChatFault:
    kind: ChatFaultKind
    remaining: int
    after_tokens: int = 0
    status: int = 502


@dataclass
class BatchPlan:
    """How the next created batch misbehaves (all fields optional)."""

    outcome: BatchOutcome | None = None
    reason: str | None = None
    item_error_fraction: float = 0.0
    item_error_ids: frozenset[str] = frozenset()
    item_error_type: str = "provider_unavailable"
    invalid_output_ids: frozenset[str] = frozenset()
    not_found_for: float = 0.0


class FaultBook:
    def __init__(self, cells: SharedCells | None = None) -> None:
        """``cells``: where the number of queued HTTP and chat faults is published for worker
        processes (which hand every request to the main process while any is queued)."""
        self._lock = threading.Lock()
        self._http: list[HttpFault] = []
        self._chat: list[ChatFault] = []
        self._batch = BatchPlan()
        self._cells = cells if cells is not None else SharedCells()
        self._cells.faults_pending = 0

    def _published(self) -> None:
        self._cells.faults_pending = len(self._http) + len(self._chat)

    def add_http(self, fault: HttpFault) -> None:
        _check_times(fault.remaining)
        with self._lock:
            self._http.append(fault)
            self._published()

    def add_chat(self, fault: ChatFault) -> None:
        _check_times(fault.remaining)
        with self._lock:
            self._chat.append(fault)
            self._published()

    def plan_batch(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._batch, name, value)

    def take_http(self, route: str, method: str) -> HttpFault | None:
        with self._lock:
            fault = _consume(self._http, lambda f: f.matches(route, method))
            self._published()
            return fault

    def take_chat(self, *, streaming: bool, json_schema: bool) -> ChatFault | None:
        def applies(fault: ChatFault) -> bool:
            return streaming if fault.kind != "invalid_output" else json_schema

        with self._lock:
            fault = _consume(self._chat, applies)
            self._published()
            return fault

    def take_batch_plan(self) -> BatchPlan:
        with self._lock:
            plan, self._batch = self._batch, BatchPlan()
            return plan

    def clear(self) -> None:
        with self._lock:
            self._http.clear()
            self._chat.clear()
            self._batch = BatchPlan()
            self._published()


def _check_times(times: int) -> None:
    if times < 1:
        raise ValueError("times must be at least 1")


def _consume(queue: list[Any], applies: Any) -> Any:
    for fault in queue:
        if applies(fault):
            fault.remaining -= 1
            if fault.remaining == 0:
                queue.remove(fault)
            return fault
    return None
