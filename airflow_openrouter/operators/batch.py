"""OpenRouterBatchOperator: one prompt per item, for thousands of items, results to object storage.

The operator wires the pieces of :mod:`airflow_openrouter.batch` together and decides nothing they
decide. It imports nothing heavy at module level, because the DAG processor imports it on every parse.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow_openrouter._compat import conf
from airflow_openrouter._params import config_error
from airflow_openrouter.operators._base import OpenRouterBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_openrouter.batch.events import BatchEvent, BatchWatch
    from airflow_openrouter.batch.items import RequestBuilder
    from airflow_openrouter.batch.results import ResultsWriter
    from airflow_openrouter.batch.state import BatchRecord, RecordStore, SubmittedBatch
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.schemas import OutputSpec

Engine = Literal["batch", "concurrent"]
BATCH_IDS_XCOM_KEY = "batch_ids"

# Without a timeout, wait until the batches' expires_at, plus time for OpenRouter to report them expired.
# The documented batch object has no expires_at: then created_at plus the 24 h completion window. Only
# when OpenRouter gives neither, as long as the slowest documented provider (Vertex: 96 h).
_EXPIRY_GRACE_S = 3600.0
_COMPLETION_WINDOW_S = 24 * 3600.0
_LONGEST_BATCH_S = 96 * 3600.0
# A recorded batch that ended this way has no results to fetch: a later try submits its items again.
_RESUBMITTED_STATUSES = frozenset({"failed", "expired", "cancelled"})


class OpenRouterBatchOperator(OpenRouterBaseOperator):
    """Render a prompt for every item, run them all through OpenRouter, write one result row per item.

    **Items** are a list (usually an upstream task's output: ``items=load.output``) or the URI of a JSONL
    file (``s3://bucket/docs.jsonl``) for inputs too big for XCom. ``prompt`` and ``system_prompt`` are
    Jinja templates (inline, or files ending in ``.j2``, ``.jinja2``, ``.md``, ``.txt``) rendered once per
    item with ``item``, ``index``, ``prompt_vars`` and the task context in scope, in a sandbox with
    StrictUndefined. An item's text is data: it is never rendered as a template. Every item is rendered
    before anything is sent; an error names the item's index and the template line.

    **Engines.** ``engine="batch"`` (default) uses OpenRouter's Batch API (about half price, minutes to
    hours): items are split into batches of at most 5,000 requests and 200 MB, submitted, and waited for
    in the triggerer when ``deferrable``. The submitted batch ids are recorded before waiting (the task
    state store on Airflow 3.3+, else a JSON file beside the results), so a retry or a clear with the same
    inputs re-attaches to them and never submits again; changed inputs are submitted afresh.
    ``engine="concurrent"`` sends chat completions from the worker, ``max_concurrency`` at a time and at
    most ``requests_per_minute``: for models without a batch variant, or when minutes matter. Its rows are
    saved as they arrive, so a retry skips the items already answered.

    **Results.** ``output_path`` gets one JSONL row per item: ``custom_id``, ``index``, ``status``
    (``succeeded``, ``failed``, ``invalid_output``, ``expired``, ``cancelled``, ``missing``), ``output``
    (validated JSON, or text), ``error`` and ``usage``. XCom ``return_value`` is a manifest of under 2 KB:
    ``output_uri``, ``counts`` per status, ``batch_ids``, ``engine``, ``model``, ``provider``, token totals,
    the billed ``cost_usd`` and timings. The task fails, after writing both, when a batch failed, expired
    or was cancelled, or when more than ``max_failed_fraction`` of the items did not succeed. An expired or
    cancelled batch is a retryable error; the next try (a retry, or a clear after a failed batch)
    resubmits only the items of such batches and keeps the completed ones.

    :param items: a list of items, or the URI / ``ObjectStoragePath`` of a JSONL file (templated).
    :param prompt: the user prompt template (``{{ item }}``, ``{{ index }}`` and ``prompt_vars`` in scope).
    :param system_prompt: the system prompt template.
    :param prompt_vars: extra template variables (templated; values may be ``XComArg``).
    :param response_format: a pydantic model class, a JSON Schema dict or ``"json_object"``: each output
        is validated, and an invalid one is kept as an ``invalid_output`` row with the raw text.
    :param provider: OpenRouter routing preferences (the Batch API accepts ``only`` and
        ``allow_fallbacks``).
    :param seed, max_tokens, temperature, top_p, stop, frequency_penalty, presence_penalty, reasoning,
        user, extra_body: request fields sent with every item (see
        :class:`~airflow_openrouter.operators._base.OpenRouterBaseOperator`, as are ``model`` and
        ``openrouter_conn_id``).
    :param id_field: the item field whose value is the item's ``custom_id`` (default: its index).
    :param output_path: where results go, as an ObjectStoragePath URI (templated): a directory, or a
        file ending in ``.jsonl``. Default: ``[openrouter] results_path``.
    :param engine: ``"batch"`` or ``"concurrent"``, see above.
    :param wait_for_completion: ``False`` submits, records and returns ``{"batch_ids": [...], ...}``;
        an ``OpenRouterBatchSensor`` can wait for them. The ids are also pushed to XCom ``batch_ids``
        whenever batches are submitted (``batch_ids=submit.output["batch_ids"]``).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval: seconds between two polls (default ``[openrouter] poll_interval``).
    :param timeout: how long to wait for the batches (seconds or timedelta); default: until they expire.
        When it passes the task fails; the batches keep running and a retry re-attaches to them.
    :param max_failed_fraction: the share of items allowed not to succeed (0.0: none).
    :param max_cost_usd: concurrent engine: start no new request once the billed cost reaches this.
    :param max_concurrency: concurrent engine: requests in flight at most.
    :param requests_per_minute: concurrent engine: cap on request starts.

    The prompt templates are the DAG author's: ``prompt`` and ``system_prompt`` passed by a mapped task's
    ``expand_kwargs(upstream.output)`` are upstream data, sent to every item as they are (never rendered).
    Every argument is checked when the DAG is parsed.
    """

    template_fields: Sequence[str] = ("items", "prompt_vars", "model", "output_path", "id_field")
    # The prompts are not template fields: Airflow would render them with the task context before there
    # is an item. template_ext (the base's) marks prompt *files*, which are loaded through the DAG's
    # template loader and rendered once per item.
    prompt_fields: ClassVar[tuple[str, ...]] = ("prompt", "system_prompt")
    template_fields_renderers: ClassVar[dict[str, str]] = {"items": "json", "prompt_vars": "json"}
    ui_color = "#c5cae9"

    def __init__(
        self,
        *,
        items: Any,
        prompt: str,
        system_prompt: str | None = None,
        id_field: str | None = None,
        output_path: str | ObjectStoragePath | None = None,
        engine: Engine = "batch",
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        timeout: float | timedelta | None = None,
        max_failed_fraction: float = 0.0,
        max_cost_usd: float | None = None,
        max_concurrency: int = 16,
        requests_per_minute: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        where = f"Task {self.task_id!r}"
        if engine not in ("batch", "concurrent"):
            raise config_error(where, "engine", "'batch' or 'concurrent'", engine)
        fraction = max_failed_fraction
        if type(fraction) not in (int, float) or not 0.0 <= fraction <= 1.0:
            raise config_error(where, "max_failed_fraction", "a number from 0 to 1", max_failed_fraction)
        self.items = items
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.id_field = id_field
        self.output_path = output_path
        self.engine = engine
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.max_failed_fraction = max_failed_fraction
        self.max_cost_usd = max_cost_usd
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self._check_arguments()

    # --- templating ------------------------------------------------------------------------------

    def _before_rendering(self) -> None:
        # A literal list of items is data: Airflow would render every string inside it as a template.
        # A string (a URI, maybe templated) and an XComArg still go through Airflow's rendering.
        if isinstance(self.items, (list, tuple)):
            from airflow.sdk import literal

            self.items = literal(self.items)

    # --- execution -------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_openrouter.batch.items import index_custom_ids

        # The cheap first pass: every custom_id valid and unique before anything is rendered or sent.
        indexes = index_custom_ids(self.items, self.id_field)
        if not indexes:
            self.log.info("No items: nothing to submit.")
            return self._finish_empty(context)
        if self.engine == "concurrent":
            return self._run_concurrently(context, indexes)
        return self._submit_batches(context)

    def _submit_batches(self, context: Context) -> Any:
        from airflow_openrouter.batch.state import reattach_or_start
        from airflow_openrouter.batch.submit import RequestSpool, submit_missing_batches
        from airflow_openrouter.hooks.openrouter import OpenRouterHook
        from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

        watch: BatchWatch | None = None
        with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook:
            model = self._model(hook)
            store = self._record_store(context)
            with RequestSpool(
                self._request_builder(context).requests(self.items, self.id_field),
                fingerprint_of={"engine": "batch", "model": model, "provider": self.provider},
            ) as spool:
                record = reattach_or_start(
                    store, fingerprint=spool.fingerprint, model=model, total_items=spool.total, log=self.log
                )
                if record.batches and self.wait_for_completion:
                    # Re-attaching: look at the recorded batches once, here, before anything else.
                    watch = self._poll_recorded(hook, record, store)
                submitted = submit_missing_batches(
                    hook, spool, record, store, provider=self.provider, log=self.log
                )
        summary = {"batch_ids": record.batch_ids, "model": model, "total": record.total_items}
        if self.do_xcom_push:
            # Its own key, so that ``submit.output["batch_ids"]`` can feed a sensor.
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=record.batch_ids)
        if not self.wait_for_completion:
            self.log.info("wait_for_completion=False: returning the batch ids; the results are not fetched.")
            return summary
        if watch is not None and not submitted:
            finished = watch.outcome()
            if finished is not None and finished["status"] not in ("timeout", "error"):
                self.log.info("Every recorded batch has finished: fetching the results without deferring.")
                return self._fetch_results(context, finished)
        deadline = self._deadline(record)
        trigger = OpenRouterBatchTrigger(
            batch_ids=record.batch_ids,
            openrouter_conn_id=self.openrouter_conn_id,
            poll_interval=self._poll_interval(),
            deadline=deadline,
        )
        if self.deferrable:
            # Airflow's own timeout is only a backstop: the trigger reports its deadline itself, clearly.
            backstop = max(0.0, deadline - time.time()) + 60 + 2 * trigger.poll_interval
            self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=backstop))
        return self._fetch_results(context, _first_event(trigger))

    def _poll_recorded(self, hook: OpenRouterHook, record: BatchRecord, store: RecordStore) -> BatchWatch:
        """Poll the recorded batches once on the worker (a re-attach may come long after they finished),
        and forget the ones that ended without results, so that their items are submitted again."""
        from airflow_openrouter.batch.events import BatchWatch, poll_round

        watch = BatchWatch(record.batch_ids)
        poll_round(hook, watch, self.log)
        ended = [b for b in record.batches if watch.status_of(b.id) in _RESUBMITTED_STATUSES]
        if ended:
            self.log.warning(
                "Batch(es) %s ended %s without results: submitting their items again; the completed "
                "batch(es) are kept.",
                ", ".join(b.id for b in ended),
                "/".join(sorted({str(watch.status_of(b.id)) for b in ended})),
            )
            record.batches = [b for b in record.batches if b not in ended]
            store.save(record)
            watch.forget(b.id for b in ended)
        return watch

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger: fetch the results on the worker and build the manifest."""
        return self._fetch_results(context, event)

    def _fetch_results(self, context: Context, payload: Any) -> dict[str, Any]:
        from airflow_openrouter.batch.events import BatchEvent
        from airflow_openrouter.batch.items import index_custom_ids
        from airflow_openrouter.batch.results import ResultsWriter, build_manifest
        from airflow_openrouter.exceptions import OpenRouterError
        from airflow_openrouter.hooks.openrouter import OpenRouterHook

        record = self._record_store(context).load()
        if record is None:
            raise _failure(
                "The record of the submitted batches is gone, so there is nothing to fetch. Clear the task to "
                "submit again."
            )
        event = BatchEvent.parse(payload, batch_ids=record.batch_ids)
        if event.status in ("timeout", "error"):
            # The batches still run (or may): fail this try, and let a retry re-attach and wait again.
            raise OpenRouterError(f"{event.reason} Batch ids: {', '.join(record.batch_ids)}.")
        results_file = self._results_file(context)
        spec = self._output_spec()
        with (
            OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook,
            ResultsWriter(results_file, index_custom_ids(self.items, self.id_field)) as writer,
        ):
            for batch in record.batches:
                if event.status_of(batch.id) == "completed":
                    self._write_batch_results(hook, batch.id, writer, spec)
            writer.write_unwritten(lambda index: _unfinished_outcome(record, event, index))
        manifest = build_manifest(
            output_uri=str(results_file),
            engine="batch",
            model=record.model,
            tally=writer.tally,
            batch_ids=record.batch_ids,
            usage=event.usage,
            started_at=min((b.created_at for b in record.batches if b.created_at), default=None),
            status=event.status,
        )
        return self._conclude(
            context,
            manifest,
            writer,
            batch_failure=None if event.status == "completed" else (event.status, event.reason or ""),
        )

    def _write_batch_results(
        self, hook: OpenRouterHook, batch_id: str, writer: ResultsWriter, spec: OutputSpec
    ) -> None:
        from airflow_openrouter.batch.results import row_from_batch_result
        from airflow_openrouter.exceptions import OpenRouterPaymentRequiredError

        try:
            for result in hook.iter_batch_results(batch_id):
                index = writer.indexes.get(result.custom_id)
                if index is None:
                    self.log.warning(
                        "Batch %s returned unknown custom_id %r; ignored.", batch_id, result.custom_id
                    )
                    continue
                provider = result.response.body.get("provider") if result.response else None
                writer.write(row_from_batch_result(result, index, spec), provider=provider)
        except OpenRouterPaymentRequiredError as exc:
            raise exc.with_message(
                f"Batch {batch_id} has finished, but OpenRouter withholds its results until the account has "
                "enough credits (HTTP 402). Add credits at https://openrouter.ai/settings/credits, then retry "
                "the task: it fetches the same results without submitting anything again."
            ) from exc

    # --- the concurrent engine -------------------------------------------------------------------

    def _run_concurrently(self, context: Context, indexes: Mapping[str, int]) -> dict[str, Any]:
        from airflow_openrouter.batch.concurrent import Outcome, run_concurrently_sync
        from airflow_openrouter.batch.progress import Checkpoint
        from airflow_openrouter.batch.results import (
            ResultsWriter,
            build_manifest,
            result_row,
            row_from_completion,
        )
        from airflow_openrouter.batch.state import TaskRunIdentity
        from airflow_openrouter.batch.submit import RequestSpool
        from airflow_openrouter.hooks.openrouter import OpenRouterHook
        from airflow_openrouter.schemas import provider_preferences

        started_at = time.time()
        results_file = self._results_file(context)
        spec = self._output_spec()
        with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook:
            model = self._model(hook)
            provider = provider_preferences(spec, self.provider)
            with RequestSpool(
                self._request_builder(context).requests(self.items, self.id_field),
                fingerprint_of={"engine": "concurrent", "model": model, "provider": provider},
            ) as spool:
                checkpoint = Checkpoint(
                    results_file, spool.fingerprint, TaskRunIdentity.from_context(context).key
                )
                if checkpoint.done:
                    self.log.info(
                        "Resuming: %d of %d items were answered by an earlier try ($%.4f billed); skipping them.",
                        len(checkpoint.done),
                        len(indexes),
                        checkpoint.spent_usd,
                    )
                todo = (
                    (line["custom_id"], {**line["body"], "model": model, "provider": provider})
                    for line in spool
                    if line["custom_id"] not in checkpoint.done
                )
                with checkpoint.writer(context["ti"].try_number) as parts:

                    def save(outcome: Outcome) -> None:
                        index = indexes[outcome.custom_id]
                        if outcome.completion is not None:
                            parts.write(
                                row_from_completion(outcome.custom_id, index, outcome.completion, spec)
                            )
                        else:
                            parts.write(
                                result_row(outcome.custom_id, index, "failed", error=str(outcome.error))
                            )

                    run_concurrently_sync(
                        hook,
                        todo,
                        save,
                        max_concurrency=self.max_concurrency,
                        requests_per_minute=self.requests_per_minute,
                        max_cost_usd=self.max_cost_usd,
                        spent_usd=checkpoint.spent_usd,
                    )
        # Newest rows first: an item retried by this try keeps this try's row.
        with ResultsWriter(results_file, indexes) as writer:
            for row in checkpoint.rows_newest_first():
                writer.write(row)
            writer.write_unwritten(lambda index: ("missing", "No outcome was recorded for this item."))
        manifest = build_manifest(
            output_uri=str(results_file),
            engine="concurrent",
            model=model,
            tally=writer.tally,
            started_at=started_at,
        )
        return self._conclude(context, manifest, writer, batch_failure=None)

    # --- shared by both engines ------------------------------------------------------------------

    def _conclude(
        self,
        context: Context,
        manifest: dict[str, Any],
        writer: ResultsWriter,
        *,
        batch_failure: tuple[str, str] | None,
    ) -> dict[str, Any]:
        """Log the outcome and return the manifest, or push it and fail when too much went wrong.

        :param batch_failure: ``(status, reason)`` when a batch did not complete.
        """
        from airflow_openrouter.batch.results import failure_reason
        from airflow_openrouter.exceptions import OpenRouterError

        counts = ", ".join(f"{n} {status}" for status, n in manifest["counts"].items() if n)
        self.log.info(
            "Wrote %d rows (%s) to %s; %d tokens, $%.6f billed.",
            manifest["total"],
            counts or "none",
            manifest["output_uri"],
            manifest["total_tokens"],
            manifest["cost_usd"],
        )
        if batch_failure is not None:
            if self.do_xcom_push:
                context["ti"].xcom_push(key="return_value", value=manifest)
            status, reason = batch_failure
            if status == "failed":
                raise _failure(
                    f"{reason} Results: {manifest['output_uri']}. Not retried: a failed batch usually fails "
                    "the same way again. Fix the cause, then clear the task: that resubmits only the items "
                    "of the failed batch(es) and keeps the completed ones."
                )
            # Expired or cancelled: worth another go. A retry resubmits only those batches' items.
            raise OpenRouterError(
                f"{reason} Results: {manifest['output_uri']}. A retry (or a clear) resubmits only the items "
                f"of the {status} batch(es) and keeps the completed ones."
            )
        too_many = failure_reason(writer.tally, self.max_failed_fraction)
        if too_many is None:
            return manifest
        if self.do_xcom_push:
            context["ti"].xcom_push(key="return_value", value=manifest)
        # Retrying would re-attach to the same finished batches, or skip the same answered items, and
        # fail the same way: fail without retries.
        raise _failure(
            f"{too_many} Results: {manifest['output_uri']}. A retry would fail the same way; raise "
            "max_failed_fraction, or change the inputs, which submits them afresh."
        )

    def _finish_empty(self, context: Context) -> dict[str, Any]:
        from airflow_openrouter.batch.results import ResultsWriter, build_manifest

        results_file = self._results_file(context)
        with ResultsWriter(results_file, {}) as writer:
            pass
        return build_manifest(
            output_uri=str(results_file), engine=self.engine, model=self.model, tally=writer.tally
        )

    def _request_builder(self, context: Context) -> RequestBuilder:
        from airflow_openrouter.batch.items import RequestBuilder
        from airflow_openrouter.prompts import PromptTemplate

        env = self.get_template_env()

        def compile_template(source: str, field: str) -> PromptTemplate:
            return PromptTemplate.load(source, env, field=field, extensions=self.template_ext)

        return RequestBuilder(
            prompt=compile_template(self.prompt, "prompt"),
            system_prompt=compile_template(self.system_prompt, "system_prompt")
            if self.system_prompt
            else None,
            variables={**context, **self._prompt_vars()},
            params={**self._request_fields(), "response_format": self._output_spec().response_format},
        )

    def _output_spec(self) -> OutputSpec:
        from airflow_openrouter.schemas import output_spec

        return output_spec(self.response_format)

    def _results_file(self, context: Context) -> ObjectStoragePath:
        from airflow_openrouter.batch.state import TaskRunIdentity

        output_path = self.output_path or conf.get("openrouter", "results_path", fallback=None)
        if not output_path:
            raise ValueError("No output_path: pass output_path=... or set [openrouter] results_path.")
        return TaskRunIdentity.from_context(context).results_file(str(output_path))

    def _record_store(self, context: Context) -> RecordStore:
        from airflow_openrouter.batch.state import TaskRunIdentity, record_store

        return record_store(context, TaskRunIdentity.from_context(context), self._results_file(context))

    def _poll_interval(self) -> float:
        if self.poll_interval is not None:
            return float(self.poll_interval)
        return conf.getfloat("openrouter", "poll_interval", fallback=30.0)

    def _deadline(self, record: BatchRecord) -> float:
        """When to stop waiting: ``timeout`` from now, else when the last batch expires; never sooner than
        two polls from now, so that a re-attached task always polls before it can time out."""
        now = time.time()
        if self.timeout is not None:
            computed = now + self.timeout
        else:
            computed = max((_expiry_of(b, now) for b in record.batches), default=now + _LONGEST_BATCH_S)
        return max(computed, now + 2 * self._poll_interval())


def _expiry_of(batch: SubmittedBatch, now: float) -> float:
    """When OpenRouter will have reported *batch* expired: its ``expires_at``, else its ``created_at`` plus
    the 24 h completion window; plus grace. Without either, the slowest documented provider (96 h)."""
    if batch.expires_at:
        return batch.expires_at + _EXPIRY_GRACE_S
    if batch.created_at:
        return batch.created_at + _COMPLETION_WINDOW_S + _EXPIRY_GRACE_S
    return now + _LONGEST_BATCH_S


def _first_event(trigger: Any) -> dict[str, Any]:
    """Wait for the batches on the worker, with the very loop the triggerer would run."""
    import asyncio

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the batch trigger ended without an event")

    return asyncio.run(first())


def _unfinished_outcome(record: BatchRecord, event: BatchEvent, index: int) -> tuple[str, str]:
    """``(status, error)`` of an item that has no result row, from how its batch ended."""
    batch = next(b for b in record.batches if index in b.indexes())
    status = event.status_of(batch.id)
    if status == "completed":
        return "missing", f"Batch {batch.id} completed without a result for this item."
    if status in ("expired", "cancelled"):
        return status, f"Batch {batch.id} was {status} before this item was processed."
    return "failed", f"Batch {batch.id} {status}: {event.error_of(batch.id) or 'no reason given'}."


def _failure(message: str) -> Exception:
    from airflow_openrouter._compat import AirflowFailException

    return AirflowFailException(message)
