"""Worker processes for ``OpenRouterEmulator(workers=N)``: N processes answer on one port.

The main process and N - 1 worker processes listen on the same port (``SO_REUSEPORT``: the kernel
spreads new connections over them). Workers answer the stateless routes themselves (chat completions,
embeddings, model lists) and relay everything else to the main process (``_proxy``), which keeps the
batches. What stays exact with workers:

* spend and credits: every process charges the shared cells, so ``/key``, ``/credits``, ``billed_usd``
  and a 402 on an empty account see every generation at once;
* the journal and ``GET /generation``: a worker sends each request it records and each generation it
  makes to the main process before it answers; reading the journal (or a generation) first collects
  whatever has arrived, so a test that has its answer finds its request. Entries are ordered by arrival;
* latency, token delay, the clock (also a manual one) and credits set on the emulator reach every worker;
* faults: while any HTTP or chat fault is queued, workers relay every request to the main process, so
  faults are consumed in order and exactly once. A fault applies to requests that arrive after it was
  queued.

Workers are separate interpreters started with ``python -m`` (not ``multiprocessing``), so nothing of
the caller's ``__main__`` runs again in them; each costs about 0.2 s to start and 30 MB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path
from typing import Any

from ._state import EmulatorState
from ._worker_process import WorkerConfig

_START_TIMEOUT_S = 60.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class _Worker:
    def __init__(self, process: subprocess.Popen[bytes], control: Connection, inbox: Connection) -> None:
        self.process, self.control, self.inbox = process, control, inbox


class WorkerPool:
    def __init__(self, state: EmulatorState, processes: int) -> None:
        self._state = state
        self._processes = processes
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._collector: threading.Thread | None = None

    def start(self, host: str, port: int, upstream: str) -> None:
        cells_fd = self._state.cells.fd
        assert cells_fd is not None, "workers need shared cells"
        try:
            for slot in range(1, self._processes):
                self._workers.append(self._spawn(host, port, upstream, slot, cells_fd))
            for worker in self._workers:
                self._await_ready(worker)
        except BaseException:
            self.stop()
            raise
        self._state.collect = self.collect
        self._collector = threading.Thread(target=self._collect_forever, name="emulator-workers", daemon=True)
        self._collector.start()

    def _spawn(self, host: str, port: int, upstream: str, slot: int, cells_fd: int) -> _Worker:
        control, child_control = Pipe(duplex=True)
        inbox, child_outbox = Pipe(duplex=False)
        fds = (child_control.fileno(), child_outbox.fileno(), cells_fd)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_openrouter.testing._worker_process", *map(str, fds)],
            pass_fds=fds,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child_control.close()
        child_outbox.close()
        api_keys = self._state.api_keys
        control.send(
            WorkerConfig(
                host=host,
                port=port,
                upstream=upstream,
                api_keys=tuple(sorted(api_keys)) if api_keys is not None else None,
                manual_clock=self._state.manual_clock,
                slot=slot,
                processes=self._processes,
            )
        )
        return _Worker(process, control, inbox)

    def _await_ready(self, worker: _Worker) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not worker.control.poll(0.05):
            if worker.process.poll() is not None:
                raise RuntimeError(
                    f"an emulator worker process exited at start (status {worker.process.returncode})"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("an emulator worker process did not start in time")
        if worker.control.recv() != "ready":
            raise RuntimeError("an emulator worker process did not start")

    # -- collecting what workers send -------------------------------------------------------------

    def collect(self) -> None:
        """Take in everything the workers have sent so far (journal entries, generations)."""
        with self._lock:
            for worker in self._workers:
                if worker.inbox.closed:
                    continue
                try:
                    while worker.inbox.poll():
                        self._dispatch(worker.inbox.recv())
                except (EOFError, OSError):
                    worker.inbox.close()  # that worker is gone (its socket takes no connections)

    def _dispatch(self, message: tuple[str, Any]) -> None:
        kind, payload = message
        if kind == "request":
            self._state.journal.record_elsewhere(payload)
        elif kind == "generation":
            self._state.account.record_generation(payload)

    def _collect_forever(self) -> None:
        while not self._stopping.is_set():
            inboxes = [w.inbox for w in self._workers if not w.inbox.closed]
            if not inboxes:
                return
            try:
                ready = wait(inboxes, timeout=0.2)
            except (OSError, ValueError):  # an inbox closed meanwhile (stop())
                continue
            if ready:
                self.collect()

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        for worker in self._workers:
            worker.control.close()  # EOF: the worker stops serving and exits
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        if self._collector is not None:
            self._collector.join(timeout)
        self.collect()
        with self._lock:
            for worker in self._workers:
                worker.inbox.close()
            self._workers.clear()
        self._state.collect = lambda: None

    @property
    def alive(self) -> bool:
        return all(worker.process.poll() is None for worker in self._workers)
