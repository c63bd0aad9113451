"""A real Airflow deployment in a temporary AIRFLOW_HOME, for end-to-end tests.

``AirflowStack`` starts what a user runs in production, minus the distributed parts:

* ``python -m airflow_openrouter.testing`` emulators (the OpenRouter API the DAGs talk to),
* ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` with LocalExecutor on SQLite.

Every process is started in its own session (``setsid``), so its whole process group -- LocalExecutor
workers, the triggerer's runner subprocess, uvicorn workers -- can be signalled at once. Teardown sends
SIGTERM to each group, waits, then SIGKILLs what is left. A small reaper process, also in its own session,
holds the list of groups and kills them if the test process dies without tearing down (SIGKILL, a
crashed interpreter): it notices when its stdin pipe from the test process closes.

The REST API v2 is used the way a user's script would: a JWT from ``POST /auth/token`` (simple auth
manager, with a password file written here), then ``/api/v2/...`` with ``Authorization: Bearer``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
E2E_DAGS = Path(__file__).resolve().parent / "dags"
EXAMPLE_DAGS = REPO / "example_dags"
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

T = TypeVar("T")

# Reads process-group ids from stdin, one per line. When stdin closes (the test process exited, however
# it exited), SIGTERM every group, give them a few seconds, then SIGKILL. Killing an already-gone group is
# harmless (ESRCH is ignored), so normal teardown and the reaper never fight.
_REAPER = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = []
for line in sys.stdin:
    line = line.strip()
    if line.isdigit():
        groups.append(int(line))
def send(sig):
    alive = False
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
    return alive
if send(signal.SIGTERM):
    time.sleep(8)
    send(signal.SIGKILL)
"""


class StackError(AssertionError):
    """The stack did not reach the expected state in time (or a component died)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Deadline:
    """A time budget shared by every wait of one stack, so the whole module stays bounded."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def cap(self, timeout: float) -> float:
        return max(0.0, min(timeout, self.remaining()))


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session=True: the child leads its own group

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 80) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])


