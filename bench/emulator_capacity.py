"""6. Emulator capacity: small chat completions per second the emulator serves on loopback, so that it
is never what limits another benchmark.

The client is deliberately thin (asyncio streams, one prebuilt keep-alive request per connection, no
HTTP library) so that the server, not the client, is what saturates. The baseline is the rate the
concurrent-engine benchmark asks of the emulator (64 requests in flight, 200 ms each: 320 per second).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

from bench._common import EmulatorProcess, Goal, Row, run_worker
from bench.concurrent import CONCURRENCY, LATENCY_S

BENCHMARK = "emulator_capacity"
DEMAND = CONCURRENCY / LATENCY_S
GOAL = Goal("ratio", ">=", 1.0, ">= the 320/s benchmark 3 needs")
CONNECTIONS = 16


def _request(base_url: str, api_key: str) -> bytes:
    url = urlsplit(base_url)
    body = json.dumps(
        {
            "model": "openai/gpt-4-1106-preview",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
        }
    ).encode()
    head = (
        f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(host: str, port: int, request: bytes, until: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            writer.write(request)
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


def measure_capacity(base_url: str, api_key: str, seconds: float, connections: int) -> dict[str, Any]:
    """Worker: responses per second over ``seconds`` with ``connections`` keep-alive connections."""
    url = urlsplit(base_url)
    request = _request(base_url, api_key)

    async def main() -> dict[str, Any]:
        counts = [0]
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(
            *(
                _client(url.hostname or "127.0.0.1", url.port or 80, request, until, counts)
                for _ in range(connections)
            )
        )
        elapsed = time.perf_counter() - started
        return {"responses": counts[0], "seconds": elapsed, "client_cpu_s": time.process_time()}

    return asyncio.run(main())


def run(*, quick: bool, peers_python: Any = None) -> list[Row]:
    import psutil

    seconds = 1.0 if quick else 10.0
    with EmulatorProcess(latency_ms=0) as emulator:
        server = psutil.Process(emulator.pid)
        server_cpu = sum(server.cpu_times()[:2])
        result = run_worker(measure_capacity, **emulator.endpoint, seconds=seconds, connections=CONNECTIONS)
        server_cpu = sum(server.cpu_times()[:2]) - server_cpu
    rate = result["responses"] / result["seconds"]
    return [
        Row(
            BENCHMARK,
            f"emulator capacity: small requests, {CONNECTIONS} connections",
            "req/s",
            rate,
            baseline=DEMAND,
            baseline_label="benchmark 3's demand",
            ratio=rate / DEMAND,
            goal=GOAL,
            note=f"server CPU {server_cpu / result['seconds']:.0%} of a core over {result['seconds']:.1f} s",
            details=result,
        )
    ]
