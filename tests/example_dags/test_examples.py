"""Every shipped example: it parses cleanly and cheaply, and a full run succeeds against the emulator.

The runs use ``dag.test()`` (triggers run inline). Assertions are what a user of the example would look
at: task states, the results file's rows, the manifest's counts, and what was actually sent to
OpenRouter (from the emulator's request journal).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from airflow_openrouter.testing import OpenRouterEmulator
from tests.conftest import EXAMPLE_DAGS, load_dag_file, xcom_value

EXAMPLES = {
    "example_daily_digest.py": "example_openrouter_daily_digest",
    "example_batch_extraction.py": "example_openrouter_batch_extraction",
    "example_batch_sensor.py": "example_openrouter_batch_sensor",
    "example_vision.py": "example_openrouter_vision",
    "example_function_calling.py": "example_openrouter_function_calling",
    "example_concurrent.py": "example_openrouter_concurrent",
    "example_embeddings.py": "example_openrouter_embeddings",
    "example_nightly_incremental.py": "example_openrouter_nightly_incremental",
    "example_sharded.py": "example_openrouter_sharded",
}
INVOICES = sorted(p.stem for p in (EXAMPLE_DAGS / "data" / "invoices").glob("*.txt"))
TICKETS = sorted(p.stem.removeprefix("ticket_") for p in (EXAMPLE_DAGS / "data" / "tickets").glob("*.md"))


def load_example(file_name: str) -> ModuleType:
    return load_dag_file(EXAMPLE_DAGS / file_name)


def read_rows(uri: str) -> list[dict]:
    from airflow.sdk import ObjectStoragePath

    return [json.loads(line) for line in ObjectStoragePath(uri).read_text().splitlines()]


@pytest.fixture
def emulator(openrouter_emulator: OpenRouterEmulator) -> OpenRouterEmulator:
    """The plugin's fixture, as users of the package get it: batches complete within about a second."""
    return openrouter_emulator


# --- parsing ------------------------------------------------------------------------------------------


def test_the_dag_processor_finds_exactly_the_examples_without_errors(airflow_db):
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=EXAMPLE_DAGS, bundle_path=EXAMPLE_DAGS)  # load_examples is off in conftest

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(EXAMPLES.values())
    # data/draw_chart.py, demo.py and the prompts are kept out of parsing by .airflowignore.
    assert sorted(Path(stat.file).name for stat in bag.dagbag_stats) == sorted(EXAMPLES)
    for dag_id in EXAMPLES.values():
        dag = bag.get_dag(dag_id)
        assert "example" in dag.tags and dag.description, dag_id
        assert dag.doc_md is None or dag.doc_md.strip()


# Imported by the provider's execute() paths only; a DAG file must not pull them in at parse time.
HEAVY = (
    "httpx",
    "aiohttp",
    "jsonschema",
    "starlette",
    "uvicorn",
    "airflow_openrouter.hooks",
    "airflow_openrouter._transport",
    "airflow_openrouter.batch",
    "airflow_openrouter.testing",
    "airflow_openrouter.schemas",
    "pyarrow",
)


