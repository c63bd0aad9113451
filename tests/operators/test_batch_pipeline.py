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


def _task_instance(dag_run, task_id: str):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
            .filter(TaskInstance.task_id == task_id)
            .one()
        )
        session.expunge(ti)
        return ti


def _task_state_rows(dag_run) -> int | None:
    """Rows of the task state store for the run (None before Airflow 3.3, which has none)."""
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:
        return None
    from airflow.utils.session import create_session

    with create_session() as session:
        return (
            session.query(TaskStateStoreModel)
            .filter(
                TaskStateStoreModel.dag_id == dag_run.dag_id, TaskStateStoreModel.run_id == dag_run.run_id
            )
            .count()
        )


def test_a_clear_after_success_re_attaches_although_clear_on_success_deleted_the_task_state(
    run_dag, emulator, monkeypatch
):
    from datetime import datetime, timezone

    monkeypatch.setenv("AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS", "True")
    when = datetime(2026, 11, 2, 6, 0, tzinfo=timezone.utc)

    first = run_dag(DAG_FILE, "batch_cleared", logical_date=when, run_after=when)
    assert first.state == "success"
    assert _task_state_rows(first) in (0, None)  # the setting took effect (on 3.3+)
    cleared = run_dag(DAG_FILE, "batch_cleared", logical_date=when, run_after=when)  # the same run again

    assert cleared.state == "success" and cleared.run_id == first.run_id
    assert len(batch_posts(emulator)) == 1  # re-attached to the recorded batch: paid once
    assert xcom_value(cleared, "summarise")["counts"]["succeeded"] == 4


def test_transient_item_failures_are_retried_by_airflow_sending_only_those_items(run_dag, emulator):
    emulator.fail_next(route="/chat/completions", status=503, times=3)

    dag_run = run_dag(DAG_FILE, "concurrent_retried")

    assert dag_run.state == "success"
    assert _task_instance(dag_run, "classify").try_number == 2
    assert len(emulator.requests_to("/chat/completions", method="POST")) == 13


def test_a_rejected_key_fails_the_task_at_once_without_using_its_retries(run_dag, emulator):
    emulator.fail_next(route="/chat/completions", status=401, times=100)

    dag_run = run_dag(DAG_FILE, "concurrent_systemic")

    assert dag_run.state == "failed"
    ti = _task_instance(dag_run, "classify")
    assert ti.state == "failed" and ti.try_number == 1  # retries=2 left unused: it would fail the same way
    assert len(emulator.requests_to("/chat/completions", method="POST")) == 1
