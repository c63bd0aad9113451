"""Example 3 -- submit, then sense: the Batch API with the waiting as a task of its own.

::

    list_tickets -> submit_triage -> wait_for_triage -> collect_triage
                    (batch operator,  (OpenRouterBatchSensor,  (reads the results with the hook,
                     returns at once)  deferrable)              validates them, writes a JSONL file)

Example 2 submits *and* waits in one task. Splitting the two is useful when

* the waiting should be visible as its own task, with its own ``timeout``, retries and SLA;
* the submitting and consuming sides live in different DAGs (the batch ids travel by XCom or asset);
* you want full control over the results -- here the downstream task reads them through the hook.

The sensor waits in the triggerer (``deferrable=True``), so a batch that takes hours holds no worker
slot. It never downloads results: it reports the batches' status and billed usage.
"""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from airflow.sdk import DAG, task
from pydantic import BaseModel

from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.sensors.batch import OpenRouterBatchSensor

MODEL = "openai/gpt-4o-mini"
TICKETS_DIR = Path(__file__).parent / "data" / "tickets"


class TicketTriage(BaseModel):
    category: Literal["billing", "bug", "account_access", "feature_request", "how_to", "feedback"]
    priority: Literal["urgent", "high", "normal", "low"]
    needs_engineering: bool
    summary: str


with DAG(
    dag_id="example_openrouter_batch_sensor",
    description="Submit a Batch API job, wait for it with a deferrable sensor, then read the results",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["openrouter", "example", "batch"],
) as dag:

    @task
    def list_tickets() -> list[dict]:
        # The whole ticket, Markdown and all, is the item's text: the model reads it as it is.
        return [
            {"id": path.stem.removeprefix("ticket_"), "text": path.read_text(encoding="utf-8")}
            for path in sorted(TICKETS_DIR.glob("ticket_*.md"))
        ]

    submit_triage = OpenRouterBatchOperator(
        task_id="submit_triage",
        items=list_tickets(),
        id_field="id",
        model=MODEL,
        prompt="prompts/triage_ticket.j2",
        prompt_vars={"product": "Ledgerly"},
        response_format=TicketTriage,
        temperature=0,
        # Submit, record the batch ids (so a retry re-attaches) and return them at once.
        wait_for_completion=False,
    )

    wait_for_triage = OpenRouterBatchSensor(
        task_id="wait_for_triage",
        # The operator pushes the ids under their own XCom key, "batch_ids".
        batch_ids=submit_triage.output["batch_ids"],
        deferrable=True,  # wait in the triggerer
        poke_interval=60,  # seconds between two status checks
        timeout=timedelta(hours=24).total_seconds(),  # then fail; the batch itself keeps running
    )

    @task
    def collect_triage(sensed: dict, run_id=None, dag_run=None):
        """Fetch each batch's rows with the hook, validate them, and write one JSONL file."""
        import json
        import re

        from airflow.configuration import conf
        from airflow.sdk import ObjectStoragePath

        from airflow_openrouter.batch.items import item_custom_id
        from airflow_openrouter.hooks.openrouter import OpenRouterHook

        # Next to what the batch operator writes: under [openrouter] results_path.
        out = ObjectStoragePath(conf.get("openrouter", "results_path")) / dag_run.dag_id / "triage"
        out.mkdir(parents=True, exist_ok=True)
        results_file = out / (re.sub(r"[^\w.-]", "_", run_id) + ".jsonl")

        counts = {"urgent": 0, "high": 0, "normal": 0, "low": 0, "unreadable": 0}
        with OpenRouterHook() as hook, results_file.open("w") as sink:
            for batch_id in sensed["batch_ids"]:
                for result in hook.iter_batch_results(batch_id):
                    completion = result.completion()  # None for a row that failed remotely
                    # The operator submits "{id}~{run tag}" (the tag proves whose a batch is): strip it.
                    row = {"ticket": item_custom_id(result.custom_id), "triage": None, "error": None}
                    try:
                        text = completion.choices[0].message.content if completion else None
                        row["triage"] = TicketTriage.model_validate_json(text or "").model_dump()
                        counts[row["triage"]["priority"]] += 1
                    except ValueError as exc:  # pydantic's ValidationError is a ValueError
                        row["error"] = str(result.error or exc)[:500]
                        counts["unreadable"] += 1
                    sink.write(json.dumps(row) + "\n")
        print(f"Triaged tickets by priority: {counts}; rows in {results_file}")
        print(f"Billed: ${(sensed['usage'] or {}).get('cost') or 0:.6f}")
        return {"results_file": str(results_file), "counts": counts}

    collect_triage(wait_for_triage.output)