@pytest.mark.parametrize("file_name", sorted(EXAMPLES))
def test_parsing_an_example_imports_nothing_heavy(file_name):
    """The DAG processor re-imports DAG files all the time: no HTTP client, hook or I/O at parse time."""
    path = str(EXAMPLE_DAGS / file_name)
    probe = (
        "import runpy, sys, warnings\n"
        "import pydantic\n"
        # The baseline: what any DAG file with a task and a param costs (Airflow 3.1 loads jsonschema).
        "from airflow.sdk import DAG, ObjectStoragePath, Param, task\n"
        "with DAG('baseline', schedule=None, params={'n': Param(1, type='integer')}):\n"
        "    task(lambda: None, task_id='noop')()\n"
        "before = set(sys.modules)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    runpy.run_path({path!r})\n"
        # A warning raised by the example's own code (a deprecated import, say) is a bug in it.
        f"print([str(w.message) for w in caught if w.filename == {path!r}])\n"
        f"print(sorted(m for m in set(sys.modules) - before if m.startswith({HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    warned, heavy = done.stdout.strip().splitlines()[-2:]
    assert warned == "[]"
    assert heavy == "[]"


def test_no_example_prompt_uses_ds():
    """``ds`` is undefined in runs triggered from the UI or API (no logical date)."""
    sources = [*EXAMPLE_DAGS.glob("*.py"), *EXAMPLE_DAGS.glob("prompts/*.j2")]
    offenders = [p.name for p in sources if "{{ ds" in p.read_text() or "{{ds" in p.read_text()]
    assert offenders == []


# --- runs ---------------------------------------------------------------------------------------------


def test_daily_digest(airflow_db, emulator):
    example = load_example("example_daily_digest.py")

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    digest = xcom_value(dag_run, "summarise")
    example.DailyDigest.model_validate(digest)  # the downstream task got schema-valid data
    assert xcom_value(dag_run, "publish_digest").startswith(f"*{digest['headline']}*")
    (request,) = emulator.requests_to("/chat/completions", method="POST")
    body = request.body
    assert body["model"] == example.MODEL
    assert body["response_format"]["type"] == "json_schema"
    prompt = body["messages"][-1]["content"]
    assert f"opened on {dag_run.run_after.strftime('%A %d %B %Y')} (16 in total)" in prompt
    assert all(f"Ticket {ticket_id} |" in prompt for ticket_id in TICKETS)
    usage = xcom_value(dag_run, "summarise", key="openrouter_usage")
    assert usage["prompt_tokens"] > 0 and usage["cost"] > 0


def test_batch_extraction_writes_one_validated_row_per_invoice(airflow_db, emulator):
    example = load_example("example_batch_extraction.py")

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    manifest = xcom_value(dag_run, "extract_fields")
    assert manifest["engine"] == "batch" and manifest["batch_count"] == 1
    assert manifest["counts"]["succeeded"] == manifest["total"] == len(INVOICES) == 24
    assert manifest["total_tokens"] > 0 and manifest["cost_usd"] > 0
    rows = read_rows(manifest["output_uri"])
    assert sorted(row["custom_id"] for row in rows) == INVOICES  # keyed by id_field
    for row in rows:
        assert INVOICES[row["index"]] == row["custom_id"]  # "index" is the item's position
        assert row["status"] == "succeeded" and row["error"] is None
        example.InvoiceFields.model_validate(row["output"])
    # One Batch API submission holding every invoice, each prompt carrying its document.
    (post,) = emulator.requests_to("/batches", method="POST")
    requests = post.body["requests"]
    assert len(requests) == 24 and emulator.requests_to("/chat/completions") == []
    invoice_07 = (EXAMPLE_DAGS / "data" / "invoices" / "invoice_07.txt").read_text()
    assert invoice_07 in requests[6]["body"]["messages"][-1]["content"]
    report = xcom_value(dag_run, "report")
    assert report["succeeded"] == 24
    assert sum(report["totals_by_currency"].values()) == pytest.approx(
        sum(r["output"]["total"] for r in rows)
    )


def test_batch_extraction_recovers_a_failed_and_an_invalid_row_and_reports_them(airflow_db, emulator, capsys):
    emulator.batch_item_errors_next(custom_ids=["invoice_03"])
    emulator.batch_invalid_output_next(custom_ids=["invoice_11"])
    example = load_example("example_batch_extraction.py")

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    manifest = xcom_value(dag_run, "extract_fields")
    assert manifest["counts"]["succeeded"] == 24 and manifest["batch_count"] == 1
    assert manifest["recovery"]["rows"] == 2 and manifest["recovery"]["recovered"] == 2
    rows = {row["custom_id"]: row for row in read_rows(manifest["output_uri"])}
    assert rows["invoice_03"]["history"][0]["cause"] == "provider_unavailable"
    assert rows["invoice_11"]["history"][0]["cause"] == "invalid output"
    # Two rows: sent from the worker (no second wait for a batch), the invalid one with its repair turn.
    sent = [r.body for r in emulator.requests_to("/chat/completions", method="POST")]
    assert len(sent) == 2 and sorted(len(b["messages"]) for b in sent) == [2, 4]
    assert xcom_value(dag_run, "report")["recovered"] == 2
    printed = capsys.readouterr().out
    assert "Recovered:    2 of 2 rows sent again" in printed
    assert "invoice_11: attempt 1 was invalid_output (invalid output)" in printed


def test_batch_sensor_waits_then_the_results_are_collected(airflow_db, emulator):
    example = load_example("example_batch_sensor.py")
    # The example polls every minute, as suits a real batch; the emulator's batch is done in a second.
    example.dag.get_task("wait_for_triage").poke_interval = 0.5

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    submitted = xcom_value(dag_run, "submit_triage")
    sensed = xcom_value(dag_run, "wait_for_triage")
    assert sensed["batch_ids"] == submitted["batch_ids"] and len(submitted["batch_ids"]) == 1
    assert sensed["batches"][0]["status"] == "completed" and sensed["batches"][0]["completed"] == 16
    collected = xcom_value(dag_run, "collect_triage")
    assert collected["counts"]["unreadable"] == 0 and sum(collected["counts"].values()) == 16
    rows = read_rows(collected["results_file"])
    assert sorted(row["ticket"] for row in rows) == TICKETS
    for row in rows:
        example.TicketTriage.model_validate(row["triage"])
    assert len(emulator.requests_to("/batches", method="POST")) == 1


def test_vision_sends_the_chart_inline_and_gets_a_structured_reading(airflow_db, emulator):
    example = load_example("example_vision.py")

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    (request,) = emulator.requests_to("/chat/completions", method="POST")
    text, image = request.body["messages"][-1]["content"]
    assert text["type"] == "text" and "chart" in text["text"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    reading = example.ChartReading.model_validate(xcom_value(dag_run, "read_chart"))
    compared = xcom_value(dag_run, "compare_quarters")
    assert compared["values"] == {bar.label: bar.value for bar in reading.bars}


def test_function_calling_hands_the_tool_call_downstream(airflow_db, emulator):
    example = load_example("example_function_calling.py")

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    (request,) = emulator.requests_to("/chat/completions", method="POST")
    assert [t["function"]["name"] for t in request.body["tools"]] == ["issue_refund", "escalate"]
    assert request.body["tool_choice"] == "required"
    (call,) = xcom_value(dag_run, "decide")
    assert call["name"] in ("issue_refund", "escalate") and isinstance(call["arguments"], dict)
    (ran,) = xcom_value(dag_run, "run_tool_calls")
    assert ran["call_id"] == call["id"] and ran["tool"] == call["name"]


def test_concurrent_engine_answers_every_invoice_without_the_batch_api(airflow_db, emulator):
    example = load_example("example_concurrent.py")

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    manifest = xcom_value(dag_run, "extract_fields")
    assert manifest["engine"] == "concurrent" and manifest["batch_ids"] == []
    assert manifest["counts"]["succeeded"] == 24
    assert 0 < manifest["cost_usd"] <= 0.05  # under the example's cost cap
    rows = read_rows(manifest["output_uri"])
    assert sorted(row["custom_id"] for row in rows) == INVOICES
    assert emulator.requests_to("/batches") == []
    assert len(emulator.requests_to("/chat/completions", method="POST")) == 24
    assert xcom_value(dag_run, "report")["succeeded"] == 24


def test_embeddings_embed_every_document_then_only_the_changed_ones(airflow_db, emulator, tmp_path):
    import shutil
    from array import array

    import pyarrow.parquet as pq

    from airflow_openrouter.hooks.openrouter import OpenRouterHook

    corpus = tmp_path / "tickets"
    shutil.copytree(EXAMPLE_DAGS / "data" / "tickets", corpus)
    example = load_example("example_embeddings.py")
    example.dag.get_task("embed").result_cache = f"file://{tmp_path}/cache"
    conf = {"documents": f"file://{corpus}"}

    def vectors(dag_run) -> dict[str, dict]:
        uri = xcom_value(dag_run, "embed")["output_uri"].removeprefix("file://")
        return {r["id"]: r for r in pq.read_table(uri).to_pylist()}

    first = example.dag.test(run_conf=conf)

    assert first.state == "success"
    manifest = xcom_value(first, "embed")
    assert manifest["engine"] == "batch" and manifest["counts"]["succeeded"] == manifest["total"] == 16
    assert manifest["output_uri"].endswith(".parquet") and manifest["dimensions"] == 1536
    assert manifest["cached"] == 0
    (post,) = emulator.requests_to("/batches", method="POST")
    assert post.body["endpoint"] == "/v1/embeddings" and len(post.body["requests"]) == 16
    rows = vectors(first)
    ticket = (corpus / "ticket_1041.md").read_text()
    with OpenRouterHook() as hook:
        (expected,) = hook.embed(model=example.MODEL, input=[ticket]).vectors()
    assert array("f", rows["ticket_1041"]["vector"]) == expected
    assert xcom_value(first, "publish")["embedded"] == sorted(rows)

    # The next night: one ticket was edited, one is new; the other 15 come from the result cache.
    edited = ticket + "\nUpdate: fixed by regenerating the PDFs.\n"
    (corpus / "ticket_1041.md").write_text(edited)
    (corpus / "ticket_1099.md").write_text("# Ticket 1099: Export to CSV drops accents\n\nÉmile's name.")
    emulator.clear_requests()
    billed_before = emulator.billed_usd

    second = example.dag.test(run_conf=conf)

    assert second.state == "success"
    (post,) = emulator.requests_to("/batches", method="POST")
    assert sorted(r["custom_id"].split("~")[0] for r in post.body["requests"]) == [
        "ticket_1041",
        "ticket_1099",
    ]
    assert sorted(r["body"]["input"] for r in post.body["requests"]) == sorted(
        [edited, (corpus / "ticket_1099.md").read_text()]
    )
    manifest = xcom_value(second, "embed")
    assert manifest["total"] == 17 and manifest["cached"] == 15 and manifest["counts"]["succeeded"] == 17
    assert manifest["cost_usd"] == pytest.approx(emulator.billed_usd - billed_before)
    assert manifest["cost_usd"] > 0 and manifest["cost_saved_usd"] > 0
    assert xcom_value(second, "publish") | {"cost_usd": None} == {
        "vectors": 17,
        "embedded": ["ticket_1041", "ticket_1099"],
        "cached": 15,
        "dimensions": 1536,
        "cost_usd": None,
    }
    again = vectors(second)
    assert all(again[i]["vector"] == rows[i]["vector"] for i in rows if i != "ticket_1041")
    with OpenRouterHook() as hook:
        (expected,) = hook.embed(model=example.MODEL, input=[edited]).vectors()
    assert array("f", again["ticket_1041"]["vector"]) == expected
    emulator.clear_requests()

    # A night without changes sends nothing at all.
    third = example.dag.test(run_conf=conf)

    assert third.state == "success" and emulator.requests_to("/batches", method="POST") == []
    assert xcom_value(third, "publish")["embedded"] == [] and xcom_value(third, "embed")["cached"] == 17


def test_nightly_incremental_pays_only_for_the_tickets_that_changed(airflow_db, emulator, tmp_path):
    import shutil

    example = load_example("example_nightly_incremental.py")
    example.dag.get_task("triage_tickets").result_cache = f"file://{tmp_path}/cache"
    folder = tmp_path / "tickets"
    shutil.copytree(EXAMPLE_DAGS / "data" / "tickets", folder)
    conf = {"tickets_folder": str(folder)}

    first = example.dag.test(run_conf=conf)
    assert first.state == "success"
    assert xcom_value(first, "report") == {
        "cached": 0,
        "sent": 16,
        "cost_usd": pytest.approx(emulator.billed_usd),
    }
    manifest = xcom_value(first, "triage_tickets")
    assert 0 < manifest["cost_usd"] <= manifest["estimated_cost_usd"] <= 0.50
    assert manifest["list_price_usd"] == pytest.approx(2 * manifest["cost_usd"])  # the Batch API's half price

    # The next night: one ticket was edited, one is new; the other 15 are answered from the cache.
    edited = folder / "ticket_1044.md"
    edited.write_text(edited.read_text() + "\nUpdate: it happens again this morning.\n")
    (folder / "ticket_1099.md").write_text(
        "# Ticket 1099: Export to CSV drops accents\n\nÉmile's name is broken."
    )
    emulator.clear_requests()
    billed_before = emulator.billed_usd

    second = example.dag.test(run_conf=conf)

    assert second.state == "success"
    (post,) = emulator.requests_to("/batches", method="POST")
    assert sorted(r["custom_id"].split("~")[0] for r in post.body["requests"]) == ["1044", "1099"]
    report = xcom_value(second, "report")
    assert report["cached"] == 15 and report["sent"] == 2
    manifest = xcom_value(second, "triage_tickets")
    assert manifest["cost_usd"] == pytest.approx(emulator.billed_usd - billed_before)
    assert manifest["cost_saved_usd"] > 0 and manifest["counts"]["succeeded"] == 17
    metadata = post.item_attributions[post.body["requests"][0]["custom_id"]].metadata
    assert (
        metadata["dag_id"] == "example_openrouter_nightly_incremental"
        and metadata["task_id"] == "triage_tickets"
    )
    assert metadata["run_id"] == second.run_id


def test_sharded_run_spreads_the_invoices_over_mapped_tasks_and_merges_them(airflow_db, emulator):
    example = load_example("example_sharded.py")

    dag_run = example.dag.test()

    assert dag_run.state == "success"
    shards = xcom_value(dag_run, "split")
    assert [uri.rsplit("/", 1)[-1] for uri in shards] == [f"part-{k:05d}-of-00004.jsonl" for k in range(4)]
    manifests = [xcom_value(dag_run, "extract_fields", map_index=k) for k in range(4)]
    # Each shard wrote its own results file (the map index before .jsonl), with its own items.
    uris = [m["output_uri"] for m in manifests]
    assert [uri.rsplit(".", 2)[-2] for uri in uris] == ["0", "1", "2", "3"] and len(set(uris)) == 4
    rows_by_shard = [sorted(read_rows(uri), key=lambda row: row["index"]) for uri in uris]
    assert [len(rows) for rows in rows_by_shard] == [6, 6, 6, 6]
    assert [row["custom_id"] for row in rows_by_shard[1]] == INVOICES[1::4]  # round-robin: item j*4 + 1
    assert sorted(row["custom_id"] for rows in rows_by_shard for row in rows) == INVOICES
    for rows in rows_by_shard:
        for row in rows:
            assert row["status"] == "succeeded"
            example.InvoiceFields.model_validate(row["output"])
    # Exactly one request per invoice over all the shards: nothing sent twice.
    posts = emulator.requests_to("/chat/completions", method="POST")
    assert len(posts) == 24
    assert sorted(p.body["messages"][-1]["content"].split("(", 1)[1].split(")", 1)[0] for p in posts) == [
        f"{name}.txt" for name in INVOICES
    ]
    report = xcom_value(dag_run, "report")
    assert report["shards"] == 4 and report["missing_shards"] == 0
    assert report["total"] == report["counts"]["succeeded"] == 24
    assert report["output_uris"] == uris
    assert report["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in manifests))
    assert sum(report["totals_by_currency"].values()) == pytest.approx(
        sum(row["output"]["total"] for rows in rows_by_shard for row in rows)
    )
