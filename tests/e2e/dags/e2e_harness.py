"""DAGs that exist only for the end-to-end tests (a second DAG bundle next to ``example_dags/``).

* ``e2e_core_deferral`` uses nothing from this provider: a core deferrable sensor. If it fails, the
  process harness or the Airflow install is broken, not the provider.
* ``e2e_kill_batch`` defers on a batch that never finishes (connection ``openrouter_slow``), so a test
  can mark it failed while the trigger runs.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.sensors.time_delta import WaitSensor
from airflow.sdk import DAG

from airflow_openrouter.operators.batch import OpenRouterBatchOperator

with DAG(dag_id="e2e_core_deferral", schedule=None, catchup=False, tags=["e2e"]):
    # Measured from the task's start, so it always defers, however late the scheduler runs it.
    WaitSensor(task_id="wait", time_to_wait=timedelta(seconds=4), deferrable=True)

# A batch that stays in progress (the "slow" emulator holds batches for an hour), so the test can mark the
# deferred task failed and watch the trigger's on_kill run.
with DAG(dag_id="e2e_kill_batch", schedule=None, catchup=False, tags=["e2e"]):
    OpenRouterBatchOperator(
        task_id="long_batch",
        openrouter_conn_id="openrouter_slow",
        items=[{"id": f"note-{i}", "text": f"Note number {i}."} for i in range(3)],
        id_field="id",
        prompt="Summarise: {{ item.text }}",
        model="openai/gpt-4o-mini",
        deferrable=True,
        poll_interval=1,
    )
