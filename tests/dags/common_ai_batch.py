"""common-ai's ``@task.llm_batch`` on OpenRouter: ``model_id="openrouter:..."`` with an ``openrouter`` connection.

Run by tests/integrations/test_common_ai.py with dag.test() against the emulator (the trigger runs
inline). Nothing here imports airflow_openrouter: common-ai finds the adapter by its entry point. The
DAGs exist only where common-ai installs (Python >= 3.11); elsewhere this file defines none.

* ``common_ai_batch`` -- structured output (an optional field, which strict mode makes nullable), one
  retry allowed: the tests inject a lost answer or a failed results fetch into the first try.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import timedelta

from pydantic import BaseModel

MODEL_ID = "openrouter:openai/gpt-4o-mini"
DOCUMENTS = [f"Ticket {i}: the invoice export fails with error E{i}." for i in range(5)]
RESULT_PATH = (
    os.environ.get("AIRFLOW__OPENROUTER__RESULTS_PATH", "file:///tmp/airflow-openrouter") + "/common-ai"
)


class Triage(BaseModel):
    team: str
    urgent: bool
    confidence: float = 0.5  # optional: must come back as its default when the model answers null


if importlib.util.find_spec("airflow.providers.common.ai") is not None:
    from airflow.sdk import DAG, task

    with DAG(
        "common_ai_batch",
        schedule=None,
        catchup=False,
        default_args={"retries": 1, "retry_delay": timedelta(seconds=0)},
        tags=["test"],
    ) as common_ai_dag:

        @task.llm_batch(
            llm_conn_id="openrouter_default",
            model_id=MODEL_ID,
            result_path=RESULT_PATH,
            output_type=Triage,
            system_prompt="Route the ticket to a team.",
            max_tokens=200,
            request_params={"temperature": 0.1},
            deferrable=True,
            poll_interval=30,
        )
        def triage() -> list[str]:
            return [f"Triage this ticket: {doc}" for doc in DOCUMENTS]

        triage()
