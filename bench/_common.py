"""What the benchmarks share: the row each one reports, the emulator in its own process, and workers.

Measured clients run in fresh processes (:func:`run_worker`), and the emulator in another one
(:class:`EmulatorProcess`), so neither the server's CPU nor the harness's own imports and garbage count
against the client being measured, and a peer SDK can be measured from its own virtualenv.

This module imports nothing from ``airflow_openrouter``: it is also imported by workers running in
the peers' virtualenv, where the provider is not installed.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
EMULATOR_API_KEY = "sk-or-emulator-key"  # any non-empty key is accepted by the emulator's CLI
RESULT_MARKER = "BENCH-RESULT "


# --- rows ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A goal on a row's figure or ratio: ``value op bound``, or ``within`` a fraction of 1."""

    on: Literal["figure", "ratio"]
    op: Literal["<=", ">=", "within"]
    bound: float
    text: str

    def holds(self, figure: float, ratio: float | None) -> bool | None:
        value = figure if self.on == "figure" else ratio
        if value is None:
            return None
        if self.op == "<=":
            return value <= self.bound
        if self.op == ">=":
            return value >= self.bound
        return abs(value - 1.0) <= self.bound


@dataclass
class Row:
    """One line of the results table. ``figure`` is ``None`` when the benchmark could not run (``note``
    says why); ``ratio`` is figure / baseline unless the benchmark defines it otherwise (``note``)."""

    benchmark: str
    name: str
    unit: str
    figure: float | None
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    goal: Goal | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    failed: bool = False  # the harness itself broke (unlike "not available": a missing dependency)

    @property
    def holds(self) -> bool | None:
        if self.figure is None or self.goal is None:
            return None
        return self.goal.holds(self.figure, self.ratio)

    @property
    def status(self) -> str:
        if self.failed:
            return "FAILED"
        if self.figure is None:
            return "not available"
        return {True: "holds", False: "MISSED", None: "reported"}[self.holds]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["goal"] = self.goal.text if self.goal else None
        data["holds"] = self.holds
        data["status"] = self.status
        return data


def unavailable(benchmark: str, name: str, unit: str, reason: str, goal: Goal | None = None) -> Row:
    return Row(benchmark, name, unit, None, goal=goal, note=reason)


def ratio(figure: float, baseline: float) -> float | None:
    return figure / baseline if baseline else None


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --- the emulator in its own process ---------------------------------------------------------------


class EmulatorProcess:
    """``python -m airflow_openrouter.testing`` on a free port, for the length of a ``with`` block.

    The account gets ample credits (the default $100 would run out at 20,000 two-kilobyte answers).
    """

    def __init__(
        self, *, latency_ms: float = 0, batch_durations: Sequence[float] = (0, 0, 0), credits_usd: float = 1e6
    ) -> None:
        self._args = [
            "--port",
            "0",
            "--latency-ms",
            str(latency_ms),
            "--batch-durations",
            *map(str, batch_durations),
        ]
        self._credits_usd = credits_usd
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> EmulatorProcess:
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-scenario-") as scenario:
            json.dump({"credits": self._credits_usd}, scenario)
            scenario.flush()
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "airflow_openrouter.testing",
                    *self._args,
                    "--scenario",
                    scenario.name,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                cwd=REPO,
            )
            assert self._process.stdout is not None
            # Read once the server listens, so only then may the scenario file go.
            line = self._process.stdout.readline()  # "OpenRouter emulator listening on <url>"
        if "listening on" not in line:
            self.__exit__()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[-1].strip()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def endpoint(self) -> dict[str, Any]:
        """What a worker needs to reach it (JSON-friendly)."""
        return {"base_url": self.base_url, "api_key": EMULATOR_API_KEY}


def connection_env(base_url: str, api_key: str, conn_id: str = "openrouter_default") -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` pointing at an emulator (the JSON form works without an Airflow DB)."""
    value = json.dumps({"conn_type": "openrouter", "host": base_url, "password": api_key})
    return {f"AIRFLOW_CONN_{conn_id.upper()}": value}


# --- workers: one measurement in a fresh process ---------------------------------------------------


def run_worker(
    target: Callable[..., Any],
    python: str | Path = sys.executable,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
    **kwargs: Any,
) -> Any:
    """Call ``target(**kwargs)`` in a fresh ``python`` process and return its JSON-able result.

    ``target`` must be a module-level function of a ``bench`` module. Its process inherits this
    environment plus ``env``, with the repository on ``PYTHONPATH`` so ``bench`` imports anywhere.
    """
    spec = f"{target.__module__}:{target.__qualname__}"
    try:
        process = subprocess.run(
            [str(python), "-m", "bench._worker", spec, json.dumps(kwargs)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        # Not the exception's own text: it quotes the whole command line, arguments and all.
        raise RuntimeError(f"{spec} did not finish within {timeout:g} s") from None
    for line in reversed(process.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = (process.stderr or process.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"{spec} failed (exit {process.returncode}): " + " | ".join(tail))


class Stopwatch:
    """Wall and CPU time of this process over a block."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


class GcPauses:
    """The pauses of Python's cyclic garbage collector over a block: a full collection walks every
    object Airflow's imports left on the heap, stopping the event loop meanwhile."""

    def __enter__(self) -> GcPauses:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started = 0.0
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def summary(self) -> dict[str, Any]:
        full = [seconds for generation, seconds in self.pauses if generation == 2]
        return {
            "collections": len(self.pauses),
            "full_collections": len(full),
            "longest_pause_s": max((seconds for _, seconds in self.pauses), default=0.0),
            "total_pause_s": sum(seconds for _, seconds in self.pauses),
        }
