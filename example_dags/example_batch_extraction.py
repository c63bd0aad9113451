"""Example 2 -- bulk document processing through OpenRouter's Batch API, waiting in the triggerer.

Twenty-four sample invoices ship in ``data/invoices``. The DAG extracts the same fields from each::

    list_invoices  ->  extract_fields (OpenRouterBatchOperator, deferrable)  ->  report
    (one item per      (one templated prompt per item, one Batch API job,        (reads the manifest
     document)          results written to object storage as JSONL)               and the JSONL rows)

Why the Batch API: it costs about half as much as one request per document, and a batch takes minutes
to hours. With ``deferrable=True`` the waiting happens in the triggerer, so no worker slot is held while
OpenRouter works. The operator records the batch ids before it waits: if the task is retried or cleared
with the same inputs, it re-attaches to the batch it already paid for instead of submitting it again.

What lands where (the README's "Results and manifest" section has the full format):

* the results file -- one JSON line per document, ``{"custom_id", "index", "status", "output", "error",
  "usage"}`` -- under ``[openrouter] results_path`` (use ``s3://...`` or similar on a real deployment);
* the task's XCom -- a small manifest: the results file's URI, counts per status, tokens, cost.

Rows that fail are recovered inside the task (``max_row_attempts=2``): after the batch, a document whose
request failed transiently is sent again, and one whose reply did not match ``InvoiceFields`` is sent
back with the validation errors to be repaired. A few rows go straight from the worker; many go into a
follow-up batch, recorded before it is submitted like the first. ``report`` prints what was recovered.

This is the DAG ``make demo`` runs.
"""

from datetime import date, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, ObjectStoragePath, Param, task
from pydantic import BaseModel, Field

from airflow_openrouter.operators.batch import OpenRouterBatchOperator

MODEL = "openai/gpt-4o-mini"  # needs a model that OpenRouter's Batch API serves
# The documents to process. In production this would be a bucket, e.g. "s3://acme-inbox/invoices/"
# (any ObjectStoragePath URI works once the matching Airflow provider is installed).
INVOICES = f"file://{Path(__file__).parent / 'data' / 'invoices'}"


class InvoiceFields(BaseModel):
    """What we want from every invoice. Each result row's ``output`` is validated against this."""

    vendor: str
    invoice_number: str
    invoice_date: date
    currency: str = Field(description="ISO 4217 code")
    total: float = Field(description="Amount payable, tax included")
    line_items: int = Field(ge=0)
    replaces_invoice: str | None = None


with DAG(
    dag_id="example_openrouter_batch_extraction",
    description="Extract fields from a folder of invoices with the Batch API (deferrable)",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    # Retries are safe here: the batch operator re-attaches to the batch it submitted.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["openrouter", "example", "batch"],
    # Trigger with {"max_documents": 3} for a cheap trial run on a real key.
    params={
        "max_documents": Param(
            None, type=["null", "integer"], minimum=1, description="Process only the first N"
        )
    },
) as dag:

    @task
    def list_invoices(params=None) -> list[dict]:
        """One item per document. Items travel through XCom, so keep them small.

        For thousands of documents, write the items to a JSONL file on object storage instead and pass
        its URI as ``items=``: the operator streams it.
        """
        folder = ObjectStoragePath(INVOICES)
        documents = sorted((p for p in folder.iterdir() if p.name.endswith(".txt")), key=lambda p: p.name)
        limit = params["max_documents"]
        return [
            {"id": path.stem, "file": path.name, "text": path.read_text(encoding="utf-8")}
            for path in documents[:limit]
        ]

    extract_fields = OpenRouterBatchOperator(
        task_id="extract_fields",
        items=list_invoices(),
        # Each result row is keyed by this field of its item ("invoice_07"), not just by position.
        id_field="id",
        model=MODEL,
        system_prompt="You extract data from invoices. Copy values exactly; never guess.",
        # Rendered once per item with ``item`` and ``index`` in scope. A document's own text is data:
        # a "{{ ... }}" inside an invoice reaches the model as it is, never evaluated.
        prompt="prompts/extract_invoice.j2",
        response_format=InvoiceFields,  # rows that fail validation get status "invalid_output"
        temperature=0,
        max_tokens=300,
        deferrable=True,  # wait in the triggerer, not on a worker
        # One recovery pass for failed and invalid rows (a follow-up batch, or from the worker for a few).
        max_row_attempts=2,
        # Tolerate a few bad documents after recovery; above 10% the task fails (after writing the results file).
        max_failed_fraction=0.1,
        # Stop waiting after this long. The batch keeps running on OpenRouter, and a retry re-attaches.
        timeout=timedelta(hours=24),
    )

    @task
    def report(manifest: dict):
        """Read what the batch produced: the manifest from XCom, the rows from the results file."""
        import json

        print(f"Results file: {manifest['output_uri']}")
        print(f"Per status:   {manifest['counts']}")
        print(f"Tokens:       {manifest['total_tokens']}, cost ${manifest['cost_usd']:.6f}")
        recovery = manifest["recovery"]
        print(
            f"Recovered:    {recovery['recovered']} of {recovery['rows']} rows sent again, "
            f"for ${recovery['cost_usd']:.6f}"
        )

        totals: dict[str, float] = {}
        with ObjectStoragePath(manifest["output_uri"]).open("r") as results:
            for line in results:
                row = json.loads(line)
                if row["status"] != "succeeded":
                    print(f"  {row['custom_id']}: {row['status']} -- {row['error']}")
                    continue
                for earlier in row["history"]:  # attempts before the one that succeeded
                    print(
                        f"  {row['custom_id']}: attempt {earlier['attempt']} was {earlier['status']} ({earlier['cause']})"
                    )
                invoice = row["output"]  # already validated against InvoiceFields
                totals[invoice["currency"]] = totals.get(invoice["currency"], 0.0) + invoice["total"]
        print("Invoiced per currency:", {cur: round(total, 2) for cur, total in sorted(totals.items())})
        return {
            "succeeded": manifest["counts"]["succeeded"],
            "recovered": recovery["recovered"],
            "totals_by_currency": totals,
        }

    report(extract_fields.output)
