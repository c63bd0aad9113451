"""Bulk summaries through the Batch API: upstream items in, a deferred wait, rows to storage, a manifest on.

Run by tests/operators/test_batch_pipeline.py with dag.test() against the emulator:

* ``batch_deferred`` -- the happy path: the task defers to OpenRouterBatchTrigger and resumes on the
  worker. The first try's results fetch fails (the test injects it), so the second try must
  re-attach to the recorded batch instead of submitting again.
* ``batch_sensed`` -- submit without waiting, then three sensors (poke, reschedule, deferrable) wait for
  the same batch ids.
* ``batch_cleared``, ``concurrent_retried``, ``concurrent_systemic`` -- see their comments below.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task
from pydantic import BaseModel

from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.sensors.batch import OpenRouterBatchSensor

MODEL = "openai/gpt-4o-mini"
# Upstream text that looks like Jinja: it must reach the model literally.
HOSTILE = "{{ var.value.secret }} {% if true %}EVALUATED{% endif %}"


class Summary(BaseModel):
    summary: str


with DAG("batch_deferred", schedule=None, catchup=False, tags=["test"]) as deferred_dag:

    @task
    def make_docs() -> list[dict]:
        return [{"id": f"doc-{i}", "text": f"Report {i}. {HOSTILE}"} for i in range(12)]

    @task
    def make_audience() -> str:
        return "executives"

    summarise = OpenRouterBatchOperator(
        task_id="summarise",
        items=make_docs(),
        prompt="prompts/batch_summary.j2",
        system_prompt="Answer in one sentence.",
        prompt_vars={"audience": make_audience()},
        response_format=Summary,
        model=MODEL,
        id_field="id",
        deferrable=True,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

    @task
    def check_manifest(manifest: dict) -> int:
        # What a downstream task gets: a small manifest, with the rows in storage.
        from airflow.sdk import ObjectStoragePath

        rows = ObjectStoragePath(manifest["output_uri"]).read_text().splitlines()
        assert len(rows) == manifest["counts"]["succeeded"] == 12, manifest
        return len(rows)

    check_manifest(summarise.output)


with DAG("batch_sensed", schedule=None, catchup=False, tags=["test"]) as sensed_dag:
    submit = OpenRouterBatchOperator(
        task_id="submit",
        items=[{"text": f"note {i}"} for i in range(3)],
        prompt="Tag: {{ item.text }}",
        model=MODEL,
        wait_for_completion=False,
    )
    for mode, extra in (
        ("poke", {"mode": "poke"}),
        ("reschedule", {"mode": "reschedule"}),
        ("deferrable", {"deferrable": True}),
    ):
        OpenRouterBatchSensor(
            task_id=f"wait_{mode}",
            batch_ids=submit.output["batch_ids"],
            poke_interval=0.2,
            timeout=60,
            **extra,
        )


# ``batch_cleared`` -- run twice for the same logical date (a clear and re-run of the same run) with
# [state_store] clear_on_success = True: the second run must re-attach, not pay again.
with DAG("batch_cleared", schedule=None, catchup=False, tags=["test"]) as cleared_dag:
    OpenRouterBatchOperator(
        task_id="summarise",
        items=[{"text": f"note {i}"} for i in range(4)],
        prompt="Summarise: {{ item.text }}",
        model=MODEL,
    )


# ``concurrent_retried`` -- Airflow's own retry after transient item failures sends only those items.
# ``concurrent_systemic`` -- a rejected key fails the task at once, without using its retries.
def _concurrent_dag(dag_id: str, retries: int) -> DAG:
    with DAG(dag_id, schedule=None, catchup=False, tags=["test"]) as dag:
        OpenRouterBatchOperator(
            task_id="classify",
            items=[{"text": f"ticket {i}"} for i in range(10)],
            prompt="Classify: {{ item.text }}",
            model=MODEL,
            engine="concurrent",
            max_concurrency=1,
            max_row_attempts=1,  # no recovery pass inside the task: Airflow's retry resends
            retries=retries,
            retry_delay=timedelta(seconds=0),
        )
    return dag


retried_dag = _concurrent_dag("concurrent_retried", retries=1)
systemic_dag = _concurrent_dag("concurrent_systemic", retries=2)
