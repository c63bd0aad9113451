"""Bulk summaries through the Batch API: upstream items in, a deferred wait, rows to storage, a manifest on.

Run by tests/operators/test_batch_pipeline.py with dag.test() against the emulator:

* ``batch_deferred`` -- the happy path: the task defers to OpenRouterBatchTrigger and resumes on the
  worker. The first try's results fetch fails (the test injects it), so the second try must
  re-attach to the recorded batch instead of submitting again.
* ``batch_sensed`` -- submit without waiting, then three sensors (poke, reschedule, deferrable) wait for
  the same batch ids.
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
