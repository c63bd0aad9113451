"""2. Transport overhead: sequential small chat completions through ``OpenRouterHook.chat_completion``
(with its INFO line per call, as the chat operator logs it; and, reported beside it, with that line at
DEBUG, as bulk callers ask for it) against raw ``httpx.Client.post(...).json()``,
on the same zero-latency emulator, interleaved call by call in one process so that drift hits both alike.
The figure is the client's CPU per call (process CPU: the emulator's work and the machine's other load
are not in it); median wall times are in the note. Under ``--peers`` the ``openai`` and ``openrouter``
SDKs are measured the same way, against their own raw baseline, in the peers' virtualenv.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    EmulatorProcess,
    GcPauses,
    Goal,
    Row,
    connection_env,
    median,
    ratio,
    run_worker,
    unavailable,
)

BENCHMARK = "transport"
GOAL = Goal("ratio", "<=", 1.0, "hook/raw <= 1.0")
MODEL = "openai/gpt-4-1106-preview"
BODY: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hi."}],
    "max_tokens": 16,
}
WARM_UP = 20

Call = Callable[[], Any]


# --- the clients: each factory returns a function making one call --------------------------------


def raw_httpx(base_url: str, api_key: str) -> Call:
    import httpx

    client = httpx.Client(base_url=base_url + "/", headers={"Authorization": f"Bearer {api_key}"})
    return lambda: client.post("chat/completions", json=BODY).json()


def hook(base_url: str, api_key: str) -> Call:
    os.environ.update(connection_env(base_url, api_key))
    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    client = OpenRouterHook()
    return lambda **options: client.chat_completion(**BODY, **options)


def quiet_hook(base_url: str, api_key: str) -> Call:
    """The hook as a bulk caller uses it: its line per answer at DEBUG, so not written."""
    import logging

    call = hook(base_url, api_key)
    return lambda: call(log_level=logging.DEBUG)


def openai_sdk(base_url: str, api_key: str) -> Call:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key)
    return lambda: client.chat.completions.create(**BODY)


def openrouter_sdk(base_url: str, api_key: str) -> Call:
    from openrouter import OpenRouter

    client = OpenRouter(api_key=api_key, server_url=base_url)
    return lambda: client.chat.send(**BODY)


CLIENTS: dict[str, Callable[[str, str], Call]] = {
    "raw": raw_httpx,
    "hook": hook,
    "quiet_hook": quiet_hook,
    "openai": openai_sdk,
    "openrouter": openrouter_sdk,
}


def measure_transport(base_url: str, api_key: str, calls: int, clients: list[str]) -> dict[str, Any]:
    """Worker: wall time (median) and CPU time (mean) per call of each client.

    The clients take turns call by call, in an order rotated every call, so that the bursts of other
    work on a shared machine land on all of them alike. Clients that cannot be set up are returned
    under ``errors`` and the others are still measured.

    The heap is frozen after the warm-up (``gc.freeze()``), as in an Airflow worker (LocalExecutor
    freezes it before it forks): otherwise the client that happens to allocate when the collector's
    threshold is crossed pays a full collection of the ~200,000 objects Airflow's imports leave, about
    200 ms, however little garbage it made itself (raw httpx makes ~50 cyclic objects a call, the hook
    none). The collections that remain are counted per client.
    """
    callers: dict[str, Call] = {}
    errors: dict[str, str] = {}
    for name in clients:
        try:
            callers[name] = CLIENTS[name](base_url, api_key)
            for _ in range(WARM_UP):
                callers[name]()
        except Exception as exc:  # a peer SDK missing or incompatible: report it, measure the rest
            errors[name] = f"{type(exc).__name__}: {exc}"
    names = list(callers)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    gc_pauses = dict.fromkeys(names, 0.0)
    gc.collect()
    gc.freeze()
    for i in range(calls):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            call = callers[name]
            with GcPauses() as pauses:
                started, started_cpu = time.perf_counter(), time.process_time()
                call()
                wall[name].append(time.perf_counter() - started)
                cpu[name] += time.process_time() - started_cpu
            gc_pauses[name] += pauses.summary()["total_pause_s"]
    return {
        "wall_per_call": {name: median(wall[name]) for name in names},
        "cpu_per_call": {name: cpu[name] / calls for name in names},
        "gc_pause_per_call": {name: gc_pauses[name] / calls for name in names},
        "errors": errors,
    }


def _rows(result: dict[str, Any], contenders: dict[str, str], goal: Goal | None, calls: int) -> list[Row]:
    wall, cpu = result["wall_per_call"], result["cpu_per_call"]
    gc_pause = result.get("gc_pause_per_call") or dict.fromkeys(wall, 0.0)
    rows = []
    for client, label in contenders.items():
        name = f"transport: {label} / raw httpx"
        if client not in wall or "raw" not in wall:
            reason = result["errors"].get(client) or result["errors"].get("raw", "not measured")
            rows.append(unavailable(BENCHMARK, name, "µs CPU/call", reason, goal))
            continue
        figure, baseline = cpu[client] * 1e6, cpu["raw"] * 1e6
        rows.append(
            Row(
                BENCHMARK,
                name,
                "µs CPU/call",
                figure,
                baseline=baseline,
                baseline_label="raw httpx",
                ratio=ratio(figure, baseline),
                goal=goal,
                note=(
                    f"client CPU per call, {calls} calls each, heap frozen; median wall time per call "
                    f"{wall[client] * 1e6:,.0f} µs vs {wall['raw'] * 1e6:,.0f} µs raw "
                    f"({wall[client] / wall['raw']:.2f}x); collector pauses {gc_pause[client] * 1e6:.0f} vs "
                    f"{gc_pause['raw'] * 1e6:.0f} µs per call"
                ),
                details={
                    "calls_each": calls,
                    "wall_per_call_s": wall[client],
                    "raw_wall_per_call_s": wall["raw"],
                },
            )
        )
    return rows


def run(*, quick: bool, peers_python: Path | None = None) -> list[Row]:
    calls = 20 if quick else 2000
    rows = []
    with EmulatorProcess(latency_ms=0) as emulator:
        ours = run_worker(
            measure_transport, **emulator.endpoint, calls=calls, clients=["raw", "hook", "quiet_hook"]
        )
        rows += _rows(ours, {"hook": "OpenRouterHook"}, GOAL, calls)
        # What the line per answer costs (the chat operator keeps it at INFO; bulk callers do not).
        rows += _rows(ours, {"quiet_hook": "OpenRouterHook, answer line at DEBUG"}, None, calls)
        if peers_python is not None:
            peers = run_worker(
                measure_transport,
                python=peers_python,
                **emulator.endpoint,
                calls=calls,
                clients=["raw", "openai", "openrouter"],
            )
            rows += _rows(peers, {"openai": "openai SDK", "openrouter": "openrouter SDK"}, None, calls)
    return rows
