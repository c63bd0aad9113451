"""OpenRouterBatchSensor: waits for OpenRouter batches submitted elsewhere (e.g. with
``OpenRouterBatchOperator(wait_for_completion=False)``), in poke, reschedule or deferrable mode.

A poke polls each batch once and hands what it saw to the same :class:`BatchWatch` the trigger uses,
so the three modes decide identically. The sensor never fetches results.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_openrouter._compat import conf

if TYPE_CHECKING:
    from airflow.sdk import Context


class OpenRouterBatchSensor(BaseSensorOperator):
    """Wait until every batch has finished; succeed if all completed, fail otherwise.

    Returns (XCom) ``{"batch_ids", "batches": [{"id", "status", "total", "completed", "failed"}],
    "usage": {"prompt_tokens", "completion_tokens", "total_tokens", "cost"}}``. A batch that failed,
    expired or was cancelled fails the sensor with OpenRouter's reason (skipped with ``soft_fail``).

    :param batch_ids: one id or a list (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='submit')['batch_ids'] }}"`` with ``render_template_as_native_obj``,
        or ``submit.output["batch_ids"]``.
    :param openrouter_conn_id: the OpenRouter connection.
    :param deferrable: wait in the triggerer (same trigger as the operator) instead of poking.
    :param poll_interval: seconds between two polls in deferrable mode (default: ``[openrouter]
        poll_interval``, like the operator; ``poke_interval`` paces poke and reschedule modes).
    """

    template_fields: Sequence[str] = ("batch_ids",)
    ui_color = "#c5cae9"

    def __init__(
        self,
        *,
        batch_ids: str | Sequence[str],
        openrouter_conn_id: str = "openrouter_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_ids = batch_ids
        self.openrouter_conn_id = openrouter_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def _ids(self) -> list[str]:
        ids = [self.batch_ids] if isinstance(self.batch_ids, str) else list(self.batch_ids or ())
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise ValueError(
                f"batch_ids must be a batch id or a non-empty list of them, got {self.batch_ids!r:.100}."
            )
        return ids

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One cheap look first: finished batches need no trip through the triggerer.
        done = self._poke_honouring_soft_fail(context)
        if done:
            return done.xcom_value if isinstance(done, PokeReturnValue) else None
        from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

        self.defer(
            trigger=OpenRouterBatchTrigger(
                batch_ids=self._ids(),
                openrouter_conn_id=self.openrouter_conn_id,
                poll_interval=self.poll_interval
                or conf.getfloat("openrouter", "poll_interval", fallback=self.poke_interval),
                deadline=time.time() + self.timeout,
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
        from airflow_openrouter.batch.events import BatchWatch
        from airflow_openrouter.exceptions import OpenRouterError
        from airflow_openrouter.hooks.openrouter import OpenRouterHook

        watch = BatchWatch(self._ids())
        with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook:
            for batch_id in watch.pending_ids():
                try:
                    watch.observe(hook.get_batch(batch_id))
                except OpenRouterError as exc:
                    self.log.warning("Polling batch %s failed: %s", batch_id, exc)
                    watch.observe_error(batch_id, exc)
        event = watch.outcome()
        if event is None:
            self.log.info("Waiting for batch(es) %s.", ", ".join(watch.pending_ids()))
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._conclude(event))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        return self._conclude(event)

    def _conclude(self, payload: Any) -> dict[str, Any]:
        """The XCom value of completed batches; raises for anything else."""
        from airflow_openrouter._compat import AirflowFailException, AirflowSensorTimeout
        from airflow_openrouter.batch.events import BatchEvent

        event = BatchEvent.parse(payload, batch_ids=self._ids())
        if event.status == "timeout":
            raise AirflowSensorTimeout(event.reason)
        if event.status == "error":
            # The batches could not be polled (a bad key, an outage): not a verdict on them, so a
            # retry may succeed, and soft_fail must not turn it into a skip.
            from airflow_openrouter.exceptions import OpenRouterError

            raise OpenRouterError(event.reason or f"Polling batch(es) {', '.join(self._ids())} failed.")
        if event.status != "completed":
            # BaseSensorOperator turns this into a skip when soft_fail is set.
            raise AirflowFailException(event.reason or f"Batch(es) {', '.join(self._ids())}: {event.status}.")
        batches = [
            {k: b.get(k) for k in ("id", "status", "total", "completed", "failed")} for b in event.batches
        ]
        return {"batch_ids": self._ids(), "batches": batches, "usage": event.usage}
