"""Example 6 -- the same invoices as example 2, through the concurrent engine, with a cost cap.

``engine="concurrent"`` skips the Batch API: the worker sends ordinary chat completions, several at a
time, and writes each answer as it arrives. Choose it when

* minutes matter (a batch can take hours; this takes about as long as the slowest few requests),
* the model has no batch variant on OpenRouter, or
* the job is small enough that the Batch API's discount is not worth the wait.

It costs the normal price (about twice the Batch API's) and holds a worker slot while it runs, so two
guards come with it:

* ``max_concurrency`` -- requests in flight at most (and ``requests_per_minute`` to pace them), so one
  DAG doesn't exhaust your OpenRouter rate limit for everyone else;
* ``max_cost_usd`` -- once the billed cost reaches the cap, no new request starts. The items left over
  get a ``failed`` row saying "Not started: the billed cost reached max_cost_usd", and the task fails
  if they exceed ``max_failed_fraction``; raise the cap and clear the task to run just those.

Answers are saved as they arrive: a retry skips the items that are already done and pays only for the
rest. The results file and the manifest have the same format as the batch engine's.
"""

from datetime import date, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, ObjectStoragePath, task
from pydantic import BaseModel, Field

from airflow_openrouter.operators.batch import OpenRouterBatchOperator

MODEL = "openai/gpt-4o-mini"
INVOICES = f"file://{Path(__file__).parent / 'data' / 'invoices'}"


class InvoiceFields(BaseModel):
    vendor: str
    invoice_number: str
    invoice_date: date
    currency: str = Field(description="ISO 4217 code")
    total: float = Field(description="Amount payable, tax included")
    line_items: int = Field(ge=0)
    replaces_invoice: str | None = None


with DAG(
    dag_id="example_openrouter_concurrent",
    description="Extract fields from the invoices with concurrent requests, a concurrency cap and a cost cap",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["openrouter", "example"],
) as dag:

    @task
    def list_invoices() -> list[dict]:
        folder = ObjectStoragePath(INVOICES)
        return [
            {"id": path.stem, "file": path.name, "text": path.read_text(encoding="utf-8")}
            for path in sorted(folder.iterdir(), key=lambda p: p.name)
            if path.name.endswith(".txt")
        ]

    extract_fields = OpenRouterBatchOperator(
        task_id="extract_fields",
        engine="concurrent",
        items=list_invoices(),
        id_field="id",
        model=MODEL,
        system_prompt="You extract data from invoices. Copy values exactly; never guess.",
        prompt="prompts/extract_invoice.j2",  # the same prompt file as example 2
        response_format=InvoiceFields,
        temperature=0,
        max_tokens=300,
        max_concurrency=4,  # at most 4 requests in flight
        requests_per_minute=600,  # and at most 600 started per minute
        max_cost_usd=0.05,  # stop starting requests once 5 cents are billed
        max_failed_fraction=0.1,
    )

    @task
    def report(manifest: dict):
        """Same manifest and rows as the batch engine; ``batch_ids`` is simply empty."""
        import json

        rows = [
            json.loads(line) for line in ObjectStoragePath(manifest["output_uri"]).read_text().splitlines()
        ]
        succeeded = [row for row in rows if row["status"] == "succeeded"]
        print(f"{len(succeeded)}/{len(rows)} invoices extracted in {manifest['duration_s']} s")
        print(f"Tokens: {manifest['total_tokens']}, cost ${manifest['cost_usd']:.6f}")
        for row in succeeded[:3]:
            print(f"  {row['custom_id']}: {row['output']}")
        return {"succeeded": len(succeeded), "cost_usd": manifest["cost_usd"]}

    report(extract_fields.output)
