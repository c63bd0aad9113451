"""End to end on real Airflow processes: deferrable tasks defer to the triggerer and resume.

Runs are triggered through the REST API, as from the UI: ``logical_date`` is None, which is what breaks
prompts that use ``{{ ds }}``. The deployment and its emulators are described in ``stack.py``.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
from airflow.sdk import ObjectStoragePath

from .stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

BATCH_TRIGGER = "airflow_openrouter.triggers.batch.OpenRouterBatchTrigger"
AIRFLOW_VERSION = tuple(int(part) for part in version("apache-airflow-core").split(".")[:2])


def rows_at(uri: str) -> list[str]:
    path = ObjectStoragePath(uri)
    assert path.exists(), f"results file {uri} is missing"
    return path.read_text().splitlines()


def test_core_sensor_defers_and_succeeds(airflow_stack: AirflowStack) -> None:
    """The harness itself: a core deferrable sensor goes deferred -> success on the real triggerer."""
    run_id = airflow_stack.trigger("e2e_core_deferral")

    ti = airflow_stack.wait_for_deferral("e2e_core_deferral", run_id, "wait")
    assert ti["trigger"]["classpath"].endswith("DateTimeTrigger")  # what TimeDeltaTrigger serializes to

    run = airflow_stack.wait_for_run("e2e_core_deferral", run_id)
    assert run["state"] == "success", run
    assert run["task_states"] == {"wait": "success"}


def test_batch_extraction_waits_in_the_triggerer_and_resumes(airflow_stack: AirflowStack) -> None:
    """Example 2: the batch task defers with an OpenRouterBatchTrigger row, resumes, writes its rows."""
    dag_id = "example_openrouter_batch_extraction"
    run_id = airflow_stack.trigger(dag_id)

    ti = airflow_stack.wait_for_deferral(dag_id, run_id, "extract_fields")
    assert ti["trigger"]["classpath"] == BATCH_TRIGGER

    run = airflow_stack.wait_for_run(dag_id, run_id)
    assert run["state"] == "success", run
    assert run["logical_date"] is None  # triggered like the UI does
    assert run["task_states"] == {
        "list_invoices": "success",
        "extract_fields": "success",
        "report": "success",
    }
    manifest = airflow_stack.xcom(dag_id, run_id, "extract_fields")
    assert manifest["counts"]["succeeded"] == manifest["total"] == 24
    assert len(rows_at(manifest["output_uri"])) == 24
    assert str(airflow_stack.results_dir) in manifest["output_uri"]  # under [openrouter] results_path
    # The trigger ran in the triggerer process, not on a worker.
    trigger_logs = [p for p in airflow_stack.task_logs(dag_id) if ".trigger." in p.name]
    assert any("Waiting for OpenRouter batch" in p.read_text() for p in trigger_logs), trigger_logs


def test_submit_then_sense_with_a_deferrable_sensor(airflow_stack: AirflowStack) -> None:
    """Example 3: the sensor defers on the batch the operator submitted; the results are collected."""
    dag_id = "example_openrouter_batch_sensor"
    run_id = airflow_stack.trigger(dag_id)

    ti = airflow_stack.wait_for_deferral(dag_id, run_id, "wait_for_triage")
    assert ti["trigger"]["classpath"] == BATCH_TRIGGER

    run = airflow_stack.wait_for_run(dag_id, run_id)
    assert run["state"] == "success", run
    assert set(run["task_states"].values()) == {"success"}, run["task_states"]
    submitted = airflow_stack.xcom(dag_id, run_id, "submit_triage")
    sensed = airflow_stack.xcom(dag_id, run_id, "wait_for_triage")
    assert sensed["batch_ids"] == submitted["batch_ids"]
    collected = airflow_stack.xcom(dag_id, run_id, "collect_triage")
    assert len(rows_at(collected["results_file"])) == 16 and collected["counts"]["unreadable"] == 0


@pytest.mark.skipif(
    AIRFLOW_VERSION < (3, 3),
    reason=f"Airflow {'.'.join(map(str, AIRFLOW_VERSION))} does not call a trigger's on_kill (added in 3.3)",
)
def test_marking_a_deferred_batch_task_failed_runs_the_triggers_on_kill(airflow_stack: AirflowStack) -> None:
    """What "Mark failed" does: the trigger is cancelled, on_kill says the remote batch keeps running."""
    dag_id, task_id = "e2e_kill_batch", "long_batch"
    run_id = airflow_stack.trigger(dag_id)
    ti = airflow_stack.wait_for_deferral(dag_id, run_id, task_id)
    assert ti["trigger"]["classpath"] == BATCH_TRIGGER
    (batch_id,) = airflow_stack.xcom(dag_id, run_id, task_id, key="batch_ids")
    # A trigger row alone is not enough: on_kill can only run in a triggerer that is running the trigger.
    airflow_stack.wait_until(
        lambda: "Waiting for OpenRouter batch" in airflow_stack.read_task_logs(dag_id, task_id),
        timeout=60,
        what="the triggerer to start the batch trigger",
    )

    airflow_stack.set_task_state(dag_id, run_id, task_id, "failed")

    def on_kill_logged() -> bool:
        logs = airflow_stack.read_task_logs(dag_id, task_id) + airflow_stack.processes["triggerer"].tail(400)
        return "keep running" in logs and batch_id in logs

    airflow_stack.wait_until(on_kill_logged, timeout=60, what="the trigger's on_kill message")
    ti = airflow_stack.task_instance(dag_id, run_id, task_id)
    assert ti["state"] == "failed" and ti["trigger"] is None
    # OpenRouter has no cancel endpoint: the batch is still running there (and will be billed).
    assert airflow_stack.emulator_get("slow", f"/batches/{batch_id}")["status"] in (
        "validating",
        "in_progress",
    )


def test_sharded_example_runs_its_shards_at_once_on_the_local_executor(airflow_stack: AirflowStack) -> None:
    """Example 7 on LocalExecutor (parallelism 8, so the four shards find free slots): the four mapped
    shards run at the same time, each writing its own results file, and the report adds them up."""
    from datetime import datetime

    dag_id = "example_openrouter_sharded"
    run_id = airflow_stack.trigger(dag_id)

    run = airflow_stack.wait_for_run(dag_id, run_id, timeout=180)
    assert run["state"] == "success", run
    shards = airflow_stack.mapped_task_instances(dag_id, run_id, "extract_fields")
    assert [ti["map_index"] for ti in shards] == [0, 1, 2, 3]
    assert {ti["state"] for ti in shards} == {"success"}

    # Overlapping runs: every shard started before any shard ended -- at that moment all four ran.
    def moment(text: str) -> datetime:  # Python 3.10 reads no "Z"
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    starts = [moment(ti["start_date"]) for ti in shards]
    ends = [moment(ti["end_date"]) for ti in shards]
    assert max(starts) < min(ends), [(ti["map_index"], ti["start_date"], ti["end_date"]) for ti in shards]
    manifests = [airflow_stack.xcom(dag_id, run_id, "extract_fields", map_index=k) for k in range(4)]
    assert len({m["output_uri"] for m in manifests}) == 4
    assert [len(rows_at(m["output_uri"])) for m in manifests] == [6, 6, 6, 6]
    report = airflow_stack.xcom(dag_id, run_id, "report")
    assert report["shards"] == 4 and report["counts"]["succeeded"] == report["total"] == 24