class AirflowStack:
    """Emulators plus the four Airflow components, started and stopped together."""

    def __init__(self, budget_s: float = 360.0, home: Path | None = None) -> None:
        self.deadline = Deadline(budget_s)
        self.home = home or Path(tempfile.mkdtemp(prefix="airflow-openrouter-e2e-"))
        self.results_dir = self.home / "results"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.processes: dict[str, Process] = {}
        self.emulators: dict[str, str] = {}  # name -> base_url
        self._password = secrets.token_urlsafe(12)
        self._reaper: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(
        self,
        emulators: dict[str, Iterable[float]],
        dag_ids: Iterable[str] = (),
        extra_env: dict[str, str] | None = None,
    ) -> AirflowStack:
        """Start emulators (name -> batch durations), migrate the DB, start the components, wait for DAGs.

        Each emulator ``name`` becomes the connection ``openrouter_<name>`` (``default`` ->
        ``openrouter_default``).
        """
        self._start_reaper()
        for name, durations in emulators.items():
            self.emulators[name] = self._start_emulator(name, durations)
        self.env = self._environment(extra_env or {})
        self._run_cli(["db", "migrate"], timeout=120)
        for component in COMPONENTS:
            self._spawn(component, [str(AIRFLOW_BIN), component])
        self.wait_healthy()
        for dag_id in dag_ids:
            self.wait_for_dag(dag_id)
        return self

    def stop(self, remove_home: bool = False) -> None:
        """SIGTERM every process group, wait up to 15 s in total, SIGKILL the rest. Safe to call twice.

        ``remove_home`` deletes the temporary AIRFLOW_HOME afterwards; keep it when something failed.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        for proc in self.processes.values():
            _killpg(proc.pgid, signal.SIGTERM)
        end = time.monotonic() + 15
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, end - time.monotonic()))
        for proc in self.processes.values():
            # The leader may be gone while its children (workers) linger: always sweep the group.
            _killpg(proc.pgid, signal.SIGKILL)
            if proc.alive():
                proc.popen.wait(timeout=5)
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()  # the reaper sweeps once more, finds nothing, exits
            self._reaper.wait(timeout=15)
            self._reaper = None
        if remove_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- processes ---------------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.home / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                env=env or self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Process(name, popen, log)
        self.processes[name] = proc
        assert self._reaper is not None and self._reaper.stdin is not None
        self._reaper.stdin.write(f"{proc.pgid}\n".encode())
        self._reaper.stdin.flush()
        return proc

    def _start_emulator(self, name: str, durations: Iterable[float]) -> str:
        env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
        argv = [sys.executable, "-m", "airflow_openrouter.testing", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--batch-durations", *(str(d) for d in durations)]
        proc = self._spawn(f"emulator-{name}", argv, env=env)
        pattern = re.compile(rb"listening on (http://\S+)")

        def listening() -> str | None:
            match = pattern.search(proc.log.read_bytes())
            return match.group(1).decode() if match else None

        return self.wait_until(listening, timeout=30, what=f"emulator {name!r} to listen")

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        # Start from a clean slate: the test session's own AIRFLOW__* settings, connections and a
        # developer's API key must not leak into the deployment under test.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_HOME")) and k != "OPENROUTER_API_KEY"
        }
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self._password}))
        bundles = [
            {
                "name": "examples",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(EXAMPLE_DAGS), "refresh_interval": 3},
            },
            {
                "name": "e2e",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(E2E_DAGS), "refresh_interval": 3},
            },
        ]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                # Room for the four shards of the sharded example at once, beside a task still finishing.
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # Paused until a test unpauses it: the scheduled examples must not run by themselves.
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                # Workers reach the Execution API over HTTP; it must point at the port we chose.
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                # Log servers bind every interface on fixed ports by default: pick free ones.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # Parse new files within seconds, with one parser process (the machine is shared).
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__OPENROUTER__RESULTS_PATH": f"file://{self.results_dir}",
                "AIRFLOW__OPENROUTER__POLL_INTERVAL": "2",
            }
        )
        for name, base_url in self.emulators.items():
            conn_id = "openrouter_default" if name == "default" else f"openrouter_{name}"
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {"conn_type": "openrouter", "host": base_url, "password": "sk-or-e2e-key"}
            )
        env.update(extra)
        return env

    def _run_cli(self, args: list[str], timeout: float = 60) -> str:
        done = subprocess.run(
            [str(AIRFLOW_BIN), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=self.deadline.cap(timeout),
        )
        if done.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    # -- waiting -----------------------------------------------------------------------------------

    def wait_until(self, probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
        """Poll ``probe`` until it returns something truthy; fail fast if a process died."""
        end = time.monotonic() + self.deadline.cap(timeout)
        last_error: Exception | None = None
        while True:
            for proc in self.processes.values():
                if not proc.alive():
                    raise StackError(f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}")
            try:
                value = probe()
            except (httpx.HTTPError, OSError) as exc:  # not up yet
                value, last_error = None, exc
            if value:
                return value
            if time.monotonic() >= end:
                budget = "the e2e time budget ran out" if self.deadline.remaining() <= 0 else "timed out"
                raise StackError(f"{budget} waiting for {what} (last error: {last_error!r})")
            time.sleep(every)

    def wait_healthy(self, timeout: float = 150) -> dict[str, Any]:
        """api-server answering, and scheduler, triggerer and dag-processor heartbeating."""

        def healthy() -> dict[str, Any] | None:
            resp = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5)
            if resp.status_code != 200:
                return None
            body = resp.json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ok = all((body.get(p) or {}).get("status") == "healthy" for p in parts if p in body)
            return body if ok else None

        return self.wait_until(healthy, timeout, "all components to report healthy")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        def parsed() -> dict[str, Any] | None:
            resp = self._call("GET", f"/dags/{dag_id}")
            return resp.json() if resp.status_code == 200 else None

        return self.wait_until(parsed, timeout, f"DAG {dag_id!r} to be parsed", every=1)

    def unpause(self, dag_id: str) -> None:
        resp = self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        if resp.status_code >= 400:
            raise StackError(f"unpausing {dag_id} failed: {resp.status_code} {resp.text}")

    # -- REST API v2 ---------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One REST call, repeated while SQLite is locked: four processes write one SQLite file, and on a
        loaded machine the api-server sometimes answers 500 "Database error" for a busy database."""
        for _ in range(5):
            resp = self.api.request(method, path, **kwargs)
            if resp.status_code < 500 or self.deadline.remaining() <= 0:
                return resp
            time.sleep(1)
        return resp

    @property
    def api(self) -> httpx.Client:
        if self._client is None:
            resp = httpx.post(
                f"{self.api_url}/auth/token",
                json={"username": "admin", "password": self._password},
                timeout=10,
            )
            resp.raise_for_status()
            token = resp.json()["access_token"]
            self._client = httpx.Client(
                base_url=f"{self.api_url}/api/v2",
                headers={"Authorization": f"Bearer {token}"},
                timeout=15,
            )
        return self._client

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause the DAG and trigger a run as the UI does: ``logical_date`` None (no ``ds``)."""
        self.unpause(dag_id)
        resp = self._call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        if resp.status_code >= 400:
            raise StackError(f"triggering {dag_id} failed: {resp.status_code} {resp.text}")
        return resp.json()["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        resp = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        resp.raise_for_status()
        return resp.json()

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        resp = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        resp.raise_for_status()
        return resp.json()

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        resp = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        resp.raise_for_status()
        return {ti["task_id"]: ti for ti in resp.json()["task_instances"]}

    def mapped_task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """The task instances of a mapped task, by map index."""
        resp = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/listMapped")
        resp.raise_for_status()
        return sorted(resp.json()["task_instances"], key=lambda ti: ti["map_index"])

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int | None = None
    ) -> Any:
        params = {} if map_index is None else {"map_index": map_index}
        resp = self._call(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}", params=params
        )
        resp.raise_for_status()
        return resp.json()["value"]

    def emulator_get(self, name: str, path: str) -> dict[str, Any]:
        """GET from an emulator's API, as the deployment's connection would."""
        resp = httpx.get(
            f"{self.emulators[name]}{path}", headers={"Authorization": "Bearer sk-or-e2e-key"}, timeout=10
        )
        resp.raise_for_status()
        return resp.json()

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, new_state: str) -> None:
        """What "Mark failed/success" in the UI sends."""
        resp = self._call(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": new_state}
        )
        if resp.status_code >= 400:
            raise StackError(f"setting {task_id} to {new_state} failed: {resp.status_code} {resp.text}")

    def wait_for_deferral(
        self, dag_id: str, run_id: str, task_id: str, timeout: float = 90
    ) -> dict[str, Any]:
        """Wait until the task is ``deferred`` with a trigger row, and return that task instance."""

        def deferred() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id)
            if ti["state"] in ("failed", "upstream_failed", "success", "skipped"):
                raise StackError(f"{task_id} reached {ti['state']} without being seen deferred")
            return ti if ti["state"] == "deferred" and ti.get("trigger") else None

        return self.wait_until(deferred, timeout, f"{dag_id}.{task_id} to be deferred", every=0.3)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the run finishes; return it with ``task_states`` (task_id -> state) added."""

        def finished() -> dict[str, Any] | None:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            # Fail fast instead of sitting out a retry_delay: a retry already means something broke.
            states = {t: ti["state"] for t, ti in self.task_instances(dag_id, run_id).items()}
            if {"up_for_retry", "failed"} & set(states.values()):
                raise StackError(f"run {run_id} of {dag_id} has a failed try: {states}")
            return None

        run = self.wait_until(finished, timeout, f"run {run_id} of {dag_id} to finish", every=1)
        run["task_states"] = {t: ti["state"] for t, ti in self.task_instances(dag_id, run_id).items()}
        return run

    # -- diagnostics -------------------------------------------------------------------------------

    def task_logs(self, dag_id: str | None = None) -> list[Path]:
        pattern = f"dag_id={dag_id}/**/*" if dag_id else "**/*.log*"
        return sorted(p for p in (self.home / "logs").glob(pattern) if p.is_file())

    def read_task_logs(self, dag_id: str, task_id: str) -> str:
        files = [p for p in self.task_logs(dag_id) if f"task_id={task_id}" in str(p)]
        return "\n".join(p.read_text(errors="replace") for p in files)

    def diagnostics(self, lines: int = 60) -> str:
        parts = [f"AIRFLOW_HOME={self.home}"]
        for proc in self.processes.values():
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"----- {proc.name} ({state}), last {lines} lines of {proc.log} -----")
            parts.append(proc.tail(lines))
        for path in self.task_logs()[-8:]:
            parts.append(f"----- task log {path.relative_to(self.home)} (last {lines} lines) -----")
            parts.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
