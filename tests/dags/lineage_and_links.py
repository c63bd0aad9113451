"""A chat task, a batch task reading its items from a file, and a sensor: their extra links and lineage.

Run with dag.test() against the emulator by tests/test_links.py (the links each task stored in XCom)
and tests/test_lineage.py (the OpenLineage provider's listener, file transport, in a subprocess). The
``PRIVATE`` markers are prompt and item text: no link, facet or lineage event may carry them.
"""

from __future__ import annotations

import json
import os

from airflow.sdk import DAG, Asset, ObjectStoragePath, task

from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.operators.chat import OpenRouterChatOperator
from airflow_openrouter.sensors.batch import OpenRouterBatchSensor

MODEL = "openai/gpt-4o-mini"
PRIVATE_DOCUMENT = "PRIVATE-DOCUMENT-TEXT about the merger"
PRIVATE_ITEM = "PRIVATE-ITEM-TEXT of ticket"
RESULTS = os.environ.get("AIRFLOW__OPENROUTER__RESULTS_PATH", "file:///tmp/airflow-openrouter")
TICKETS = Asset("file:///data/tickets.csv")
SUMMARIES = Asset("file:///data/summaries.json")

with DAG("lineage_and_links", schedule=None, catchup=False, tags=["test"]) as lineage_dag:

    @task
    def load_document() -> str:
        return PRIVATE_DOCUMENT

    @task
    def write_items(run_id=None) -> str:
        path = ObjectStoragePath(f"{RESULTS}/items/{run_id.replace(':', '_')}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": f"{PRIVATE_ITEM} {i}"}) + "\n" for i in range(3)))
        return str(path)

    summarise = OpenRouterChatOperator(
        task_id="summarise",
        prompt="prompts/chat_summary.j2",
        prompt_vars={"audience": "executives", "document": load_document()},
        model=MODEL,
        inlets=[TICKETS],
        outlets=[SUMMARIES],
    )
    quiet = OpenRouterChatOperator(task_id="quiet", prompt="Say hi.", model=MODEL, do_xcom_push=False)
    classify = OpenRouterBatchOperator(
        task_id="classify",
        items=write_items(),
        prompt="Classify: {{ item.text }}",
        system_prompt="One word.",
        model=MODEL,
        deferrable=True,
    )
    submit = OpenRouterBatchOperator(
        task_id="submit",
        items=[{"text": f"note {i}"} for i in range(2)],
        prompt="Tag: {{ item.text }}",
        model=MODEL,
        wait_for_completion=False,
    )
    wait = OpenRouterBatchSensor(
        task_id="wait", batch_ids=submit.output["batch_ids"], poke_interval=0.2, timeout=60
    )
