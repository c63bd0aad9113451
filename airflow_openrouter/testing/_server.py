"""Run an ASGI app with uvicorn on a background thread (no signal handlers off the main thread)."""

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


class ServerThread:
    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise EmulatorAddressError(host, port, exc) from None
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            limit_concurrency=None,
            backlog=4096,
            timeout_keep_alive=30,
            # A client that stays connected to a slow stream must not hold stop() for long.
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"openrouter-emulator-{self.port}", daemon=True
        )
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self, timeout: float = 10.0) -> None:
        logging.getLogger("uvicorn.error").addFilter(_filter)
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
        self._sock.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started
