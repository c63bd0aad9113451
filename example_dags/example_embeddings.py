"""Example 7 -- nightly embeddings of the documents that changed, into a Parquet file.

A similarity search ("which past tickets look like this one?") or a RAG store needs one vector per
document, and a new vector only when a document's text changed. Every night this DAG::

    changed_documents  ->  embed (OpenRouterEmbeddingOperator, Batch API)  ->  publish
    (the documents whose    (one vector per document, written to a            (loads the vectors,
     text hash changed)      Parquet file; waits in the triggerer)              records the hashes)

* ``changed_documents`` hashes every document and keeps those whose hash differs from the one recorded
  by the last successful ``publish`` (the first run keeps them all).
* ``embed`` sends one Batch API line per document to ``/v1/embeddings`` (about half the price of the
  ordinary endpoint) and waits in the triggerer (``deferrable=True``). A retry or a clear re-attaches to
  the batch it already paid for. The rows go to a Parquet file, ``vector`` a fixed-size list of float32
  (JSONL instead when ``pyarrow`` is not installed: ``pip install 'airflow-openrouter[parquet]'``).
* ``publish`` reads the rows back -- in production, upsert them into your vector store -- and records
  the hashes of the documents that got a vector; a failed one is tried again the next night.

The corpus is the sixteen support tickets in ``data/tickets``; trigger with ``{"documents": "s3://..."}``
for your own folder of ``.md`` files.
"""

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_openrouter.operators.embedding import OpenRouterEmbeddingOperator

MODEL = "openai/text-embedding-3-small"  # 1,536 dimensions; OpenRouter's Batch API serves it
DOCUMENTS = f"file://{Path(__file__).parent / 'data' / 'tickets'}"
# Where the last run's hashes are kept: next to the results, one file per corpus.
HASHES = "example_openrouter_embeddings/hashes-{corpus}.json"


def _hashes_file(documents: str) -> ObjectStoragePath:
    import hashlib

    try:
        from airflow.sdk import conf
    except ImportError:  # Airflow < 3.2
        from airflow.configuration import conf

    corpus = hashlib.sha256(documents.encode()).hexdigest()[:12]
    results = conf.get("openrouter", "results_path", fallback="file:///tmp/airflow-openrouter")
    return ObjectStoragePath(results) / HASHES.format(corpus=corpus)


with DAG(
    dag_id="example_openrouter_embeddings",
    description="Embed the documents that changed since the last run into a Parquet file (Batch API)",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    # Retries are safe: the operator re-attaches to the batch it submitted instead of paying again.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["openrouter", "example", "embeddings"],
    params={"documents": Param(DOCUMENTS, type="string", description="A folder of .md documents")},
) as dag:

    @task
    def changed_documents(params: dict) -> list[dict]:
        """The documents whose text changed since the last successful run, one item each."""
        import hashlib
        import json

        hashes_file = _hashes_file(params["documents"])
        known = json.loads(hashes_file.read_text()) if hashes_file.exists() else {}
        changed = []
        for path in sorted(ObjectStoragePath(params["documents"]).iterdir(), key=lambda p: p.name):
            if not path.name.endswith(".md"):
                continue
            text = path.read_text(encoding="utf-8")
            digest = hashlib.sha256(text.encode()).hexdigest()
            if known.get(path.stem) != digest:
                title = text.splitlines()[0].lstrip("# ").strip()
                changed.append({"id": path.stem, "title": title, "text": text, "sha256": digest})
        print(f"{len(changed)} of the documents changed since the last run")
        return changed

    documents = changed_documents()
    embed = OpenRouterEmbeddingOperator(
        task_id="embed",
        items=documents,
        id_field="id",  # each row is keyed by the document's id
        text="{{ item.text }}",  # the text to embed, rendered per item (the item's own text is data)
        model=MODEL,
        deferrable=True,  # wait for the batch in the triggerer, not in a worker slot
        max_failed_fraction=0.1,  # a few failed documents do not fail the night: they are tried tomorrow
        # Unchanged documents are skipped by changed_documents above. The provider's result cache (once
        # it ships) will also skip texts embedded by any earlier run: pass result_cache=... here.
    )

    @task
    def publish(manifest: dict, documents: list[dict], params: dict) -> dict:
        """Read the vectors back, then record the hashes of the documents that got one."""
        import json

        uri = manifest["output_uri"]
        if uri.endswith(".parquet"):
            import pyarrow.parquet as pq

            with ObjectStoragePath(uri).open("rb") as file:
                rows = pq.read_table(file, columns=["id", "status", "vector"]).to_pylist()
        else:
            rows = [json.loads(line) for line in ObjectStoragePath(uri).read_text().splitlines()]
        embedded = {row["id"]: row["vector"] for row in rows if row["status"] == "succeeded"}
        # In production: upsert `embedded` into the vector store here.
        hashes_file = _hashes_file(params["documents"])
        known = json.loads(hashes_file.read_text()) if hashes_file.exists() else {}
        known.update({d["id"]: d["sha256"] for d in documents if d["id"] in embedded})
        hashes_file.parent.mkdir(parents=True, exist_ok=True)
        hashes_file.write_text(json.dumps(known, indent=1, sort_keys=True))
        print(f"{len(embedded)} vectors of {manifest['dimensions']} dimensions, ${manifest['cost_usd']:.6f}")
        return {
            "embedded": sorted(embedded),
            "dimensions": manifest["dimensions"],
            "cost_usd": manifest["cost_usd"],
        }

    publish(embed.output, documents)
