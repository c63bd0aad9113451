"""Tasks whose configuration is found wrong only when they run: every one must fail without a retry.

Run by tests/test_config_errors.py with dag.test() against the emulator. Each task has retries left; an
``OpenRouterConfigError`` (a connection without a key, a connection that does not exist, a model that
renders empty) must still fail it at its first try, with the advice in the error.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.operators.chat import OpenRouterChatOperator
from airflow_openrouter.operators.embedding import OpenRouterEmbeddingOperator
from airflow_openrouter.sensors.batch import OpenRouterBatchSensor

#: A connection that exists, pointing at the emulator, without an API key (the test defines it).
NO_KEY = "openrouter_nokey"
ITEMS = [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]

with DAG(
    "misconfigured",
    schedule=None,
    catchup=False,
    tags=["test"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=0)},
    params={"model": " "},
) as misconfigured_dag:
    OpenRouterChatOperator(
        task_id="chat_without_key", prompt="Hello", model="openai/gpt-4o-mini", openrouter_conn_id=NO_KEY
    )
    OpenRouterBatchOperator(
        task_id="batch_without_key",
        items=ITEMS,
        prompt="{{ item.text }}",
        model="openai/gpt-4o-mini",
        openrouter_conn_id=NO_KEY,
    )
    OpenRouterBatchOperator(
        task_id="concurrent_without_key",
        items=ITEMS,
        prompt="{{ item.text }}",
        model="openai/gpt-4o-mini",
        engine="concurrent",
        openrouter_conn_id=NO_KEY,
    )
    OpenRouterEmbeddingOperator(
        task_id="embed_without_key",
        items=ITEMS,
        text="{{ item.text }}",
        model="openai/text-embedding-3-small",
        openrouter_conn_id=NO_KEY,
    )
    OpenRouterBatchSensor(task_id="sensor_without_key", batch_ids="batch_x", openrouter_conn_id=NO_KEY)
    OpenRouterChatOperator(
        task_id="chat_without_connection",
        prompt="Hello",
        model="openai/gpt-4o-mini",
        openrouter_conn_id="openrouter_typo",
    )
    OpenRouterChatOperator(task_id="chat_with_empty_model", prompt="Hello", model="{{ params.model }}")
