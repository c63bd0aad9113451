"""``OpenRouterEmulator``: the public face of the local OpenRouter-compatible server."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_submit import MAX_BATCH_REQUESTS
from ._faults import BatchOutcome, ChatFault, HttpFault
from ._journal import RecordedRequest
from ._scenario import Scenario, load_scenario
from ._shared import SharedCells
from ._state import EmulatorState

if TYPE_CHECKING:
    from ._server import ServerThread
    from ._workers import WorkerPool

DEFAULT_API_KEY = "sk-or-emulator-key"


class OpenRouterEmulator:
    """A real HTTP server on a local port that speaks the OpenRouter API, with fault injection.

    Use it as a context manager (or ``start()``/``stop()``)::

        with OpenRouterEmulator() as emu:
            httpx.post(f"{emu.base_url}/chat/completions", headers={"Authorization": f"Bearer {emu.api_key}"}, ...)

    Every fault method queues an injection consumed by the next matching request(s); see
    ``airflow_openrouter.testing`` for the route-pattern syntax and the scenario-file format.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        latency_ms: float = 0,
        latency_jitter_ms: float = 0,
        token_delay_ms: float = 0,
        batch_durations: Sequence[float] = (1.0, 1.0, 0.5),
        manual_clock: bool = False,
        scenario: str | Path | dict[str, Any] | list[Any] | None = None,
        max_batch_requests: int = MAX_BATCH_REQUESTS,
        batch_expiry_hours: Mapping[str, float | None] | None = None,
        workers: int = 1,
    ) -> None:
        """``batch_expiry_hours`` overrides a batch provider's window (``None``: no hard expiry, so
        ``expires_at`` is null); by default every provider has 24 h and Google Vertex ("Google") 96 h.

        ``workers`` > 1 serves chat completions, embeddings and the model lists from that many
        processes sharing the port, for load tests where one process would be the bottleneck. Spend,
        credits, the journal, generations, settings and faults stay exact (see ``_workers``). Needs
        ``SO_REUSEPORT``, which spreads connections over the processes on Linux.
        """
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer (got {workers!r})")
        keys = list(api_keys) if api_keys is not None else None
        self.host = host
        self.port = port
        self.workers = workers
        self.api_key = keys[0] if keys else DEFAULT_API_KEY
        self._state = EmulatorState(
            api_keys=keys,
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            token_delay_ms=token_delay_ms,
            batch_durations=batch_durations,
            manual_clock=manual_clock,
            max_batch_requests=max_batch_requests,
            batch_expiry_hours=batch_expiry_hours,
            cells=SharedCells(processes=workers) if workers > 1 else None,
        )
        self._server: ServerThread | None = None
        self._pool: WorkerPool | None = None
        if scenario is not None:
            self.apply_scenario(scenario)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> OpenRouterEmulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        # Starlette and uvicorn are imported here, not at package import, to keep the pytest plugin cheap.
        from ._app import build_app
        from ._server import ServerThread

        server = ServerThread(build_app(self._state), self.host, self.port, reuse_port=self.workers > 1)
        upstream = server.listen_privately() if self.workers > 1 else ""
        server.start()
        self._server, self.port = server, server.port
        if self.workers > 1:
            from ._workers import WorkerPool

            self._pool = WorkerPool(self._state, self.workers)
            try:
                self._pool.start(self.host, self.port, upstream)
            except BaseException:
                self._pool = None
                self.stop()
                raise
        return self

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> OpenRouterEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        alive = self._pool is None or self._pool.alive
        return self._server is not None and self._server.running and alive

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v1"

    # -- Airflow connection helpers --------------------------------------------------------------

    def connection_json(self, **extra: Any) -> str:
        """A JSON connection for ``AIRFLOW_CONN_<ID>`` pointing at this emulator."""
        return json.dumps(
            {"conn_type": "openrouter", "host": self.base_url, "password": self.api_key, "extra": extra}
        )

    def connection_env(self, conn_id: str = "openrouter_default", **extra: Any) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_json(**extra)}

    # -- journal ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._state.journal.snapshot()

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Requests whose route (path relative to /api/v1 or /api/beta) matches ``path``."""
        return self._state.journal.matching(path, method)

    def clear_requests(self) -> None:
        self._state.journal.clear()

    def generation(self, generation_id: str) -> dict[str, Any] | None:
        """What ``GET /generation?id=`` answers as ``data`` (``None``: unknown id), without a request."""
        return self._state.account.generation(generation_id)

    @property
    def billed_usd(self) -> float:
        """Everything billed so far: generations, and batches once they are seen completed."""
        self._state.batches.settle_all()
        return self._state.account.usage

    # -- clock, credits, latency -----------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move emulator time forward; batch lifecycles (and ``batch_not_found_for``) follow it.

        With ``manual_clock=True`` this is the only way time passes; on the real clock it adds a
        permanent offset, which is handy to finish batches at once.
        """
        self._state.clock.advance(seconds)

    def set_credits(self, usd: float) -> None:
        self._state.account.set_credits(usd)

    def add_credits(self, usd: float) -> None:
        self._state.account.add_credits(usd)
        # Topping up releases results withheld by batch_payment_required_until_credits().
        self._state.batches.release_payment()

    def set_latency(self, ms: float, jitter_ms: float = 0) -> None:
        self._state.latency.set(ms, jitter_ms)

    def set_token_delay(self, ms: float) -> None:
        """Delay between SSE chunks of the following streams."""
        if ms < 0:
            raise ValueError("the token delay must be non-negative")
        self._state.token_delay_s = ms / 1000

    def apply_scenario(self, scenario: str | Path | dict[str, Any] | list[Any] | Scenario) -> None:
        """Apply a scenario (file path, JSON text, dict or list of faults; see the package docs):
        its settings take effect now and its faults queue behind those already queued."""
        plan = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if plan.latency_ms is not None or plan.latency_jitter_ms is not None:
            self.set_latency(plan.latency_ms or 0, plan.latency_jitter_ms or 0)
        if plan.token_delay_ms is not None:
            self.set_token_delay(plan.token_delay_ms)
        if plan.credits is not None:
            self.set_credits(plan.credits)
        for name, kwargs in plan.faults:
            getattr(self, name)(**kwargs)

    def clear_faults(self) -> None:
        self._state.faults.clear()

    def reset(self) -> None:
        """Forget requests, faults, batches, generations and spend; restore latency and the clock.

        Lets one running emulator serve many tests (the server keeps its port).
        """
        self._state.reset()

    # -- HTTP faults -----------------------------------------------------------------------------

    def fail_next(
        self,
        route: str = "/chat/completions",
        status: int = 429,
        times: int = 1,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
        body: Any = None,
        method: str | None = None,
    ) -> None:
        """The next ``times`` matching requests answer ``status`` (default body: the error envelope)."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        if status == 429:
            headers.update({"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0"})
        self._state.faults.add_http(HttpFault("fail", route, method, times, status, body, headers))

    def drop_connection_next(
        self, route: str = "/chat/completions", times: int = 1, method: str | None = None
    ) -> None:
        """Close the socket after the headers and a few body bytes."""
        self._state.faults.add_http(HttpFault("drop", route, method, times))

    def drop_answer_next(self, route: str = "/batches", times: int = 1, method: str | None = "POST") -> None:
        """Handle the next matching request (a batch is created, a completion billed), then close the
        socket before the answer is complete: the client never learns what happened."""
        self._state.faults.add_http(HttpFault("drop_answer", route, method, times))

    def error_body_next(
        self, route: str = "/chat/completions", times: int = 1, method: str | None = None
    ) -> None:
        """HTTP 200 whose JSON body is ``{"error": {...}}`` with no ``choices``."""
        self._state.faults.add_http(HttpFault("error_body", route, method, times))

    def non_json_next(
        self, route: str = "/chat/completions", times: int = 1, status: int = 200, method: str | None = None
    ) -> None:
        """An HTML page instead of JSON (as from a proxy in front of the API)."""
        self._state.faults.add_http(HttpFault("non_json", route, method, times, status))

    # -- chat faults -----------------------------------------------------------------------------

    def cut_stream_next(self, times: int = 1, after_tokens: int = 3) -> None:
        """The next streams end after ``after_tokens`` content chunks, without ``[DONE]``."""
        self._state.faults.add_chat(ChatFault("cut_stream", times, after_tokens))

    def stream_error_next(self, times: int = 1, after_tokens: int = 3, code: int = 502) -> None:
        """The next streams send an in-band error chunk (``finish_reason: "error"``) after some tokens."""
        self._state.faults.add_chat(ChatFault("stream_error", times, after_tokens, code))

    def invalid_output_next(self, times: int = 1) -> None:
        """The next ``json_schema`` responses violate their schema."""
        self._state.faults.add_chat(ChatFault("invalid_output", times))

    # -- batch faults ----------------------------------------------------------------------------

    def batch_outcome_next(self, status: BatchOutcome = "failed", reason: str | None = None) -> None:
        if status not in ("failed", "expired", "cancelled"):
            raise ValueError("status must be 'failed', 'expired' or 'cancelled'")
        self._state.faults.plan_batch(outcome=status, reason=reason)

    def batch_item_errors_next(
        self,
        fraction: float = 0.0,
        custom_ids: Iterable[str] | None = None,
        error_type: str = "provider_unavailable",
    ) -> None:
        """Result rows of the next batch fail: a ``fraction`` of them, and those named. ``error_type``:
        the row's canonical ``error.error_type`` (default one that may pass; e.g. ``"invalid_prompt"``
        for one that will not)."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        self._state.faults.plan_batch(
            item_error_fraction=fraction,
            item_error_ids=frozenset(custom_ids or ()),
            item_error_type=error_type,
        )

    def batch_invalid_output_next(self, custom_ids: Iterable[str]) -> None:
        self._state.faults.plan_batch(invalid_output_ids=frozenset(custom_ids))

    def batch_not_found_for(self, seconds: float = 2.0) -> None:
        """The next created batch answers 404 for its first ``seconds`` (emulator clock)."""
        self._state.faults.plan_batch(not_found_for=seconds)

    def batch_payment_required_until_credits(self) -> None:
        """GET of a completed batch (and its results) answers 402 until ``add_credits()``."""
        self._state.batches.hold_payment()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<OpenRouterEmulator {self.base_url} {state}>"
