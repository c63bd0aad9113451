"""Example 8 -- nightly embeddings of a corpus into a Parquet file, paying only for the documents that changed.

A similarity search ("which past tickets look like this one?") or a RAG store needs one vector per
document, and a new vector only when a document's text changed. Every night this DAG::

    list_documents  ->  embed (OpenRouterEmbeddingOperator, Batch API)  ->  publish
    (every document)    (result_cache: an unchanged document's vector      (upserts the vectors,
                         comes from the cache, never sent; the rest          says which are new)
                         waits in the triggerer; vectors to Parquet)

* ``list_documents`` returns every document of the folder, one item each. It keeps no bookkeeping of
  its own: knowing what changed is the result cache's job.
* ``embed`` looks every document up in the **result cache** first (``result_cache=``, or ``[openrouter]
  result_cache`` for every task of a deployment). A vector is kept under the model, the exact text and
  the request's parameters (``dimensions``...), not under the document id: an unchanged document is
  never embedded again, an edited or new one is. Only those are sent, as one Batch API line each to
  ``/v1/embeddings`` (about half the price of the ordinary endpoint), waiting in the triggerer
  (``deferrable=True``); a retry or a clear re-attaches to the batch it already paid for. Every
  document still gets its row in the Parquet file (``vector`` a fixed-size list of float32; JSONL
  instead when ``pyarrow`` is not installed: ``pip install 'airflow-openrouter[parquet]'``): a cached
  row has ``cached`` true and cost 0, and the manifest counts them (``cached``, ``cost_saved_usd``).
* ``publish`` reads the rows back -- in production, upsert them into your vector store (all of them is
  idempotent; ``cached == False`` are the new ones) -- and reports what was embedded tonight. A failed
  document is not cached, so it is tried again the next night.

The corpus is the sixteen support tickets in ``data/tickets``; trigger with ``{"documents": "s3://..."}``
for your own folder of ``.md`` files.
"""

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_openrouter.operators.embedding import OpenRouterEmbeddingOperator

MODEL = "openai/text-embedding-3-small"  # 1,536 dimensions; OpenRouter's Batch API serves it
DOCUMENTS = f"file://{Path(__file__).parent / 'data' / 'tickets'}"
# Where vectors are kept between nights. On a real deployment: shared object storage, for example
# "s3://aws_default@my-bucket/openrouter-cache" (or set [openrouter] result_cache once for all tasks).
RESULT_CACHE = "file:///tmp/airflow-openrouter/result-cache"


with DAG(
    dag_id="example_openrouter_embeddings",
    description="Embed a corpus nightly into a Parquet file: unchanged documents come from the result cache",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    # Retries are safe: the operator re-attaches to the batch it submitted instead of paying again.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["openrouter", "example", "embeddings"],
    params={"documents": Param(DOCUMENTS, type="string", description="A folder of .md documents")},
) as dag:

    @task
    def list_documents(params: dict) -> list[dict]:
        """Every document of the folder, one item each (the text is all its vector depends on)."""
        documents = []
        for path in sorted(ObjectStoragePath(params["documents"]).iterdir(), key=lambda p: p.name):
            if path.name.endswith(".md"):
                documents.append({"id": path.stem, "text": path.read_text(encoding="utf-8")})
        return documents

    embed = OpenRouterEmbeddingOperator(
        task_id="embed",
        items=list_documents(),
        id_field="id",  # each row is keyed by the document's id
        text="{{ item.text }}",  # the text to embed, rendered per item (the item's own text is data)
        model=MODEL,
        result_cache=RESULT_CACHE,  # unchanged documents are not embedded again
        deferrable=True,  # wait for the batch in the triggerer, not in a worker slot
        max_failed_fraction=0.1,  # a few failed documents do not fail the night: they are tried tomorrow
    )

    @task
    def publish(manifest: dict) -> dict:
        """Read the vectors back (in production: upsert them into the vector store)."""
        import json

        uri = manifest["output_uri"]
        if uri.endswith(".parquet"):
            import pyarrow.parquet as pq

            with ObjectStoragePath(uri).open("rb") as file:
                rows = pq.read_table(file, columns=["id", "status", "cached", "vector"]).to_pylist()
        else:
            rows = [json.loads(line) for line in ObjectStoragePath(uri).read_text().splitlines()]
        vectors = {row["id"]: row["vector"] for row in rows if row["status"] == "succeeded"}
        # In production: upsert `vectors` into the vector store here.
        new = sorted(row["id"] for row in rows if row["status"] == "succeeded" and not row["cached"])
        print(
            f"{len(vectors)} vectors of {manifest['dimensions']} dimensions: {len(new)} embedded tonight "
            f"(${manifest['cost_usd']:.6f}), {manifest['cached']} from the result cache "
            f"(saved ${manifest['cost_saved_usd']:.6f})"
        )
        return {
            "vectors": len(vectors),
            "embedded": new,
            "cached": manifest["cached"],
            "dimensions": manifest["dimensions"],
            "cost_usd": manifest["cost_usd"],
        }

    publish(embed.output)
