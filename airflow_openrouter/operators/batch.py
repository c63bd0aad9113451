"""OpenRouterBatchOperator: one prompt per item, for thousands of items, results to object storage.

The operator is Airflow glue: templating, deferral and resumption, XCom, and raising what the engines
decided (:mod:`airflow_openrouter.batch.batch_api`, :mod:`airflow_openrouter.batch.concurrent`; the
verdict comes from :mod:`airflow_openrouter.batch.failures`). It imports nothing heavy at module
level, because the DAG processor imports it on every parse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow_openrouter._compat import conf
from airflow_openrouter._params import config_error
from airflow_openrouter.links import OpenRouterBatchLink
from airflow_openrouter.operators._base import OpenRouterBaseOperator, check_cost_arguments

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_openrouter.batch.endpoints import Endpoint
    from airflow_openrouter.batch.failures import Verdict
    from airflow_openrouter.batch.items import ItemIds, RequestBuilder
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.spool import RequestSpool
    from airflow_openrouter.batch.state import RecordStore, TaskRunIdentity
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.schemas import OutputSpec

__all__ = ["BATCH_IDS_XCOM_KEY", "OpenRouterBatchOperator"]

Engine = Literal["batch", "concurrent"]
BATCH_IDS_XCOM_KEY = "batch_ids"

# The run tag takes 11 of the Batch API's 64 characters of custom_id (see batch/submit.py).
_BATCH_CUSTOM_ID_LENGTH = 64 - 11


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

    **Results.** ``output_path`` gets one JSONL row per item: ``custom_id``, ``id``, ``index``, ``status``
    (``succeeded``, ``failed``, ``invalid_output``, ``expired``, ``cancelled``, ``missing``), ``output``
    (validated JSON, or text), ``error``, ``cause``, ``transient``, ``provider``, ``model``,
    ``generation_id``, ``cached`` and ``usage`` (the exact ledger: tokens, billed ``cost``,
    ``cost_details``, ``is_byok``), ``attempts`` and ``history`` (the earlier attempts of a recovered
    row). XCom ``return_value`` is a manifest of under 2 KB: ``output_uri``,
    ``status``, ``counts`` per status, ``errors`` per cause, ``provider(s)``, ``batch_ids``, ``engine``,
    ``model``, token totals, the billed ``cost_usd`` split ``cost_by_status``, ``list_price_usd``,
    ``cached`` and ``cost_saved_usd``, the ``estimated_cost_usd`` with its ``estimate_basis``,
    ``recovery`` (rows sent again, recovered, and their cost, per pass), and timings.

    **Cost control.** Before anything is sent: the result cache answers the requests it has seen, the
    cost of the rest is estimated from ``/models`` prices, and ``max_cost_usd`` is checked (see the
    README's "Cost control"). Every request carries ``user`` and ``metadata`` naming the DAG, task, run,
    map index and try (and ``session_id`` for the concurrent engine). The task fails, after writing both, when a batch failed, expired, was
    cancelled or vanished, when an error that repeats for every item stopped the run, or when more than
    ``max_failed_fraction`` of the items did not succeed. It fails retryably when a retry can do better
    (it then resubmits only what failed transiently, or the items of the batches that ended without
    results), and without retries when a retry would fail the same way.

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
    :param max_cost_usd: both engines: before anything is sent, the run's estimated cost (its upper
        bound: prompts counted at 4 characters a token, completions at ``max_tokens``, at the model's
        ``/models`` price, half of it for the Batch API) plus what earlier tries of this task run were
        billed must not exceed this, else the task fails with ``OpenRouterCostLimitError`` and sends
        nothing. The concurrent engine also starts no new request once the billed cost reaches it.
    :param max_concurrency: concurrent engine: requests in flight at most.
    :param requests_per_minute: concurrent engine: cap on request starts.
    :param dry_run: render and check every item, look them up in the result cache and estimate the
        cost; send nothing, write nothing, and return the manifest (``status: "dry_run"``).
    :param result_cache: an ObjectStoragePath URI under which answers are cached by request (default:
        ``[openrouter] result_cache``; ``False``: none). Items whose request was answered before (same
        model, messages, parameters, schema) are written from the cache (``cached: true``, cost 0) and
        not sent; new successes are added. Not used with ``wait_for_completion=False`` (whoever reads
        the batches would miss the cached items).
    :param result_cache_ttl: how old a cache entry may be (seconds or timedelta; default: any age).
    :param max_row_attempts: attempts per item at most (default 2: the first pass plus one recovery
        pass; 1: no recovery). After a pass, items that failed in a way that may pass are sent again,
        and ``invalid_output`` items get the chat operator's repair turn (their reply and its validation
        errors sent back); permanent failures are not retried. Rows carry ``attempts`` and ``history``.
        Not with ``wait_for_completion=False`` (nothing is fetched: whoever reads the batches sees the
        first pass).
    :param recovery_engine: batch engine: where a recovery pass runs: ``"batch"`` (a follow-up batch,
        recorded before it is submitted, so a retry re-attaches to it), ``"concurrent"`` (from the
        worker), or ``"auto"`` (default: concurrent for fewer than 50 rows, else a follow-up batch).
    :param fallback_models: model ids tried in turn for an item that failed with a model or provider
        error (no endpoints, overloaded, provider error), one recovery pass each.

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
    operator_extra_links = (OpenRouterBatchLink(),)

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
        dry_run: bool = False,
        result_cache: str | ObjectStoragePath | Literal[False] | None = None,
        result_cache_ttl: float | timedelta | None = None,
        max_row_attempts: int = 2,
        recovery_engine: Literal["auto", "batch", "concurrent"] = "auto",
        fallback_models: Sequence[str] | None = None,
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
        # Not ``self.dry_run``: that is BaseOperator's method (render the template fields only).
        self._dry_run = dry_run
        self.result_cache = result_cache
        self.result_cache_ttl = check_cost_arguments(
            where, max_cost_usd=max_cost_usd, dry_run=dry_run, result_cache=result_cache, ttl=result_cache_ttl
        )
        self.fallback_models = _recovery_arguments(where, max_row_attempts, recovery_engine, fallback_models)
        self.max_row_attempts = max_row_attempts
        self.recovery_engine = recovery_engine
        self._check_arguments()

    # --- templating ------------------------------------------------------------------------------

    def _before_rendering(self) -> None:
        # A literal list of items is data: Airflow would render every string inside it as a template.
        # A string (a URI, maybe templated) and an XComArg still go through Airflow's rendering.
        if isinstance(self.items, (list, tuple)):
            from airflow.sdk import literal

            self.items = literal(self.items)

    # --- OpenLineage (called by the OpenLineage provider, on the worker; see airflow_openrouter.lineage) --

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_openrouter.lineage import batch_lineage

        return batch_lineage(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_openrouter.lineage import batch_lineage

        return batch_lineage(self)

    # --- execution -------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_openrouter.batch.items import index_custom_ids
        from airflow_openrouter.batch.options import check_poll_interval

        # Before anything is submitted: the trigger would refuse a bad interval only after that.
        check_poll_interval(self._poll_interval())
        # The cheap first pass: every custom_id valid and unique before anything is rendered or sent.
        ids = index_custom_ids(self.items, self.id_field, self._custom_id_length())
        if not ids:
            self.log.info("No items: nothing to submit.")
            return self._finish_empty(context)
        if self.engine == "concurrent":
            return self._run_concurrently(context, ids)
        return self._submit_batches(context, ids)

    def _submit_batches(self, context: Context, ids: ItemIds) -> Any:
        from airflow_openrouter.batch import batch_api
        from airflow_openrouter.hooks.openrouter import OpenRouterHook

        with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook:
            job = self._job(hook, context)
            with self._batch_spool(job) as spool:
                started = batch_api.start(
                    hook,
                    spool,
                    job,
                    self._record_store(context, job),
                    self.log,
                    look=self.wait_for_completion,
                    ids=ids,
                )
        if started.manifest is not None:
            return self._dry_run_result(started.manifest)
        record = started.record
        summary = {"batch_ids": record.batch_ids, "model": job.model, "total": record.total_items}
        self._push_batch_ids(context, record.batch_ids)
        if not self.wait_for_completion:
            self.log.info("wait_for_completion=False: returning the batch ids; the results are not fetched.")
            return summary
        if started.finished is not None:
            self.log.info("Every recorded batch has finished: fetching the results without deferring.")
            return self._fetch_results(context, started.finished.to_payload())
        return self._wait(context, record)

    def _batch_spool(self, job: JobOptions) -> RequestSpool:
        """The run's rendered requests (the batch engine's; their fingerprint is the record's)."""
        from airflow_openrouter.batch.spool import RequestSpool

        fingerprint_of = {"engine": "batch", "model": job.model, "provider": job.provider}
        return RequestSpool(job.requests.requests(self.items, self.id_field), fingerprint_of=fingerprint_of)

    def _wait(self, context: Context, record: Any) -> Any:
        """Wait for the record's batches (deferred, or on the worker), then fetch."""
        from airflow_openrouter.batch import batch_api
        from airflow_openrouter.triggers.batch import OpenRouterBatchTrigger

        poll_interval = self._poll_interval()
        deadline = batch_api.deadline(record, self.timeout, poll_interval)
        trigger = OpenRouterBatchTrigger(
            **batch_api.trigger_kwargs(record),
            openrouter_conn_id=self.openrouter_conn_id,
            poll_interval=poll_interval,
            deadline=deadline,
        )
        if self.deferrable:
            # Airflow's own timeout is only a backstop: the trigger reports its deadline itself, clearly.
            backstop = max(0.0, deadline - time.time()) + 60 + 2 * trigger.poll_interval
            self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=backstop))
        return self._fetch_results(context, _first_event(trigger))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger: fetch the results on the worker and build the manifest."""
        return self._fetch_results(context, event)

    def _fetch_results(self, context: Context, payload: Any) -> dict[str, Any]:
        from airflow_openrouter.batch import batch_api
        from airflow_openrouter.batch.items import index_custom_ids
        from airflow_openrouter.batch.watch import BatchEvent
        from airflow_openrouter.exceptions import OpenRouterError
        from airflow_openrouter.hooks.openrouter import OpenRouterHook

        with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook, ExitStack() as stack:
            job = self._job(hook, context)
            store = self._record_store(context, job)
            record = store.load()
            if record is None:
                raise _failure(
                    "The record of the submitted batches is gone, so there is nothing to fetch. Clear the "
                    f"task to submit again. Record: {store.location}."
                )
            event = BatchEvent.from_payload(payload, batch_ids=record.batch_ids)
            if event.status in ("timeout", "error"):
                # The batches still run (or may): fail this try, and let a retry re-attach and wait again.
                raise OpenRouterError(f"{event.reason} Batch ids: {', '.join(record.batch_ids)}.")
            ids = index_custom_ids(self.items, self.id_field, self._custom_id_length())
            fetched = batch_api.fetch(
                hook,
                record,
                event,
                job,
                ids,
                store,
                self.log,
                spool_of=lambda: stack.enter_context(self._batch_spool(job)),
            )
        if isinstance(fetched, batch_api.FollowUp):
            self._push_batch_ids(context, fetched.record.batch_ids)
            return self._wait(context, fetched.record)
        manifest, verdict = fetched
        return self._conclude(context, manifest, verdict)

    def _run_concurrently(self, context: Context, ids: ItemIds) -> dict[str, Any]:
        from airflow_openrouter.batch.concurrent_run import run_job
        from airflow_openrouter.batch.spool import RequestSpool
        from airflow_openrouter.hooks.openrouter import OpenRouterHook
        from airflow_openrouter.schemas import provider_preferences

        with OpenRouterHook(openrouter_conn_id=self.openrouter_conn_id) as hook:
            job = self._job(hook, context)
            provider = provider_preferences(job.spec, job.provider)
            fingerprint_of = {"engine": "concurrent", "model": job.model, "provider": provider}
            with RequestSpool(
                job.requests.requests(self.items, self.id_field), fingerprint_of=fingerprint_of
            ) as spool:
                manifest, verdict = run_job(hook, spool, job, ids, context["ti"].try_number, self.log)
        if verdict is None:
            return self._dry_run_result(manifest)
        return self._conclude(context, manifest, verdict)

    def _dry_run_result(self, manifest: dict[str, Any]) -> dict[str, Any]:
        estimate = manifest["estimated_cost_usd"]
        self.log.info(
            "Dry run: %d items rendered and checked, %d found in the result cache, estimated cost %s; nothing "
            "was sent or written.",
            manifest["total"],
            manifest["cached"],
            f"up to ${estimate:.6f}" if estimate is not None else "unknown",
        )
        return manifest

    # --- shared by both engines ------------------------------------------------------------------

    def _conclude(self, context: Context, manifest: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
        """Log the outcome and return the manifest, or push it and raise what the verdict says."""
        from airflow_openrouter.batch.failures import as_permanent
        from airflow_openrouter.exceptions import OpenRouterError

        self._manifest = manifest  # for OpenLineage, which reads it in a forked process (no XCom there)
        counts = ", ".join(f"{n} {status}" for status, n in manifest["counts"].items() if n)
        self.log.info(
            "Wrote %d rows (%s) to %s; %d tokens, $%.6f billed; status %s.",
            manifest["total"],
            counts or "none",
            manifest["output_uri"],
            manifest["total_tokens"],
            manifest["cost_usd"],
            manifest["status"],
        )
        if verdict.message is None:
            return manifest
        # Results already paid for are written, and the manifest pushed, before the task fails.
        if self.do_xcom_push:
            context["ti"].xcom_push(key="return_value", value=manifest)
        if verdict.error is not None:
            raise as_permanent(verdict.error, verdict.message)
        if verdict.retryable:
            raise OpenRouterError(verdict.message)
        raise _failure(verdict.message)

    def _finish_empty(self, context: Context) -> dict[str, Any]:
        from airflow_openrouter.batch.items import ItemIds
        from airflow_openrouter.batch.results import build_manifest

        self._push_batch_ids(context, [])
        if not self.wait_for_completion:
            return {"batch_ids": [], "model": self.model, "total": 0}
        results_file = self._results_file(context)
        with self._endpoint().writer(results_file, ItemIds({})) as writer:
            pass
        manifest = build_manifest(
            output_uri=str(results_file),
            engine=self.engine,
            model=self.model,
            tally=writer.tally,
            status="completed",
        )
        return {**manifest, **writer.manifest_fields()}

    def _push_batch_ids(self, context: Context, batch_ids: list[str]) -> None:
        self._batch_ids = list(batch_ids)  # for OpenLineage, as the manifest
        if self.do_xcom_push:
            # Its own key, so that ``submit.output["batch_ids"]`` can feed a sensor.
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=batch_ids)

    def _custom_id_length(self) -> int | None:
        # The concurrent engine's custom ids never leave the worker; the Batch API caps them.
        return _BATCH_CUSTOM_ID_LENGTH if self.engine == "batch" else None

    def _job(self, hook: OpenRouterHook, context: Context) -> JobOptions:
        from airflow_openrouter.batch.options import JobOptions, Limits, Recovery
        from airflow_openrouter.cost.attribution import Attribution

        endpoint = self._endpoint()
        return JobOptions(
            model=self._model(hook),
            provider=self.provider,
            requests=self._request_builder(context),
            spec=self._output_spec(),
            identity=self._identity(context),
            results_file=self._results_file(context),
            id_field=self.id_field,
            endpoint=endpoint,
            limits=Limits(
                max_failed_fraction=self.max_failed_fraction,
                timeout=self.timeout,
                max_cost_usd=self.max_cost_usd,
                max_concurrency=self.max_concurrency,
                requests_per_minute=self.requests_per_minute,
            ),
            result_cache=self._result_cache(),
            result_cache_ttl=self.result_cache_ttl,
            dry_run=self._dry_run,
            attribution=Attribution.of_context(context, metadata=endpoint.takes_metadata),
            try_number=getattr(context["ti"], "try_number", 1) or 1,
            recovery=Recovery(
                max_row_attempts=self.max_row_attempts,
                engine=self.recovery_engine,
                fallback_models=self.fallback_models,
            ),
        )

    def _endpoint(self) -> Endpoint:
        """What the requests are and how their answers become rows: chat completions."""
        from airflow_openrouter.batch.endpoints import CHAT

        return CHAT

    def _result_cache(self) -> str | ObjectStoragePath | None:
        from airflow_openrouter.cache import configured_root

        root = configured_root(self.result_cache)
        if root is not None and not self.wait_for_completion and self.engine == "batch":
            # Whoever reads these batches reads their rows, not this task's results file: an item
            # answered from the cache would be in no batch, and missing there.
            self.log.info("result_cache is not used with wait_for_completion=False: every item is submitted.")
            return None
        return root

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

    def _identity(self, context: Context) -> TaskRunIdentity:
        from airflow_openrouter.batch.state import TaskRunIdentity

        return TaskRunIdentity.from_context(context)

    def _results_file(self, context: Context) -> ObjectStoragePath:
        output_path = self.output_path or conf.get("openrouter", "results_path", fallback=None)
        if not output_path:
            from airflow_openrouter.exceptions import OpenRouterConfigError

            raise OpenRouterConfigError(
                f"Task {self.task_id!r}: no output_path: pass output_path=... or set [openrouter] results_path."
            )
        return self._identity(context).results_file(str(output_path), self._results_suffix(str(output_path)))

    def _results_suffix(self, output_path: str) -> str:
        """The results file's extension: JSONL rows."""
        return ".jsonl"

    def _record_store(self, context: Context, job: JobOptions) -> RecordStore:
        from airflow_openrouter.batch.state import record_store

        return record_store(context, job.identity, job.results_file)

    def _poll_interval(self) -> float:
        from airflow_openrouter.operators._base import poll_interval

        return poll_interval(self.poll_interval)


def _recovery_arguments(
    where: str, max_row_attempts: Any, engine: Any, fallback_models: Any
) -> tuple[str, ...]:
    """The recovery arguments, checked when the DAG is parsed; returns the fallback models."""
    if type(max_row_attempts) is not int or not 1 <= max_row_attempts <= 10:
        raise config_error(where, "max_row_attempts", "an integer from 1 to 10", max_row_attempts)
    if engine not in ("auto", "batch", "concurrent"):
        raise config_error(where, "recovery_engine", "'auto', 'batch' or 'concurrent'", engine)
    models = fallback_models if fallback_models is not None else ()
    if isinstance(models, str) or not all(isinstance(m, str) and m for m in models):
        raise config_error(where, "fallback_models", "a list of model ids", fallback_models)
    return tuple(models)


def _first_event(trigger: Any) -> dict[str, Any]:
    """Wait for the batches on the worker, with the very loop the triggerer would run."""
    import asyncio

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the batch trigger ended without an event")

    return asyncio.run(first())


def _failure(message: str) -> Exception:
    from airflow_openrouter._compat import AirflowFailException

    return AirflowFailException(message)
