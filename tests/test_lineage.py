"""OpenLineage: the facets the chat and the batch operator return (inputs, outputs, the ``openRouter_llm``
run facet), and one DAG run through the OpenLineage provider's listener with a file transport."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest
from airflow.sdk import DAG, Asset
from openlineage.client.generated.base import InputDataset, OutputDataset

from airflow_openrouter.lineage import FACET_KEY, OpenRouterLlmRunFacet, _file_dataset
from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.operators.chat import OpenRouterChatOperator
from airflow_openrouter.testing import OpenRouterEmulator
from tests.batch.support import BATCH_DURATIONS, FakeTaskInstance, run_operator
from tests.conftest import REPO, TEST_DAGS
from tests.dags.lineage_and_links import PRIVATE_DOCUMENT, PRIVATE_ITEM

MODEL = "openai/gpt-4o-mini"
SCHEMA = json.loads((REPO / "airflow_openrouter" / "OpenRouterLlmRunFacet.json").read_text())


def run(operator, ti: FakeTaskInstance, **context: Any) -> Any:
    """Render and run *operator* as the task runner does (through its trigger when it defers)."""
    full_context = {"ti": ti, "run_id": ti.run_id, **context}
    operator.render_template_fields(full_context)
    return run_operator(operator, full_context)


def facet_of(lineage) -> dict[str, Any]:
    facet = lineage.run_facets[FACET_KEY]
    assert isinstance(facet, OpenRouterLlmRunFacet)
    return attrs.asdict(facet)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assert_matches_the_shipped_schema(facet: dict[str, Any]) -> None:
    own = SCHEMA["$defs"]["OpenRouterLlmRunFacet"]["allOf"][1]
    fields = {k: v for k, v in facet.items() if not k.startswith("_")}
    jsonschema.validate(fields, own)
    assert set(fields) == set(own["properties"]), "the schema file and the facet class list the same fields"


# --- the chat operator ----------------------------------------------------------------------------


def test_the_chat_facet_has_the_call_and_the_templates_hash_never_the_prompt_or_reply(openrouter_emulator):
    ti = FakeTaskInstance(run_id="lineage_chat", task_id="summarise")
    with DAG("lineage_chat", schedule=None, template_searchpath=[str(TEST_DAGS)]):
        op = OpenRouterChatOperator(
            task_id="summarise",
            prompt="prompts/chat_summary.j2",
            system_prompt="You write for {{ audience }}.",
            prompt_vars={"audience": "executives", "document": PRIVATE_DOCUMENT},
            model=MODEL,
            inlets=[Asset("file:///data/tickets.csv")],
        )

    reply = run(op, ti)
    lineage = op.get_openlineage_facets_on_complete(ti)

    usage = ti.xcoms["openrouter_usage"]
    facet = facet_of(lineage)
    template_text = (TEST_DAGS / "prompts" / "chat_summary.j2").read_text()
    assert facet["engine"] == "chat" and facet["requestedModel"] == MODEL
    assert (facet["model"], facet["provider"]) == (usage["model"], usage["provider"])
    assert facet["generationIds"] == usage["generation_ids"] and facet["batchIds"] == []
    assert (facet["promptTokens"], facet["completionTokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert facet["costUsd"] == usage["cost"] > 0
    assert facet["promptTemplates"] == [
        {
            "field": "system_prompt",
            "name": "inline system_prompt",
            "sha256": sha256("You write for {{ audience }}."),
        },
        {"field": "prompt", "name": "prompts/chat_summary.j2", "sha256": sha256(template_text)},
    ]
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", "/data/tickets.csv")]
    serialized = json.dumps(facet)
    for private in (PRIVATE_DOCUMENT, reply, op.prompt, "executives"):
        assert private not in serialized
    assert_matches_the_shipped_schema(facet)


def test_on_start_the_chat_facet_says_what_the_task_was_asked_and_nothing_ran_yet():
    op = OpenRouterChatOperator(task_id="t", prompt="Hello {{ name }}", model=MODEL)

    facet = facet_of(op.get_openlineage_facets_on_start())

    assert facet["model"] == facet["requestedModel"] == MODEL
    assert facet["generationIds"] == [] and facet["costUsd"] is None
    assert facet["promptTemplates"] == [
        {"field": "prompt", "name": "inline prompt", "sha256": sha256("Hello {{ name }}")}
    ]


# --- the batch operator ---------------------------------------------------------------------------


@pytest.fixture
def batch_emulator(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__OPENROUTER__RESULTS_PATH", f"file://{tmp_path}/out")
    with OpenRouterEmulator(batch_durations=BATCH_DURATIONS) as emulator:
        for name, value in emulator.connection_env(max_retries=1).items():
            monkeypatch.setenv(name, value)
        yield emulator


def items_file(tmp_path: Path, n: int) -> str:
    path = tmp_path / "in" / "tickets.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"text": f"{PRIVATE_ITEM} {i}"}) + "\n" for i in range(n)))
    return f"file://{path}"


def test_the_batch_facets_name_the_items_file_the_results_file_and_what_was_billed(batch_emulator, tmp_path):
    uri = items_file(tmp_path, 4)
    op = OpenRouterBatchOperator(
        task_id="classify", items=uri, prompt="Classify: {{ item.text }}", model=MODEL, deferrable=True
    )
    ti = FakeTaskInstance(run_id="lineage_batch", task_id="classify")

    started = op.get_openlineage_facets_on_start()
    manifest = run(op, ti)
    completed = op.get_openlineage_facets_on_complete(ti)

    items = ("file", str(tmp_path / "in" / "tickets.jsonl"))
    assert [(d.namespace, d.name) for d in started.inputs] == [items] and started.outputs == []
    assert [(d.namespace, d.name) for d in completed.inputs] == [items]
    (output,) = completed.outputs
    assert isinstance(output, OutputDataset)
    assert (output.namespace, output.name) == ("file", manifest["output_uri"].removeprefix("file://"))
    assert output.outputFacets["outputStatistics"].rowCount == 4
    facet = facet_of(completed)
    assert facet["engine"] == "batch" and facet["batchIds"] == manifest["batch_ids"] != []
    assert facet["counts"] == {"succeeded": 4}
    assert (facet["promptTokens"], facet["completionTokens"]) == (
        manifest["prompt_tokens"],
        manifest["completion_tokens"],
    )
    assert facet["costUsd"] == manifest["cost_usd"] > 0 and facet["provider"] == manifest["provider"]
    assert PRIVATE_ITEM not in json.dumps(facet)
    assert_matches_the_shipped_schema(facet)


def test_a_failed_batch_task_still_reports_the_rows_it_paid_for(batch_emulator, tmp_path):
    from airflow_openrouter.exceptions import OpenRouterError

    batch_emulator.batch_item_errors_next(fraction=1.0)
    op = OpenRouterBatchOperator(
        task_id="classify",
        items=items_file(tmp_path, 3),
        prompt="C: {{ item.text }}",
        model=MODEL,
        max_row_attempts=1,  # no recovery pass: the task fails on the first pass's rows
    )
    ti = FakeTaskInstance(run_id="lineage_failed", task_id="classify")

    with pytest.raises(OpenRouterError):
        run(op, ti)
    # The provider calls on_complete for a failed task too (there is no on_failure of our own).
    facet = facet_of(op.get_openlineage_facets_on_complete(ti))

    assert facet["counts"] == {"failed": 3} and facet["batchIds"]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://aws_default@bucket/pre/x.jsonl", ("s3://bucket", "pre/x.jsonl")),
        ("gs://bucket/p/x.jsonl", ("gs://bucket", "p/x.jsonl")),
        ("file:///tmp/a/b.jsonl", ("file", "/tmp/a/b.jsonl")),
    ],
)
def test_files_are_named_as_objectstoragepath_names_them_without_the_connection_id(location, expected):
    dataset = _file_dataset(InputDataset, location)

    assert (dataset.namespace, dataset.name) == expected


# --- through the OpenLineage provider's listener --------------------------------------------------

_RUN_DAG = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("lineage_dag_file", {dag_file!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print("STATE", module.lineage_dag.test().state)
"""


