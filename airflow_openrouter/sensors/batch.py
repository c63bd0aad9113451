"""OpenRouterBatchSensor: waits for OpenRouter batches submitted elsewhere (e.g. with
``OpenRouterBatchOperator(wait_for_completion=False)``), in poke, reschedule or deferrable mode.

A poke runs the same poll round (:func:`~airflow_openrouter.batch.poll.poll_round`) and feeds the same
:class:`~airflow_openrouter.batch.watch.BatchWatch` as the trigger, so the three modes decide
identically. The watch lives as long as the sensor's process (across the pokes of poke mode), each
poll is bounded by the time left to the sensor's ``timeout``, and a batch id that answers 404 for
longer than the read-after-write grace since the sensor started fails the sensor instead of waiting
for its timeout. The sensor never fetches results.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_openrouter import DEFAULT_CONN_ID
from airflow_openrouter._compat import conf
from airflow_openrouter.links import OpenRouterBatchLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_openrouter.batch.watch import BatchEvent, BatchWatch

__all__ = ["OpenRouterBatchSensor"]


class OpenRouterBatchSensor(BaseSensorOperator):
    """Wait until every batch has finished; succeed if all completed, fail otherwise.

    Returns (XCom) ``{"batch_ids", "batches": [{"id", "status", "total", "completed", "failed"}],
    "usage": {"prompt_tokens", "completion_tokens", "total_tokens", "cost"}}``. A batch that failed,
    expired, was cancelled or is not found fails the sensor with OpenRouter's reason (skipped with
    ``soft_fail``). When the batches cannot be polled (a rejected key, an outage) the sensor fails
    retryably, never skipped: that is no verdict on the batches. An empty list (an upstream operator
    that had no items) has nothing to wait for and succeeds at once.

    :param batch_ids: one id or a list (templated), e.g. ``submit.output["batch_ids"]``.
    :param openrouter_conn_id: the OpenRouter connection.
    :param deferrable: wait in the triggerer (same trigger as the operator) instead of poking.
    :param poll_interval: seconds between two polls in deferrable mode (> 0; default: ``[openrouter]
        poll_interval``, like the operator; ``poke_interval`` paces poke and reschedule modes).
    """

    template_fields: Sequence[str] = ("batch_ids",)
    ui_color = "#c5cae9"
    operator_extra_links = (OpenRouterBatchLink(),)

    def __init__(
        self,
        *,
        batch_ids: str | Sequence[str],
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if poll_interval is not None:
            from airflow_openrouter.batch.options import check_poll_interval

            check_poll_interval(poll_interval)
        self.batch_ids = batch_ids
        self.openrouter_conn_id = openrouter_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self._watch: BatchWatch | None = None

    def _ids(self) -> list[str]:
        ids = [self.batch_ids] if isinstance(self.batch_ids, str) else self.batch_ids
        if not isinstance(ids, Sequence) or not all(isinstance(i, str) and i for i in ids):
            from airflow_openrouter.exceptions import OpenRouterConfigError

            raise OpenRouterConfigError(
                f"batch_ids must be a batch id or a list of them (empty: nothing to wait for), got "
                f"{self.batch_ids!r:.100}."
            )
        return list(ids)

    def execute(self, context: Context) -> Any:
        # A misconfiguration (bad batch_ids, a connection without a key) is no verdict on the batches:
        # raised here, before the pokes, so that soft_fail never turns it into a skip.
        if self._ids():  # no ids: nothing to wait for, no connection needed
            from airflow_openrouter.hooks.openrouter import OpenRouterHook

            with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook:
                _ = hook.settings
        if not self.deferrable:
            return super().execute(context)
        # One cheap look first: finished batches need no trip through the triggerer.
        done = self._poke_honouring_soft_fail(context)
        if done:
            return done.xcom_value if isinstance(done, PokeReturnValue) else None
        from airflow_openrouter.batch.options import check_poll_interval
        from airflow_openrouter.operators._base import poll_interval
        from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

        interval = poll_interval(self.poll_interval)
        watch = self._watch
        self.defer(
            trigger=OpenRouterBatchTrigger(
                batch_ids=self._ids(),
                openrouter_conn_id=self.openrouter_conn_id,
                poll_interval=check_poll_interval(interval, "[openrouter] poll_interval"),
                deadline=watch.deadline if watch else time.time() + self.timeout,
                created_at=dict(watch.created_at) if watch else None,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def _poke_honouring_soft_fail(self, context: Context) -> bool | PokeReturnValue:
        # BaseSensorOperator.execute applies soft_fail to a failing poke; this path bypasses it.
        from airflow_openrouter._compat import AirflowFailException, AirflowSkipException

        try:
            return self.poke(context)
        except AirflowFailException as exc:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping (soft_fail): {exc}") from exc
            raise

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_openrouter.batch.poll import poll_once
        from airflow_openrouter.hooks.openrouter import OpenRouterHook

        ids = self._ids()
        if not ids:
            self.log.info("No batch ids: nothing to wait for.")
            return PokeReturnValue(is_done=True, xcom_value={"batch_ids": [], "batches": [], "usage": {}})
        watch = self._watch = self._watch or self._new_watch(context, ids)
        with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook:
            # The connection first: a poll round reports its errors as a failed poll (retryable), and a
            # connection without a key or a bad field fails the same way at every try.
            _ = hook.settings
            poll_once(hook, watch, self.log)
        event = watch.outcome()
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._conclude(event))

    def _new_watch(self, context: Context, ids: list[str]) -> BatchWatch:
        from airflow_openrouter.batch import watch

        # Since when this sensor has been waiting: in reschedule mode each poke is a new process, so
        # the first reschedule's date is the start; the poll budget and the 404 grace count from it.
        started = time.time()
        if self.reschedule:
            first = context["ti"].get_first_reschedule_date(context)
            started = first.timestamp() if first is not None else started
        return watch.BatchWatch(
            ids,
            deadline=started + self.timeout,
            not_found_since=started,
            not_found_grace_s=watch.NOT_FOUND_GRACE_S,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        # BaseSensorOperator turns any AirflowException of execute_complete into a skip under
        # soft_fail; a poll that failed is no verdict on the batches and must stay a retryable failure.
        from airflow_openrouter._compat import AirflowSkipException

        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSkipException as skipped:
            if isinstance(skipped.__cause__, _polling_failed()):
                raise skipped.__cause__ from None
            raise

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        from airflow_openrouter.batch.watch import BatchEvent

        return self._conclude(BatchEvent.from_payload(event, batch_ids=self._ids()))

    def _conclude(self, event: BatchEvent) -> dict[str, Any]:
        """The XCom value of completed batches; raises for anything else."""
        from airflow_openrouter._compat import AirflowFailException, AirflowSensorTimeout

        ids = self._ids()
        if event.status == "timeout":
            raise AirflowSensorTimeout(event.reason)
        if event.status == "error":
            raise _polling_failed()(event.reason or f"Polling batch(es) {', '.join(ids)} failed.")
        if event.status != "completed":
            # BaseSensorOperator turns this into a skip when soft_fail is set.
            raise AirflowFailException(event.reason or f"Batch(es) {', '.join(ids)}: {event.status}.")
        batches = [
            {k: v for k, v in b.to_payload().items() if k in ("id", "status", "total", "completed", "failed")}
            for b in event.batches
        ]
        return {"batch_ids": ids, "batches": batches, "usage": dict(event.usage)}


@functools.cache
def _polling_failed() -> type[Exception]:
    # Defined on first use: the exceptions module is not imported at DAG parse.
    from airflow_openrouter.exceptions import OpenRouterError

    class OpenRouterBatchPollingError(OpenRouterError):
        """The batches could not be polled (a rejected key, an outage): retryable, never a skip."""

    return OpenRouterBatchPollingError
