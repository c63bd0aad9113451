"""The batch operator and sensor in DAG runs (dag.test(), triggers run inline) against the emulator."""

from __future__ import annotations

import pytest

from airflow_openrouter.testing import OpenRouterEmulator
from tests.batch.support import BATCH_DURATIONS, batch_posts
from tests.conftest import TEST_DAGS, xcom_value

DAG_FILE = TEST_DAGS / "batch_pipeline.py"


@pytest.fixture
def emulator(monkeypatch):
    with OpenRouterEmulator(batch_durations=BATCH_DURATIONS) as emu:
        for name, value in emu.connection_env(max_retries=0).items():
            monkeypatch.setenv(name, value)
        yield emu


def test_deferred_batch_resumes_and_a_retry_re_attaches_instead_of_resubmitting(run_dag, emulator):
    # The first try's results fetch fails after the batch completed: the retry must fetch, not submit.
    emulator.fail_next(route="/batches/*/results", status=500, times=1)

    dag_run = run_dag(DAG_FILE, "batch_deferred")

    assert dag_run.state == "success"
    (post,) = batch_posts(emulator)
    assert len(emulator.requests_to("/batches/*/results")) == 2  # one failed try, one good one
    first = post["requests"][0]["body"]["messages"]
    assert first[0] == {"role": "system", "content": "Answer in one sentence."}
    assert "For executives, summarise document 0 (doc-0)" in first[1]["content"]
    assert "{{ var.value.secret }} {% if true %}EVALUATED{% endif %}" in first[1]["content"]
    manifest = xcom_value(dag_run, "summarise")
    assert manifest["counts"]["succeeded"] == 12 and manifest["batch_count"] == 1
    assert xcom_value(dag_run, "check_manifest") == 12


def test_sensor_waits_in_poke_reschedule_and_deferrable_modes(run_dag, emulator):
    dag_run = run_dag(DAG_FILE, "batch_sensed")

    assert dag_run.state == "success"
    assert len(batch_posts(emulator)) == 1
    submitted = xcom_value(dag_run, "submit")["batch_ids"]
    for mode in ("poke", "reschedule", "deferrable"):
        result = xcom_value(dag_run, f"wait_{mode}")
        assert result["batch_ids"] == submitted, mode
        assert result["batches"][0]["status"] == "completed" and result["usage"]["cost"] > 0
