"""The async client's connection pool: several small httpcore pools behind one httpx transport.

httpcore's pool does work proportional to (connections x idle connections) every time a request starts
or ends; with 64 requests in flight on one pool that bookkeeping cost ~15 ms of CPU per request here.
Small pools keep it negligible at the concurrency the concurrent engine uses.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

__all__ = ["ShardedPoolTransport"]


class ShardedPoolTransport(httpx.AsyncBaseTransport):
    """Several small connection pools behind one transport, each request to the least busy."""

    def __init__(self, shards: int, connections_per_shard: int, verify: ssl.SSLContext) -> None:
        limits = httpx.Limits(
            max_connections=connections_per_shard, max_keepalive_connections=connections_per_shard
        )
        self.pools = [httpx.AsyncHTTPTransport(limits=limits, verify=verify) for _ in range(shards)]
        self._in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = min(range(len(self.pools)), key=self._in_flight.__getitem__)
        self._in_flight[shard] += 1
        try:
            response = await self.pools[shard].handle_async_request(request)
        except BaseException:
            self._in_flight[shard] -= 1
            raise
        response.stream = _ReleasingStream(response.stream, self._in_flight, shard)
        return response

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its shard back when it is closed."""

    def __init__(self, stream: Any, in_flight: list[int], shard: int) -> None:
        self._stream = stream
        self._in_flight = in_flight
        self._shard = shard
        self._released = False

    async def __aiter__(self) -> Any:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._in_flight[self._shard] -= 1
        await self._stream.aclose()
