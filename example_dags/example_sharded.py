"""Example 7 -- a million documents over many workers: split the input into shards, map the bulk operator
over them, merge what the shards found.

One ``OpenRouterBatchOperator`` task takes any number of items, but it runs on one worker: that worker
renders every prompt, and with ``engine="concurrent"`` it also sends every request and validates every
answer -- about a millisecond of CPU each, so one worker tops out at a few hundred items a second.
Airflow's own executors (Celery, Kubernetes, ...) already know how to spread work over many workers;
dynamic task mapping hands them one shard each::

    export_documents  ->  split               ->  extract_fields[0..N-1]          ->  report
    (the JSONL input:     (split_jsonl: N         (OpenRouterBatchOperator          (merge_manifests:
     one document a        shard files, read       .partial(...).expand(items=...):  the shards' counts,
     line, on object       and written line by     one task per shard, on whichever  tokens and cost in one
     storage)              line, never loaded)     worker is free)                   manifest; read_rows)

What each shard gets of its own, so that a retry never pays twice: its results file (the task's
``.{map_index}`` suffix: ``.../extract_fields/<run>.2.jsonl``), its record of submitted batches, and
its run tag. Clearing shard 2 re-runs shard 2 only, and it re-attaches to -- or, with the concurrent
engine, skips -- what shard 2 already paid for. Running the split again with the same input and the
same number of shards writes the same files, so nothing is paid twice either.

Here 24 invoices stand in for the million documents (``shards`` is a DAG param, 4 by default), and the
shards use the concurrent engine: that is where spreading over workers buys time. With
``engine="batch"`` the same DAG submits one set of batches per shard, each shard waiting in the
triggerer; the split then spreads the rendering and the fetching of results.
"""

from datetime import date, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, ObjectStoragePath, Param, task
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


def work_dir(run_id: str) -> ObjectStoragePath:
    """Where this run's input and shards go: under ``[openrouter] results_path``."""
    from airflow.configuration import conf

    return ObjectStoragePath(conf.get("openrouter", "results_path")) / "example_sharded" / run_id


with DAG(
    dag_id="example_openrouter_sharded",
    description="Spread a large JSONL input over workers: split into shards, map the batch operator, merge",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    # Retries are safe: each shard skips what it already paid for.
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["openrouter", "example", "batch"],
    params={"shards": Param(4, type="integer", minimum=1, maximum=64, description="How many shards")},
) as dag:

    @task
    def export_documents(run_id: str | None = None) -> str:
        """Stands in for your warehouse export: one JSON document per line, on object storage."""
        import json

        target = work_dir(run_id or "manual") / "documents.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = ObjectStoragePath(INVOICES)
        with target.open("w", encoding="utf-8") as out:
            for path in sorted(
                (p for p in folder.iterdir() if p.name.endswith(".txt")), key=lambda p: p.name
            ):
                document = {"id": path.stem, "file": path.name, "text": path.read_text(encoding="utf-8")}
                out.write(json.dumps(document) + "\n")
        return str(target)

    @task
    def split(documents: str, params=None, run_id: str | None = None) -> list[str]:
        """The shard files' URIs: one mapped task each. Streams the input, whatever its size."""
        from airflow_openrouter.batch.shards import split_jsonl

        return split_jsonl(documents, shards=params["shards"], out=work_dir(run_id or "manual") / "shards")

    extract_fields = OpenRouterBatchOperator.partial(
        task_id="extract_fields",
        engine="concurrent",
        id_field="id",  # rows are joined back to the documents by id: a row's index is its shard's
        model=MODEL,
        system_prompt="You extract data from invoices. Copy values exactly; never guess.",
        prompt="prompts/extract_invoice.j2",  # the same prompt file as example 2
        response_format=InvoiceFields,
        temperature=0,
        max_tokens=300,
        max_concurrency=8,  # per shard: N shards send up to 8 x N requests at once
        max_failed_fraction=0.1,
    ).expand(items=split(export_documents()))

    @task
    def report(manifests) -> dict:
        """Every shard's manifest in one, and a look at the rows of all shards."""
        from airflow_openrouter.batch.shards import merge_manifests, read_rows

        merged = merge_manifests(manifests)
        totals: dict[str, float] = {}
        for row in read_rows(merged):
            if row["status"] == "succeeded":
                output = row["output"]
                totals[output["currency"]] = totals.get(output["currency"], 0.0) + output["total"]
        print(
            f"{merged['counts']['succeeded']}/{merged['total']} documents in {merged['shards']} shards, "
            f"{merged['duration_s']} s, ${merged['cost_usd']:.6f}"
        )
        return {**merged, "totals_by_currency": totals}

    report(extract_fields.output)
