"""6. Emulator capacity: chat completions per second the emulator serves on loopback, against the demand
of the other benchmarks, so that it is never what limits them.

Demands: the concurrent-engine benchmark (64 requests in flight, 200 ms each: 320/s) and the bulk row of
issue 14 (512 in flight, 500 ms each: 1,024/s). Capacity is measured with no added latency and as many
keep-alive connections as the demand keeps in flight, with one emulator process and with ``--workers``;
the goal is 1.5x the demand. The last rows run the bulk demand itself (512 in flight, 500 ms latency),
with one process and with ``--workers``, and report the rate served against its 1,024/s bound and the
latency added on top of the 500 ms at p99. They are reported without a goal: what is lost there is the
cost of answering 512 requests that all arrive, and are all due, at the same instant, and it is shared
by the emulator and the client (one asyncio process reading 512 answers at once) on the same cores.

The client is deliberately thin (asyncio streams, one prebuilt keep-alive request per connection, no
HTTP library) so that the server, not the client, is what saturates. The request is the one the
concurrent engine sends (a short prompt, no ``max_tokens``: a 3-6 sentence answer). All rows run one
after the other in the same run, so they share the machine's load: compare ratios, not absolute rates.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench._common import EmulatorProcess, Goal, Row, run_worker
from bench.concurrent import CONCURRENCY, LATENCY_S, MODEL

BENCHMARK = "emulator_capacity"
WORKERS = 2  # processes for the --workers rows: the machine has 2 cores
CAPACITY_GOAL = Goal("ratio", ">=", 1.5, ">= 1.5x the demand")


@dataclass(frozen=True)
class Demand:
    label: str
    in_flight: int
    latency_s: float

    @property
    def rate(self) -> float:
        return self.in_flight / self.latency_s


ENGINE = Demand("benchmark 3's demand", CONCURRENCY, LATENCY_S)  # 64 x 200 ms: 320/s
BULK = Demand("the bulk row's demand", 512, 0.5)  # issue 14: 512 x 500 ms: 1,024/s


class _Emulator(EmulatorProcess):
    """The emulator's CLI with ``--workers``."""

    def __init__(self, *, workers: int, latency_ms: float = 0) -> None:
        super().__init__(latency_ms=latency_ms)
        self._args += ["--workers", str(workers)]


def _request(base_url: str, api_key: str) -> bytes:
    url = urlsplit(base_url)
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "Classify item 7."}]}
    ).encode()
    head = (
        f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(host: str, port: int, request: bytes, until: float, times: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            sent = time.perf_counter()
            writer.write(request)
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            times.append(time.perf_counter() - sent)
    finally:
        writer.close()


def measure_capacity(base_url: str, api_key: str, seconds: float, connections: int) -> dict[str, Any]:
    """Worker: responses per second over ``seconds`` with ``connections`` keep-alive connections."""
    url = urlsplit(base_url)
    request = _request(base_url, api_key)

    async def main() -> dict[str, Any]:
        times: list[float] = []
        cpu = time.process_time()
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(
            *(
                _client(url.hostname or "127.0.0.1", url.port or 80, request, until, times)
                for _ in range(connections)
            )
        )
        elapsed = time.perf_counter() - started
        times.sort()
        return {
            "responses": len(times),
            "seconds": elapsed,
            "client_cpu_s": time.process_time() - cpu,
            "p50_s": times[len(times) // 2] if times else None,
            "p99_s": times[int(len(times) * 0.99)] if times else None,
        }

    return asyncio.run(main())


def _measure(workers: int, latency_ms: float, connections: int, seconds: float) -> dict[str, Any]:
    import psutil

    with _Emulator(workers=workers, latency_ms=latency_ms) as emulator:
        server = psutil.Process(emulator.pid)
        processes = [server, *server.children(recursive=True)]
        before = sum(sum(p.cpu_times()[:2]) for p in processes)
        result = run_worker(measure_capacity, **emulator.endpoint, seconds=seconds, connections=connections)
        result["server_cpu_s"] = sum(sum(p.cpu_times()[:2]) for p in processes) - before
    result["rate"] = result["responses"] / result["seconds"]
    return result


def _capacity_row(demand: Demand, workers: int, result: dict[str, Any]) -> Row:
    processes = "1 process" if workers == 1 else f"{workers} processes (--workers {workers})"
    return Row(
        BENCHMARK,
        f"emulator capacity: {demand.in_flight} connections, no latency, {processes}",
        "req/s",
        result["rate"],
        baseline=demand.rate,
        baseline_label=f"{demand.label}: {demand.in_flight} x {demand.latency_s * 1000:.0f} ms",
        ratio=result["rate"] / demand.rate,
        goal=CAPACITY_GOAL,
        note=f"server CPU {result['server_cpu_s'] / result['seconds']:.0%} of a core over {result['seconds']:.1f} s, "
        f"client CPU {result['client_cpu_s'] / result['seconds']:.0%}",
        details=result,
    )


def _bulk_row(workers: int, served: dict[str, Any]) -> Row:
    added_p99 = (served["p99_s"] or 0) - BULK.latency_s
    return Row(
        BENCHMARK,
        f"emulator at the bulk demand: {BULK.in_flight} in flight x {BULK.latency_s * 1000:.0f} ms, "
        + ("1 process" if workers == 1 else f"--workers {workers}"),
        "req/s",
        served["rate"],
        baseline=BULK.rate,
        baseline_label=f"the bound ({BULK.in_flight} / {BULK.latency_s} s)",
        ratio=served["rate"] / BULK.rate,
        note=f"latency added to the 500 ms: p99 {added_p99 * 1000:.0f} ms; "
        f"server CPU {served['server_cpu_s'] / served['seconds']:.0%} of a core",
        details=served,
    )


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    seconds = 1.0 if quick else 10.0
    rows = [
        _capacity_row(ENGINE, 1, _measure(1, 0, ENGINE.in_flight, seconds)),
        _capacity_row(BULK, 1, _measure(1, 0, BULK.in_flight, seconds)),
        _capacity_row(BULK, WORKERS, _measure(WORKERS, 0, BULK.in_flight, seconds)),
    ]
    for workers in (1, WORKERS):
        rows.append(_bulk_row(workers, _measure(workers, BULK.latency_s * 1000, BULK.in_flight, seconds)))
    return rows
