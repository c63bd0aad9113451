"""``make demo``: run example 2 (bulk extraction through the Batch API) end to end and show the outcome.

* Without ``OPENROUTER_API_KEY``: a local OpenRouter emulator answers (no key, no cost, no network).
* With ``OPENROUTER_API_KEY`` set: the real OpenRouter API, on the first 3 invoices only.

The DAG runs with ``airflow dags test`` in a fresh, temporary AIRFLOW_HOME (SQLite), exactly as a
user would test a DAG before deploying it. Exit status: 0 only if the run and every document succeeded.

Run it with ``make demo`` (which creates ``.venv`` first) or ``.venv/bin/python -m example_dags.demo``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

DAG_ID = "example_openrouter_batch_extraction"
TASK_ID = "extract_fields"
EXAMPLES = Path(__file__).resolve().parent
REAL_API_DOCUMENTS = 3  # with a real key, keep the bill to a fraction of a cent
# Log lines worth showing while the DAG runs (everything goes to the log file).
PROGRESS = re.compile(
    r"Submitted batch|Waiting for OpenRouter|Batch\(es\)|Re-attaching|Wrote \d+ rows|Task failed|ERROR|Traceback"
)
TASK_EVENT = re.compile(r"\[DAG TEST\] (starting|end task) task_id=(\w+)")
LOG_LINE = re.compile(r"^\S+\s+\[\s*(\w+)\s*\]\s+(.*?)(\s+\[[\w.]+\](\s+\S+=\S+)*)?\s*$")


def main() -> int:
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="airflow-openrouter-demo-"))
    airflow = Path(sys.executable).parent / "airflow"
    api_key = os.environ.get("OPENROUTER_API_KEY")
    env = _airflow_env(home, real_api=bool(api_key))

    with ExitStack() as stack:
        if api_key:
            _say(
                f"OPENROUTER_API_KEY is set: using the REAL OpenRouter API on the first {REAL_API_DOCUMENTS} "
                "invoices (a Batch API job: it may take minutes, and it is billed to your key)."
            )
            conf = {"max_documents": REAL_API_DOCUMENTS}
        else:
            from airflow_openrouter.testing import OpenRouterEmulator

            # Batches move through validating -> in_progress -> finalizing in a few seconds.
            emulator = stack.enter_context(OpenRouterEmulator(batch_durations=(1.0, 3.0, 1.0)))
            env.update(emulator.connection_env())
            _say(
                f"No OPENROUTER_API_KEY: using the local OpenRouter emulator at {emulator.base_url} "
                "(no key, no cost). Set OPENROUTER_API_KEY to run against the real API."
            )
            conf = {}

        _step(1, f"Preparing a fresh Airflow home in {home} (airflow db migrate)")
        migrate = subprocess.run(
            [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, check=False
        )
        if migrate.returncode != 0:
            print(migrate.stdout[-3000:], migrate.stderr[-3000:], sep="\n")
            return _fail("airflow db migrate failed")

        _step(2, f"Running the DAG {DAG_ID} with `airflow dags test`")
        log_file = home / "dags-test.log"
        returncode = _run_dag_test(airflow, env, conf, log_file)

    _step(3, "Outcome")
    db = home / "airflow.db"
    run_state, task_states = _run_states(db)
    manifest = _xcom(db, TASK_ID)
    print(f"  DAG run:       {run_state}  ({', '.join(f'{t} {s}' for t, s in task_states.items())})")
    if manifest is None:
        print(f"  No manifest was produced. Full log: {log_file}")
        _tail(log_file)
        return _fail("the batch task did not finish")

    counts = ", ".join(f"{status} {n}" for status, n in manifest["counts"].items() if n) or "none"
    print(f"  Documents:     {manifest['total']} ({counts})")
    print(
        f"  Tokens:        {manifest['prompt_tokens']} prompt + {manifest['completion_tokens']} completion "
        f"= {manifest['total_tokens']}"
    )
    price_note = "billed by OpenRouter" if api_key else "as the emulator prices them, nothing is billed"
    print(f"  Cost:          ${manifest['cost_usd']:.6f} ({price_note})")
    print(f"  Batch:         {', '.join(manifest['batch_ids'])} ({manifest['model']})")
    results = _local_path(manifest["output_uri"])
    print(f"  Results file:  {results}")
    print(f"  Full log:      {log_file}")
    print("  First rows:" + ("" if api_key else " (the emulator invents schema-valid values)"))
    for line in _first_lines(results, 3):
        row = json.loads(line)
        shown = json.dumps(row["output"] if row["status"] == "succeeded" else row["error"])
        print(f"    {row['custom_id']} [{row['status']}] {shown[:150]}")

    succeeded = manifest["counts"]["succeeded"] == manifest["total"]
    elapsed = time.monotonic() - started
    if returncode != 0 or run_state != "success" or not succeeded:
        return _fail(f"something failed (see above; full log: {log_file})")
    print(f"\nDemo finished in {elapsed:.0f} s: every document extracted and validated.")
    return 0


def _airflow_env(home: Path, *, real_api: bool) -> dict[str, str]:
    # A clean slate: none of the caller's Airflow settings or connections leak into the demo.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__OPENROUTER__RESULTS_PATH": f"file://{home / 'results'}",
            "AIRFLOW__OPENROUTER__POLL_INTERVAL": "15" if real_api else "1",
        }
    )
    return env


def _run_dag_test(airflow: Path, env: dict[str, str], conf: dict[str, Any], log_file: Path) -> int:
    """Run ``airflow dags test``, echo the interesting lines, keep everything in *log_file*."""
    command = [str(airflow), "dags", "test", DAG_ID, "--conf", json.dumps(conf)]
    with (
        log_file.open("w") as log,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if task := TASK_EVENT.search(line):
                verb = "running" if task.group(1) == "starting" else "done"
                print(f"    task {task.group(2)}: {verb}", flush=True)
            elif PROGRESS.search(line):
                match = LOG_LINE.match(line.strip())
                print(f"      {match.group(2) if match else line.strip()}"[:160], flush=True)
    return proc.returncode


def _run_states(db: Path) -> tuple[str, dict[str, str]]:
    with sqlite3.connect(db) as conn:
        run = conn.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()
        if run is None:
            return "not created", {}
        tasks = conn.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (DAG_ID, run[0])
        ).fetchall()
    return run[1], {task_id: state or "none" for task_id, state in tasks}


def _xcom(db: Path, task_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (DAG_ID, task_id),
        ).fetchone()
    return json.loads(row[0]) if row else None


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _first_lines(path: Path, count: int) -> list[str]:
    with path.open() as results:
        return list(itertools.islice(results, count))


def _tail(path: Path, lines: int = 40) -> None:
    print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _step(number: int, title: str) -> None:
    print(f"\n[{number}/3] {title}", flush=True)


def _fail(reason: str) -> int:
    print(f"\nDemo FAILED: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
