"""One real Airflow deployment shared by every end-to-end test (starting it is the expensive part)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stack import AirflowStack, StackError

# The whole e2e session -- start, every test, teardown -- must fit in this many seconds.
E2E_BUDGET_S = 360

# DAGs the tests trigger; the stack waits until the DAG processor has parsed all of them.
E2E_DAG_IDS = (
    "e2e_core_deferral",
    "e2e_kill_batch",
    "example_openrouter_batch_extraction",
    "example_openrouter_batch_sensor",
    "example_openrouter_sharded",
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def airflow_stack(request: pytest.FixtureRequest) -> Iterator[AirflowStack]:
    stack = AirflowStack(budget_s=E2E_BUDGET_S)
    try:
        try:
            stack.start(
                # "default" serves the examples with batches that finish in about 13 s; "slow" holds its
                # batches in progress for an hour, so a test can act on a task while it is deferred.
                # Not faster: when a trigger fires before the scheduler has processed the deferring try's
                # exit, Airflow (3.1-3.3) may mark the resumed try up_for_retry ("finished with state
                # success, but the task instance's state is queued": apache/airflow#67287, #72716).
                # Real batches take minutes; a loaded CI machine's scheduler can lag by several seconds.
                emulators={"default": (2.0, 10.0, 1.0), "slow": (1.0, 3600.0, 0.0)},
                dag_ids=E2E_DAG_IDS,
            )
        except (StackError, OSError) as exc:
            pytest.fail(f"the Airflow stack did not start: {exc}\n{stack.diagnostics()}", pytrace=False)
        yield stack
    finally:
        failed = request.session.testsfailed > 0
        stack.stop(remove_home=not failed)
        if failed:
            print(f"e2e: kept AIRFLOW_HOME with all logs at {stack.home}")


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, airflow_stack: AirflowStack) -> Iterator[None]:
    """When a test fails, show what the components and tasks logged (pytest prints teardown output)."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(airflow_stack.diagnostics())
