"""One worker process of an emulator started with ``workers=N`` (N > 1); started by ``_workers``.

``python -m airflow_openrouter.testing._worker_process CONTROL_FD OUTBOX_FD CELLS_FD``: the control
connection brings the ``WorkerConfig`` (the API keys travel there, never on a command line) and, when it
closes, tells the worker to stop; the outbox carries every request the worker recorded and every
generation it made to the main process, *before* the worker answers, so a test that has its answer
finds the request in the journal; the cells are the shared settings and spend (``_shared``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from ._account import Account
from ._clock import Clock
from ._faults import FaultBook
from ._journal import Journal, RecordedRequest
from ._shared import SharedCells
from ._state import EmulatorState, Latency


@dataclass(frozen=True)
class WorkerConfig:
    host: str
    port: int
    upstream: str  # the main process's private base URL
    api_keys: tuple[str, ...] | None
    manual_clock: bool
    slot: int  # this worker's spend slot
    processes: int


class _Outbox:
    """Sends (kind, payload) to the main process; one writer per connection, in the event loop."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def send(self, kind: str, payload: Any) -> None:
        with self._lock:
            self._connection.send((kind, payload))


class _ForwardedJournal(Journal):
    def __init__(self, outbox: _Outbox) -> None:
        super().__init__()
        self._outbox = outbox

    def record(self, entry: RecordedRequest) -> None:
        self._outbox.send("request", entry)


class _ForwardedAccount(Account):
    def __init__(self, cells: SharedCells, slot: int, outbox: _Outbox) -> None:
        super().__init__(cells=cells, slot=slot, owner=False)
        self._outbox = outbox

    def record_generation(self, record: dict[str, Any]) -> None:
        self._outbox.send("generation", record)


class WorkerState:
    """What the app reads in a worker: the shared cells, and a journal and account that forward."""

    def __init__(self, config: WorkerConfig, cells: SharedCells, outbox: _Outbox) -> None:
        self.api_keys = frozenset(config.api_keys) if config.api_keys is not None else None
        self.cells = cells
        self.latency = Latency(cells)
        self.clock = Clock(config.manual_clock, cells, owner=False)
        self.account = _ForwardedAccount(cells, config.slot, outbox)
        self.journal = _ForwardedJournal(outbox)
        # Never holds a fault (while one is queued, every request goes to the main process); private
        # cells, so that it does not publish a fault count over the main process's.
        self.faults = FaultBook(SharedCells())

    @property
    def token_delay_s(self) -> float:
        return self.cells.token_delay_ms / 1000


def main(argv: list[str]) -> int:
    from ._app import build_app
    from ._proxy import ForwardingApp
    from ._server import bind, uvicorn_server

    control = Connection(int(argv[0]))
    outbox = _Outbox(Connection(int(argv[1]), readable=False))
    config: WorkerConfig = control.recv()
    cells = SharedCells(config.processes, fd=int(argv[2]))
    state = WorkerState(config, cells, outbox)
    # The app only reads the attributes WorkerState has on the routes a worker serves.
    app = ForwardingApp(build_app(cast(EmulatorState, state)), config.upstream, cells)
    sock = bind(config.host, config.port, reuse_port=True)
    server = uvicorn_server(app)

    def watch_control() -> None:
        while not server.started:
            time.sleep(0.005)
        control.send("ready")
        with contextlib.suppress(EOFError, OSError):
            control.recv()  # anything, or EOF when the main process stops or dies
        server.should_exit = True

    threading.Thread(target=watch_control, name="emulator-worker-control", daemon=True).start()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
