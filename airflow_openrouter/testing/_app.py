"""The Starlette application: routes, and the gate every request passes through.

The gate, in order: record the request in the journal, sleep the configured latency, check the
bearer key, apply the oldest matching queued HTTP fault, then run the handler and turn ``ApiError``
into the OpenRouter error envelope. Batch routes are served under ``/api/v1`` and the beta prefix
``/api/beta``.

Chat completions and embeddings instead do their work *during* the latency: the gate checks the key
and the faults at arrival, the handler builds the answer, then waits until the latency since arrival
has passed, and only then bills and answers. The latency is the time the generation takes, whatever
the emulator's own processing (so 512 requests arriving at once under a 500 ms latency are answered
after 500 ms, not 500 ms plus a queue), and a generation is still billed only once it is done.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._attribution import Attribution
from ._batch_submit import check_payload_size, parse_submission
from ._batches import parse_list_timestamp
from ._catalogue import CATALOGUE, ModelSpec
from ._chat import DONE_EVENT, PROCESSING_COMMENT, ChatOutcome, generation_id, run_chat
from ._embedding_models import EMBEDDING_CATALOGUE, EmbeddingModelSpec
from ._embeddings import parse_embedding_request, run_embeddings
from ._errors import ApiError, error_envelope, error_type_for
from ._faults import ChatFault, HttpFault
from ._generations import Caller
from ._journal import Headers, RecordedRequest
from ._routes import relative_route
from ._state import EmulatorState
from ._validation import parse_chat_request

_NO_CREDITS = "Insufficient credits. Add more using https://openrouter.ai/settings/credits"
_MODEL_LIST_QUERY = "offset must be a non-negative integer and limit an integer between 1 and 1000."
_NON_JSON_BODY = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
)


@dataclass(frozen=True)
class _Call:
    request: Request
    raw: bytes
    body: Any  # parsed JSON, None if empty or invalid
    api_key: str
    arrived: float  # time.monotonic() at arrival, for latency stats
    due: float = 0.0  # time.monotonic() when the answer is due: arrival plus the configured latency

    async def latency(self) -> None:
        """Wait until the answer is due (at once if it already is)."""
        await _until(self.due)


async def _until(due: float) -> None:
    remaining = due - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)


Handler = Callable[[_Call], Awaitable[Response]]


def build_app(state: EmulatorState) -> Starlette:
    api = _Api(state)
    routes = [
        Route(
            "/api/v1/chat/completions",
            api.gate(api.chat_completions, works_during_latency=True),
            methods=["POST"],
        ),
        Route("/api/v1/embeddings", api.gate(api.embeddings, works_during_latency=True), methods=["POST"]),
        Route("/api/v1/embeddings/models", api.gate(api.list_embedding_models, public=True), methods=["GET"]),
        Route("/api/v1/models", api.gate(api.list_models, public=True), methods=["GET"]),
        Route("/api/v1/models/{author}/{slug}/endpoints", api.gate(api.model_endpoints), methods=["GET"]),
        Route("/api/v1/key", api.gate(api.key), methods=["GET"]),
        Route("/api/v1/credits", api.gate(api.credits), methods=["GET"]),
        Route("/api/v1/generation", api.gate(api.generation), methods=["GET"]),
    ]
    for prefix in ("/api/v1", "/api/beta"):
        routes += [
            Route(f"{prefix}/batches", api.gate(api.create_batch, streamed_body=True), methods=["POST"]),
            Route(f"{prefix}/batches", api.gate(api.list_batches), methods=["GET"]),
            Route(f"{prefix}/batches/{{id}}", api.gate(api.get_batch), methods=["GET"]),
            Route(f"{prefix}/batches/{{id}}", api.gate(api.delete_batch), methods=["DELETE"]),
            Route(f"{prefix}/batches/{{id}}/results", api.gate(api.batch_results), methods=["GET"]),
        ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return JSONResponse(error_envelope(status, "Not Found" if status == 404 else None), status_code=status)


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _query(request: Request) -> dict[str, list[str] | str]:
    query: dict[str, list[str] | str] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        query[key] = values if len(values) > 1 else values[0]
    return query


def _int_param(request: Request, name: str, default: int, low: int, high: int, message: str) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise ApiError(400, message) from None
    if not low <= value <= high:
        raise ApiError(400, message)
    return value


class _Api:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # -- the gate --------------------------------------------------------------------------------

    def gate(
        self,
        handler: Handler,
        *,
        public: bool = False,
        streamed_body: bool = False,
        works_during_latency: bool = False,
    ) -> Any:
        """``works_during_latency``: the handler runs at arrival and awaits ``call.latency()`` itself
        (before billing); every answer of the route still leaves once the latency has passed."""
        state = self.state

        async def endpoint(request: Request) -> Response:
            arrived = time.monotonic()
            # The journal's arrival time is taken here, where the latency is measured from, not after the
            # body was read: on a loaded machine that read can take long enough to blur the two.
            arrived_at = state.clock.now()
            route = relative_route(request.url.path)
            try:
                if streamed_body:
                    # Refuse an oversized batch upload from its header, before reading it.
                    check_payload_size(int(request.headers.get("content-length") or 0))
                raw = await request.body()
            except ApiError as exc:
                return _error_response(exc)
            body = _parse_json(raw)
            state.journal.record(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=_query(request),
                    headers=Headers(request.headers.items()),  # Starlette lower-cases the names
                    body=body,
                    at=arrived_at,
                )
            )
            delay = state.latency.sample_seconds()
            due = arrived + delay
            if delay and not works_during_latency:
                await asyncio.sleep(delay)
            try:
                api_key = self._authenticate(request, public)
                fault = state.faults.take_http(route, request.method)
                if fault is not None and fault.kind != "drop_answer":
                    await _until(due)
                    return _fault_response(fault)
                response = await handler(_Call(request, raw, body, api_key, arrived, due))
                await _until(due)
                # drop_answer: the request was handled (e.g. the batch exists), then the answer is lost.
                return _DroppedResponse() if fault is not None else response
            except ApiError as exc:
                await _until(due)
                return _error_response(exc)

        return endpoint

    def _authenticate(self, request: Request, public: bool) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if public:
            return key
        if not key:
            raise ApiError(401, "No auth credentials found")
        if self.state.api_keys is not None and key not in self.state.api_keys:
            raise ApiError(401, "User not found.")
        return key

    def _admit(self, call: _Call, attribution: Attribution) -> Caller:
        """Who asks for a generation (its session header checked too); 402 when the account is empty."""
        caller = Caller.of(attribution, call.request.headers)
        if self.state.account.remaining <= 0:
            raise ApiError(402, _NO_CREDITS)
        return caller

    # -- chat --------------------------------------------------------------------------------------

    async def chat_completions(self, call: _Call) -> Response:
        state = self.state
        request = parse_chat_request(call.body)
        caller = self._admit(call, request.attribution)
        fault = state.faults.take_chat(streaming=request.stream, json_schema=request.json_schema is not None)
        outcome = run_chat(
            request,
            created=int(state.clock.now()),
            violate_schema=fault is not None and fault.kind == "invalid_output",
        )
        await call.latency()  # the generation takes the configured latency
        record = outcome.generation_record(
            streamed=request.stream,
            latency_ms=(time.monotonic() - call.arrived) * 1000,
            caller=caller,
        )
        state.account.record_generation(record)
        headers = {"X-Generation-Id": outcome.id}
        if not request.stream:
            # A generation is billed once generated, whether or not the client is still there to read
            # the answer (after a read timeout, say): the latency above has already passed.
            state.account.charge(outcome.cost)
            return JSONResponse(outcome.result(), headers=headers)
        stream_fault = fault if fault is not None and fault.kind != "invalid_output" else None
        return StreamingResponse(
            self._sse(outcome, stream_fault, record),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _sse(
        self, outcome: ChatOutcome, fault: ChatFault | None, record: dict[str, Any]
    ) -> AsyncIterator[str]:
        """The events of a stream. It is billed for what it generated: all of it once the last chunk is
        out, or, when the client disconnects first, the prompt and the chunks sent until then."""
        delay = self.state.token_delay_s
        pieces_sent, billed = 0, False
        try:
            # Keep-alive comments come first, as OpenRouter sends them while the provider warms up.
            yield PROCESSING_COMMENT
            yield PROCESSING_COMMENT
            for i, chunk in enumerate(outcome.stream_chunks(fault.after_tokens if fault else None)):
                if delay and i:
                    await asyncio.sleep(delay)
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    pieces_sent += 1
                if not chunk["choices"]:  # the usage chunk: the generation is complete
                    self.state.account.charge(outcome.cost)
                    billed = True
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
            if fault is None:
                yield DONE_EVENT
            elif fault.kind == "stream_error":
                message = "Provider returned error" if fault.status >= 500 else "Rate limit exceeded"
                yield f"data: {json.dumps(outcome.error_chunk(fault.status, message), separators=(',', ':'))}\n\n"
            # cut_stream: the response simply ends, without [DONE].
        finally:
            if not billed:  # cut, failed, or the client went away: only what was generated so far
                cost = outcome.cost_of_stream(pieces_sent)
                self.state.account.charge(cost)
                self.state.account.record_generation({**record, "total_cost": cost, "usage": cost})

    async def generation(self, call: _Call) -> Response:
        generation_id = call.request.query_params.get("id")
        if not generation_id:
            raise ApiError(400, "Missing required query parameter: id")
        record = self.state.account.generation(generation_id)
        if record is None:
            raise ApiError(404, f"Generation {generation_id} not found")
        return JSONResponse({"data": record})

    # -- embeddings --------------------------------------------------------------------------------

    async def embeddings(self, call: _Call) -> Response:
        state = self.state
        request = parse_embedding_request(call.body)
        caller = self._admit(call, request.attribution)
        created = int(state.clock.now())
        outcome = run_embeddings(request, created=created, outcome_id=generation_id(created))
        body = outcome.result()
        await call.latency()  # the generation takes the configured latency
        # Billed once generated, like a non-streamed chat completion.
        state.account.charge(outcome.cost)
        latency_ms = (time.monotonic() - call.arrived) * 1000
        state.account.record_generation(outcome.generation_record(latency_ms=latency_ms, caller=caller))
        return JSONResponse(body, headers={"X-Generation-Id": outcome.id})

    # -- models and account ------------------------------------------------------------------------

    async def list_models(self, call: _Call) -> Response:
        """Chat models by default; ``output_modalities=embeddings`` (or ``all``) as the real API."""
        wanted = set(call.request.query_params.get("output_modalities", "text").split(","))
        specs: list[Any] = []
        if wanted & {"text", "all"}:
            specs += CATALOGUE.values()
        if wanted & {"embeddings", "all"}:
            specs += EMBEDDING_CATALOGUE.values()
        return _model_page(call.request, specs)

    async def list_embedding_models(self, call: _Call) -> Response:
        return _model_page(call.request, list(EMBEDDING_CATALOGUE.values()))

    async def model_endpoints(self, call: _Call) -> Response:
        params = call.request.path_params
        model_id = f"{params['author']}/{params['slug']}"
        specs: list[ModelSpec | EmbeddingModelSpec] = [*CATALOGUE.values(), *EMBEDDING_CATALOGUE.values()]
        matches = [spec for spec in specs if model_id in (spec.id, spec.id.split(":")[0])]
        if not matches:
            raise ApiError(404, f"Model {model_id} not found")
        return JSONResponse({"data": matches[0].endpoints_json()})

    async def key(self, call: _Call) -> Response:
        self.state.batches.settle_all()
        return JSONResponse({"data": self.state.account.key_info(call.api_key)})

    async def credits(self, call: _Call) -> Response:
        self.state.batches.settle_all()
        return JSONResponse({"data": self.state.account.credits_info()})

    # -- batches -----------------------------------------------------------------------------------

    async def create_batch(self, call: _Call) -> Response:
        submission = parse_submission(call.raw, max_requests=self.state.max_batch_requests)
        batch = self.state.batches.create(submission, self.state.faults.take_batch_plan())
        return JSONResponse(batch, status_code=202)

    async def list_batches(self, call: _Call) -> Response:
        params = call.request.query_params
        limit = _int_param(call.request, "limit", 20, 1, 100, "Invalid batch list query.")
        page = self.state.batches.list_batches(
            limit=limit,
            after=params.get("after"),
            statuses=set(params.getlist("status")),
            created_after=parse_list_timestamp(params.get("created_after")),
            created_before=parse_list_timestamp(params.get("created_before")),
        )
        return JSONResponse(page)

    async def get_batch(self, call: _Call) -> Response:
        batch, rows = self.state.batches.get(call.request.path_params["id"])
        if rows is None:
            return JSONResponse(batch)
        # A completed batch inlines every result row: stream them rather than building one huge body.
        return StreamingResponse(_json_with_rows(batch, "results", rows), media_type="application/json")

    async def delete_batch(self, call: _Call) -> Response:
        return JSONResponse(self.state.batches.delete(call.request.path_params["id"]))

    async def batch_results(self, call: _Call) -> Response:
        limit = _int_param(
            call.request, "limit", 100, 1, 1000, "limit must be an integer between 1 and 1000."
        )
        cursor = call.request.query_params.get("cursor")
        return JSONResponse(self.state.batches.results_page(call.request.path_params["id"], limit, cursor))


def _model_page(request: Request, specs: list[Any]) -> Response:
    """A ``ModelsListResponse``: the whole list unless ``offset`` or ``limit`` is given."""
    offset = _int_param(request, "offset", 0, 0, 1 << 31, _MODEL_LIST_QUERY)
    limit = _int_param(request, "limit", len(specs) or 1, 1, 1000, _MODEL_LIST_QUERY)
    page = [spec.to_json() for spec in specs[offset : offset + limit]]
    end = offset + len(page)
    following = f"{request.url.path}?offset={end}&limit={limit}" if end < len(specs) else None
    return JSONResponse({"data": page, "total_count": len(specs), "links": {"next": following}})


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _json_with_rows(head: dict[str, Any], key: str, rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """Serialize ``head`` with ``head[key]`` replaced by the streamed array of ``rows``."""
    prefix = json.dumps({k: v for k, v in head.items() if k != key}, separators=(",", ":"))
    yield (prefix[:-1] + f',"{key}":[').encode()
    for i, row in enumerate(rows):
        yield (("," if i else "") + json.dumps(row, separators=(",", ":"))).encode()
    yield b"]}"


def _fault_response(fault: HttpFault) -> Response:
    if fault.kind == "drop":
        return _DroppedResponse()
    if fault.kind == "non_json":
        return Response(_NON_JSON_BODY, status_code=fault.status, media_type="text/html")
    if fault.kind == "error_body":
        metadata = {"error_type": error_type_for(502), "provider_name": "OpenAI"}
        return JSONResponse(error_envelope(502, "Provider returned error", metadata), status_code=200)
    if isinstance(fault.body, (dict, list)):
        return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
    if isinstance(fault.body, (str, bytes)):
        return Response(fault.body, status_code=fault.status, headers=fault.headers, media_type="text/plain")
    body = error_envelope(fault.status, None, {"error_type": error_type_for(fault.status)})
    return JSONResponse(body, status_code=fault.status, headers=fault.headers)


class _DroppedResponse(Response):
    """Announce a body, send part of it, then return: uvicorn closes the socket mid-response."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id":"gen-', "more_body": True})
