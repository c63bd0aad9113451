"""Test support: ``OpenRouterEmulator``, a local OpenRouter-compatible HTTP server, and a pytest plugin.

Quick start::

    from airflow_openrouter.testing import OpenRouterEmulator

    with OpenRouterEmulator(manual_clock=True) as emu:
        os.environ.update(emu.connection_env())        # AIRFLOW_CONN_OPENROUTER_DEFAULT
        ...                                            # run the hook / operator / DAG
        emu.fail_next("/chat/completions", status=429, retry_after=1)
        emu.advance(10)                                # drive batch lifecycles without sleeping
        assert len(emu.requests_to("/chat/completions", method="POST")) == 2

Served (under ``/api/v1``; batch routes also under ``/api/beta``): ``POST /chat/completions`` (JSON and
SSE), ``POST /embeddings``, ``GET /generation?id=``, ``GET /models`` (public; ``output_modalities``,
``offset``, ``limit``), ``GET /embeddings/models`` (public), ``GET /models/{author}/{slug}/endpoints``,
``GET /key``, ``GET /credits``, ``POST|GET /batches`` (``/v1/chat/completions`` and ``/v1/embeddings``
batches), ``GET|DELETE /batches/{id}``, ``GET /batches/{id}/results``. Every other route requires ``Authorization: Bearer <key>``: any non-empty
key, or with ``api_keys=`` only those. The journal (``requests``) keeps that header but prints it masked
(``sk-or-v1-abc...xyz``, the label ``GET /key`` shows), so a failing assertion never prints a key.

Prices and token counts are deterministic and documented (``_content``, ``_catalogue``): usage cost is
exactly tokens x the ``/models`` prices, half of it in a batch (the API publishes no batch price).
Embeddings are deterministic unit float32 vectors (``_embeddings``). ``user``, ``session_id`` and
``metadata`` are checked against the documented limits and returned by ``GET /generation`` where the
API returns them; the journal shows them (``RecordedRequest.attribution``, ``.item_attributions``).
``emulator.billed_usd`` is the spend so far and ``emulator.generation(id)`` a generation's record.
``workers=N`` (``--workers N``) serves chat, embeddings and model lists from N processes on one port,
with spend, journal, generations, settings and faults kept exact (``_workers``).

Answers follow the official ``openrouter`` and ``openai`` SDKs' models (the tests validate every answer
against them): batch objects carry ``provider`` and ``expires_at`` (24 h after creation, 96 h for Google
Vertex, ``null`` for providers given ``None`` in ``batch_expiry_hours=``); ``/key`` has budgets, data
regions and the free-model quota; usage has ``cost_details``, cached and reasoning token counts.

Route patterns (``route=`` of the fault methods, ``requests_to()``) are paths relative to ``/api/v1``
matched segment by segment: ``{name}`` or ``*`` matches one segment, a trailing ``/**`` matches any
rest. ``"/batches"`` matches create and list only; ``"/batches/{id}"`` matches get and delete;
``"/batches/**"`` matches every batch route. Give ``method=`` to narrow further.

Scenario files (``--scenario FILE`` on the CLI, ``scenario=`` in Python) are JSON::

    {
      "latency_ms": 50, "latency_jitter_ms": 20, "token_delay_ms": 10, "credits": 5.0,
      "faults": [
        {"fault": "fail_next", "route": "/chat/completions", "status": 429, "times": 2, "retry_after": 1},
        {"fault": "cut_stream_next", "after_tokens": 3},
        {"fault": "batch_outcome_next", "status": "expired"}
      ]
    }

Every key is optional and a bare list is read as ``{"faults": [...]}``. ``fault`` names an emulator
method (``fail_next``, ``drop_connection_next``, ``error_body_next``, ``non_json_next``,
``cut_stream_next``, ``stream_error_next``, ``invalid_output_next``, ``batch_outcome_next``,
``batch_item_errors_next``, ``batch_invalid_output_next``, ``batch_payment_required_until_credits``,
``batch_not_found_for``); the other keys are its keyword arguments. Faults queue in file order.
``emulator.apply_scenario(...)`` applies one to a running emulator.

Deliberately light: importing this package imports neither Starlette nor uvicorn (the pytest plugin
loads it in every test run); they are imported when an emulator starts.
"""

from __future__ import annotations

from ._attribution import Attribution
from ._emulator import DEFAULT_API_KEY, OpenRouterEmulator
from ._journal import RecordedRequest

__all__ = ["DEFAULT_API_KEY", "Attribution", "OpenRouterEmulator", "RecordedRequest"]
