"""Run an ASGI app with uvicorn on a background thread (no signal handlers off the main thread).

With worker processes (``_workers``) the public socket is bound with ``SO_REUSEPORT``, so that the
kernel spreads new connections over the main process and its workers, and the main process also listens
on a private loopback socket where the workers hand over what they do not serve themselves.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import Any

# uvicorn logs this when an app deliberately stops mid-body, which is exactly what the
# drop-connection fault does; it is not an error of the emulator.
_EXPECTED_ERRORS = ("ASGI callable returned without completing response.",)


class _ExpectedErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _EXPECTED_ERRORS


_filter = _ExpectedErrors()


class EmulatorAddressError(OSError):
    """The emulator cannot listen on the address it was given (most often: the port is in use)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        reason = "the port is already in use" if cause.errno == errno.EADDRINUSE else cause.strerror
        super().__init__(
            cause.errno,
            f"cannot listen on {host}:{port}: {reason or cause}. "
            "Stop what is using it, or pick another port (port 0 picks a free one).",
        )


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        if not hasattr(socket, "SO_REUSEPORT"):
            sock.close()
            raise RuntimeError("workers > 1 needs SO_REUSEPORT, which this platform lacks: use workers=1")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EmulatorAddressError(host, port, exc) from None
    return sock


def uvicorn_server(app: Any) -> Any:
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_filter)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,  # a local server: no X-Forwarded-* to trust, and a middleware less per request
        limit_concurrency=None,
        backlog=4096,
        timeout_keep_alive=30,
        # A client that stays connected to a slow stream must not hold stop() for long.
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


class ServerThread:
    def __init__(self, app: Any, host: str, port: int, *, reuse_port: bool = False) -> None:
        self._sock = bind(host, port, reuse_port=reuse_port)
        self._sockets = [self._sock]
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn_server(app)
        self._thread = threading.Thread(
            target=self._run, name=f"openrouter-emulator-{self.port}", daemon=True
        )
        self._error: BaseException | None = None

    def listen_privately(self) -> str:
        """Also serve a loopback socket of its own (before ``start()``); its base URL."""
        private = bind("127.0.0.1", 0)
        self._sockets.append(private)
        return f"http://127.0.0.1:{private.getsockname()[1]}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=self._sockets)
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"OpenRouter emulator failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("OpenRouter emulator did not start in time")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        for sock in self._sockets:
            sock.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started
