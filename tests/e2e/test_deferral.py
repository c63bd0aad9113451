"""End to end on real Airflow processes: deferrable tasks defer to the triggerer and resume."""

from __future__ import annotations

import pytest

from .stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_core_sensor_defers_and_succeeds(airflow_stack: AirflowStack) -> None:
    """The harness itself: a core deferrable sensor goes deferred -> success on the real triggerer."""
    run_id = airflow_stack.trigger("e2e_core_deferral")

    ti = airflow_stack.wait_for_deferral("e2e_core_deferral", run_id, "wait")
    assert ti["trigger"]["classpath"].endswith("DateTimeTrigger")  # what TimeDeltaTrigger serializes to

    run = airflow_stack.wait_for_run("e2e_core_deferral", run_id)
    assert run["state"] == "success", run
    assert run["task_states"] == {"wait": "success"}
