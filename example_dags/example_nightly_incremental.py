"""Example 7 -- a nightly run over a corpus that barely changes: pay only for what changed, under a cap.

Every night the support team re-triages every open ticket (16 ship in ``data/tickets``). Most tickets
are the same as yesterday, and so are their prompts: without help, the job pays for the same answers
night after night. Three settings of the batch operator fix that::

    list_tickets  ->  triage_tickets (OpenRouterBatchOperator)  ->  report
                      result_cache:  unchanged tickets are answered from the cache, never sent
                      max_cost_usd:  the estimate must fit the budget before anything is submitted
                      metadata:      every request names this DAG, task, run and try on openrouter.ai

**The result cache** (``result_cache=``, or ``[openrouter] result_cache`` for every task of a deployment)
keys each answer by what was asked: the model, the rendered prompt, the parameters and the schema --
not the ticket id. On the second night the unchanged tickets' rows come from the cache (``cached:
true``, cost 0, the generation id of the night they were generated), and only new or edited tickets are
submitted. ``result_cache_ttl`` makes answers older than 30 days count as new, so they are refreshed
now and then. The cache is a handful of files per run on object storage (no object per ticket); put it
on shared storage (``s3://...``) on a distributed deployment.

**The cost cap** is checked before submitting: the upper bound of what the batch may cost (prompts at
about 4 characters a token, every reply at its full ``max_tokens``, the model's price from OpenRouter's
``/models``, half of it for the Batch API) plus what earlier tries of this run were billed. Over the cap,
nothing is submitted and the task fails (without retries), naming the largest contributors. The
estimate and its basis are in the manifest either way (``estimated_cost_usd``, ``estimate_basis``).

To see the estimate without sending anything, run the task with ``dry_run=True``: it renders and checks
every ticket, looks them up in the cache and returns the manifest with the estimate.

The manifest's ledger shows what the cache saved: ``cached`` rows and ``cost_saved_usd`` beside the
billed ``cost_usd`` and ``list_price_usd`` (the same tokens at the sync list price).
"""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from airflow.sdk import DAG, Param, task
from pydantic import BaseModel

from airflow_openrouter.operators.batch import OpenRouterBatchOperator

MODEL = "openai/gpt-4o-mini"
TICKETS = str(Path(__file__).parent / "data" / "tickets")
# Where answers are kept between nights. On a real deployment: shared object storage, for example
# "s3://aws_default@my-bucket/openrouter-cache" (or set [openrouter] result_cache once for all tasks).
RESULT_CACHE = "file:///tmp/airflow-openrouter/result-cache"


class TicketTriage(BaseModel):
    category: Literal["billing", "bug", "account_access", "feature_request", "how_to", "feedback"]
    priority: Literal["urgent", "high", "normal", "low"]
    needs_engineering: bool
    summary: str


with DAG(
    dag_id="example_openrouter_nightly_incremental",
    description="Re-triage every ticket nightly: unchanged ones come from the result cache, under a cost cap",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    # A retry re-attaches to the batch it submitted, and counts what it was billed against the cap.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["openrouter", "example", "batch", "cost"],
    params={"tickets_folder": Param(TICKETS, type="string", description="Folder of ticket_*.md files")},
) as dag:

    @task
    def list_tickets(params=None) -> list[dict]:
        # The ticket's text is all the prompt depends on: an unchanged ticket is an unchanged request.
        folder = Path(params["tickets_folder"])
        return [
            {"id": path.stem.removeprefix("ticket_"), "text": path.read_text(encoding="utf-8")}
            for path in sorted(folder.glob("ticket_*.md"))
        ]

    triage_tickets = OpenRouterBatchOperator(
        task_id="triage_tickets",
        items=list_tickets(),
        id_field="id",
        model=MODEL,
        prompt="prompts/triage_ticket.j2",
        prompt_vars={"product": "Ledgerly"},
        response_format=TicketTriage,
        temperature=0,
        max_tokens=200,  # bounds each reply, and so the estimate: without it every reply may be 16k tokens
        result_cache=RESULT_CACHE,
        result_cache_ttl=timedelta(days=30),
        max_cost_usd=0.50,  # the budget of one night, retries included
        deferrable=True,
    )

    @task
    def report(manifest: dict) -> dict:
        sent = manifest["total"] - manifest["cached"]
        print(f"{manifest['total']} tickets: {manifest['cached']} from the cache, {sent} sent")
        print(f"Estimated up to ${manifest['estimated_cost_usd']:.6f} ({manifest['estimate_basis']})")
        print(
            f"Billed ${manifest['cost_usd']:.6f}; the same tokens at list price ${manifest['list_price_usd']:.6f}; "
            f"the cache saved ${manifest['cost_saved_usd']:.6f}"
        )
        return {"cached": manifest["cached"], "sent": sent, "cost_usd": manifest["cost_usd"]}

    report(triage_tickets.output)