def test_the_openlineage_listener_emits_our_datasets_and_run_facet_to_a_file_transport(airflow_db, tmp_path):
    events_file = tmp_path / "ol.jsonl"
    with OpenRouterEmulator(batch_durations=BATCH_DURATIONS) as emulator:
        env = {
            **os.environ,
            **emulator.connection_env(),
            # Read when Airflow starts (and cached), hence a process of its own. The provider's default
            # mode runs the listener in a forked process, where the facets must be built without I/O.
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events_file), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "test",
        }
        script = textwrap.dedent(_RUN_DAG.format(dag_file=str(TEST_DAGS / "lineage_and_links.py")))
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
    assert "STATE success" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]

    text = events_file.read_text()
    events = [json.loads(line) for line in text.splitlines()]
    complete = {
        e["job"]["name"]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }
    classify = complete["lineage_and_links.classify"]
    facet = classify["run"]["facets"][FACET_KEY]
    assert facet["engine"] == "batch" and len(facet["batchIds"]) == 1 and facet["counts"] == {"succeeded": 3}
    assert facet["costUsd"] > 0 and facet["_producer"].startswith("https://github.com/apache/airflow")
    assert [i["namespace"] for i in classify["inputs"]] == ["file"]
    assert classify["inputs"][0]["name"].endswith(".jsonl") and "/items/" in classify["inputs"][0]["name"]
    assert classify["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 3
    summarise = complete["lineage_and_links.summarise"]
    assert summarise["run"]["facets"][FACET_KEY]["generationIds"]
    assert [(d["namespace"], d["name"]) for d in summarise["inputs"]] == [("file", "/data/tickets.csv")]
    assert [(d["namespace"], d["name"]) for d in summarise["outputs"]] == [("file", "/data/summaries.json")]
    # do_xcom_push=False: no XCom, but lineage still says what the call cost.
    assert complete["lineage_and_links.quiet"]["run"]["facets"][FACET_KEY]["costUsd"] > 0
    # No prompt, item or completion reaches a lineage event, whatever facet the provider adds.
    assert PRIVATE_DOCUMENT not in text and PRIVATE_ITEM not in text
