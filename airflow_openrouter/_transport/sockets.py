"""The sockets under the sync HTTP client: each attempt bounded by its deadline, each open connection known.

httpx has no total timeout: its read timeout starts again with every byte, so a server dripping one byte
a second keeps a request alive for ever. So every attempt gets a :class:`Deadline` (the connection's
``request_deadline``), made current for the code that sends and reads it (a ``ContextVar``: one per
thread), and the network streams here clamp each socket operation's timeout to the time left, or fail at
once when none is left. httpx then reports an ordinary timeout, which the transport turns into "cut at
the request deadline". For a stream the deadline covers the whole stream: the stream makes the deadline
current again for each chunk it reads. (The async client's deadline is aiohttp's own ``total`` timeout,
see :mod:`.aio`; there a :class:`Deadline` only tells whether it has passed.)

The client also remembers the connections it has open (and forgets them when httpcore closes them),
for :meth:`OpenConnections.shut_down_all`: closing a socket does not wake a thread blocked reading it,
shutting it down does.

httpcore lets a pool take its own network backend; httpx does not pass one through, so
:func:`bound_sockets` swaps the backend of the pools of an httpx transport it built.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

__all__ = ["Deadline", "OpenConnections", "bound_sockets"]

log = logging.getLogger("airflow_openrouter.transport")

_deadline: ContextVar[float | None] = ContextVar("airflow_openrouter_deadline", default=None)
# A body up to this size goes out in one write with its request's head (copying more would cost more
# than the second system call it saves).
_COMBINED_BYTES = 64 * 1024


class Deadline:
    """The end of one attempt (monotonic clock). ``with deadline:`` makes it bound the sockets."""

    __slots__ = ("_tokens", "end", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self._tokens: list[Any] = []

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def __enter__(self) -> Deadline:
        self._tokens.append(_deadline.set(self.end))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _deadline.reset(self._tokens.pop())


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` no longer than the current deadline leaves; ``error`` when it has passed."""
    end = _deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the request deadline passed")
    return left if timeout is None or timeout > left else timeout


class OpenConnections:
    """The network streams a client has open now; closed ones are forgotten (weakly held besides)."""

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self.aborted = False

    def __len__(self) -> int:
        return len(self._streams)

    def track(self, stream: Any) -> Any:
        self._streams.add(stream)
        if self.aborted:  # shut_down_all() ran while this connection was being opened
            _shut_down(stream)
        return stream

    def forget(self, stream: Any) -> None:
        self._streams.discard(stream)

    def shut_down_all(self) -> None:
        """Fail every request in flight now, and every later one. Only sets a flag and shuts sockets
        down, taking no lock: safe in a signal handler on the thread that is sending."""
        self.aborted = True
        for stream in list(self._streams):
            _shut_down(stream)


def _shut_down(stream: Any) -> None:
    sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed (fd -1), or not connected any more
            # socket.socket's own shutdown, also for an SSLSocket: SSLSocket.shutdown() would drop its
            # SSL object under the reading thread's feet.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Stream(httpcore.NetworkStream):
    """A connection whose every operation is bounded by the current deadline.

    httpcore writes a request's head and its body in two writes: a head is held until the next write,
    and sent with a small body in one system call (and one packet), or before the next read.
    """

    def __init__(self, inner: httpcore.NetworkStream, connections: OpenConnections | None) -> None:
        self._inner = inner
        self._connections = connections
        self._held = b""
        if connections is not None:
            connections.track(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held:
            self._flush(timeout)
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not self._held and buffer.endswith(b"\r\n\r\n"):
            self._held = buffer
            return
        if self._held and len(buffer) <= _COMBINED_BYTES:
            self._held, buffer = b"", self._held + buffer
        elif self._held:
            self._flush(timeout)
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def _flush(self, timeout: float | None) -> None:
        held, self._held = self._held, b""
        self._inner.write(held, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        if self._connections is not None:
            self._connections.forget(self)
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
        if self._connections is not None:
            self._connections.forget(self)  # the TLS stream owns the socket from now on
        return _Stream(tls, self._connections)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, connections: OpenConnections | None) -> None:
        self._inner = inner
        self._connections = connections

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream, self._connections)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _clamp(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _Stream(stream, self._connections)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_warned = False


def bound_sockets(transports: Iterable[Any], connections: OpenConnections | None = None) -> bool:
    """Give the pools of these httpx transports the bounded backend (``connections`` tracks their
    connections). Other transports (a test's ``MockTransport``) have no sockets and are left alone.
    Returns whether every HTTP transport got it."""
    global _warned
    complete = True
    for transport in transports:
        if not isinstance(transport, httpx.HTTPTransport):
            continue
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, _Backend):
            continue
        if isinstance(backend, httpcore.NetworkBackend):
            pool._network_backend = _Backend(backend, connections)  # type: ignore[union-attr]
        else:
            complete = False
    if not complete and not _warned:
        _warned = True
        log.warning(
            "This httpx/httpcore version does not let airflow-openrouter bound its sockets: "
            "request_deadline is not enforced and abort() cannot interrupt a request."
        )
    return complete
