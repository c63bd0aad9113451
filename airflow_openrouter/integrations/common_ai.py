"""OpenRouter as a batch backend of common-ai's ``@task.llm_batch`` / ``LLMBatchOperator``.

common-ai (``apache-airflow-providers-common-ai`` >= 1.0.0, the ``common-ai`` extra) finds this adapter
through the entry point ``airflow.providers.common.ai.batch_adapters: openrouter`` when a task says
``model_id="openrouter:<model>"``. Only that lookup imports this module, so importing
``airflow_openrouter`` never imports common-ai. The rules:

* **One transport.** Every call goes through :class:`~airflow_openrouter.hooks.openrouter.OpenRouterHook`,
  built from the only two things common-ai hands an adapter, the connection's password and host
  (:meth:`~airflow_openrouter.hooks.openrouter.OpenRouterHook.from_credentials`). The connection's
  extras (timeout, retries, app name) are not seen on this path: the transport's defaults apply.
* **Requests are checked before anything is paid for**: at most 5,000 requests and 200 MB in one
  batch, custom ids of at most 64 characters, text prompts, one model, and no request field that this
  adapter sets itself. Each error names the request, the field and the fix.
* **Structured output** is OpenRouter's strict JSON schema (:mod:`airflow_openrouter.schemas`); a reply is
  read as JSON and its ``null`` optionals dropped before common-ai validates it against ``output_type``.
* **Never pay twice.** OpenRouter batches carry no metadata, so every request goes out as
  ``{key16}-{index}~{run tag}`` (the run tag: :func:`~airflow_openrouter.batch.state.run_tag` of the task
  run and the input fingerprint). :meth:`OpenRouterBatchAdapter.find_orphaned_batch` adopts a batch only
  when its results carry those ids (:func:`~airflow_openrouter.batch.submit.find_proven_batch`, the proof
  the batch operator uses); a batch still running cannot be proven yet, and the lookup raises, so
  common-ai neither adopts nor resubmits. Result rows report ``{key16}-{index}``, common-ai's form.
* **No cancel.** OpenRouter has no cancel endpoint: :meth:`OpenRouterBatchAdapter.cancel_batch` raises,
  saying that the batch keeps running and is billed. common-ai logs that message wherever it cancels
  (``cancel_on_kill``, ``cancel_on_timeout``, a stale batch).
* The billed cost of each request is in its result row (``usage.cost``); common-ai's manifest has none.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Container, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.ai.batch.base import (
    BatchAdapter,
    BatchState,
    BatchStatus,
    ExtractedOutput,
    RawResultItem,
    SubmitResult,
)
from airflow.providers.common.ai.exceptions import (
    BatchProviderNotYetSupportedError,
    LLMBatchInputError,
    LLMBatchLimitExceededError,
    LLMBatchModelMismatchError,
)

from airflow_openrouter.batch.spool import MAX_BYTES_PER_BATCH, MAX_REQUESTS_PER_BATCH, RequestSpool
from airflow_openrouter.batch.state import run_tag
from airflow_openrouter.exceptions import OpenRouterConfigError, OpenRouterNotFoundError

if TYPE_CHECKING:
    from airflow.providers.common.ai.batch.base import BatchRequest
    from airflow.providers.common.ai.batch.output_schema import OutputSpec

    from airflow_openrouter.batch.items import ItemRequest
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import Batch, BatchResult, ChatCompletion

__all__ = ["OpenRouterBatchAdapter", "OpenRouterBatchInputError", "OpenRouterCancelUnsupportedError"]

log = logging.getLogger(__name__)

#: What names the credentials in the hook's logs and errors (common-ai does not pass the connection id).
CREDENTIALS_LABEL = "llm_conn_id of the common-ai task"
#: The only completion window OpenRouter's Batch API takes.
COMPLETION_WINDOW = "24h"
_OPENROUTER_HOSTS = ("openrouter.ai", "127.0.0.1", "localhost", "::1")
#: Request fields this adapter sets itself: a request may not set them (no silent override).
_MANAGED_FIELDS = {
    "model": "set model_id on the task (one model per batch)",
    "messages": "requests carry a prompt and a system_prompt",
    "stream": "batches do not stream",
    "max_tokens": "set max_tokens on the task or on the request",
}
# How long a batch that answers 404 is asked again: OpenRouter may not list a batch it just created.
_NOT_FOUND_RETRIES = 3
_NOT_FOUND_WAIT_S = 2.0

_STATUSES: dict[str, BatchStatus] = {
    "validating": "in_progress",
    "in_progress": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "in_progress",
    "completed": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
}


class OpenRouterBatchInputError(LLMBatchInputError):
    """A request common-ai would submit that OpenRouter's Batch API cannot take (found before submitting)."""


class OpenRouterCancelUnsupportedError(BatchProviderNotYetSupportedError):
    """OpenRouter has no endpoint that cancels a batch."""


class OpenRouterBatchAdapter(BatchAdapter):
    """common-ai's :class:`~airflow.providers.common.ai.batch.base.BatchAdapter` for OpenRouter's Batch API.

    Selected by ``model_id="openrouter:<model>"`` with an ``openrouter`` connection (or a ``pydanticai``
    one whose host is OpenRouter's). See the module docstring for the rules.

    :param api_key: the connection's password (empty: ``OPENROUTER_API_KEY``).
    :param base_url: the connection's host, a full URL (empty: ``https://openrouter.ai/api/v1``).
    :param client: a ready :class:`~airflow_openrouter.hooks.openrouter.OpenRouterHook` instead (tests).
    :param sleep: how the 404 grace of :meth:`get_batch` waits (tests).
    """

    name = "openrouter"
    conn_types = frozenset({"openrouter", "pydanticai"})
    max_requests = MAX_REQUESTS_PER_BATCH
    max_payload_bytes = MAX_BYTES_PER_BATCH
    allows_per_request_model = False

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if client is None:
            from airflow_openrouter.hooks.openrouter import OpenRouterHook

            client = OpenRouterHook.from_credentials(api_key, base_url, label=CREDENTIALS_LABEL)
            _warn_if_not_openrouter(client.settings.base_url)
        self._client = client
        self._sleep = sleep
        # (model, request count) of the last validate_requests: common-ai validates on this very
        # instance before it looks for an orphaned batch, and they narrow that search.
        self._shape: tuple[str, int] | None = None

    @property
    def hook(self) -> OpenRouterHook:
        return self._client

    # --- building the requests -------------------------------------------------------------------

    def build_output_directive(self, spec: OutputSpec) -> dict[str, Any]:
        if not spec.is_structured:
            return {}
        from airflow_openrouter.schemas import JsonSchemaOutput

        return {"response_format": JsonSchemaOutput(spec.json_schema, name=spec.schema_name).response_format}

    def validate_requests(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        output_spec: OutputSpec,
        idempotency_key: str,
        **kwargs: Any,
    ) -> None:
        if len(requests) > self.max_requests:
            raise LLMBatchLimitExceededError(
                f"OpenRouter's Batch API takes at most {self.max_requests:,} requests per batch; got "
                f"{len(requests):,}. Split the input across mapped task instances with .expand() so that "
                f"each submits at most {self.max_requests:,}."
            )
        # The run tag ("~" and 10 characters) follows common-ai's "{key16}-{index}".
        tag_length = 1 + len(run_tag("", ""))
        self.check_custom_id_length(idempotency_key, len(requests), max_length=64 - tag_length)
        self._provider(kwargs.get("request_params"))
        with self._spool(requests, model=model, key16=idempotency_key, output_spec=output_spec, **kwargs):
            pass
        self._shape = (model, len(requests))

    def _spool(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        key16: str,
        output_spec: OutputSpec,
        system_prompt: str = "",
        max_tokens: int | None = None,
        request_params: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> RequestSpool:
        """Every request rendered to its batch line, in a spool that must fit one batch."""
        directive = self.build_output_directive(output_spec)
        shared = _request_fields(request_params, "request_params", structured=output_spec.is_structured)
        shared.pop("provider", None)  # a batch-level field (see submit)

        def item_requests() -> Iterator[ItemRequest]:
            for index, request in enumerate(requests):
                yield self._item_request(
                    index, request, model, key16, shared, directive, system_prompt, max_tokens
                )

        spool = RequestSpool(item_requests(), fingerprint_of={})
        if len(spool.chunks) > 1:
            fitting = spool.chunks[1].first_index
            spool.close()
            schema_bytes = len(json.dumps(directive)) if directive else 0
            raise LLMBatchLimitExceededError(
                f"These {len(requests):,} requests are more than OpenRouter takes in one batch (200 MB in "
                f"all): only the first {fitting:,} fit"
                + (
                    f", and the output_type schema adds {schema_bytes:,} bytes to every request"
                    if directive
                    else ""
                )
                + ". Split the input with .expand() so that each task instance submits fewer."
            )
        return spool

    def _item_request(
        self,
        index: int,
        request: BatchRequest,
        model: str,
        key16: str,
        shared: Mapping[str, Any],
        directive: Mapping[str, Any],
        system_prompt: str | None,
        max_tokens: int | None,
    ) -> ItemRequest:
        from airflow_openrouter.batch.items import ItemRequest, check_body
        from airflow_openrouter.hooks.openrouter import chat_body

        resolved = self.resolve_request_model(
            request.get("model"), default_bare_model=model, request_index=index
        )
        if resolved != model:
            raise LLMBatchModelMismatchError(
                f"Request {index} sets model {request.get('model')!r}, but one OpenRouter batch runs one "
                f"model ({model!r}, from model_id). Give it its own task, or drop its model."
            )
        prompt, system = request.get("prompt"), request.get("system_prompt") or system_prompt
        for field, text in (("prompt", prompt), ("system_prompt", system)):
            if text is not None and not isinstance(text, str):
                raise OpenRouterBatchInputError(
                    f"Request {index}: {field} must be text, got {type(text).__name__}. OpenRouter's Batch "
                    "API takes text-only requests; for images use OpenRouterChatOperator or "
                    "OpenRouterBatchOperator(engine='concurrent')."
                )
        own = _request_fields(request.get("params"), f"Request {index}'s params", structured=bool(directive))
        if "provider" in own:
            raise OpenRouterBatchInputError(
                f"Request {index}'s params set 'provider': routing applies to the whole batch. Put it in "
                "the task's request_params."
            )
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        custom_id = f"{key16}-{index}"
        body = chat_body(
            messages,
            None,
            {**shared, **own, "max_tokens": request.get("max_tokens") or max_tokens, **directive},
        )
        try:
            check_body(body, index, custom_id)
        except OpenRouterConfigError as exc:
            raise OpenRouterBatchInputError(str(exc)) from None
        return ItemRequest(index, custom_id, body)

    @staticmethod
    def _provider(request_params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        provider = (request_params or {}).get("provider")
        if provider is not None and not isinstance(provider, Mapping):
            raise OpenRouterBatchInputError(
                f"request_params['provider'] must be a dict of routing preferences such as "
                f"{{'only': ['openai']}}, got {provider!r:.80}."
            )
        return provider

    # --- submitting ------------------------------------------------------------------------------

    def submit(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        idempotency_key: str,
        input_fingerprint: str,
        output_spec: OutputSpec,
        **kwargs: Any,
    ) -> SubmitResult:
        from airflow_openrouter.batch.failures import as_permanent, sentence
        from airflow_openrouter.batch.submit import tagged
        from airflow_openrouter.exceptions import OpenRouterAPIError, OpenRouterBadRequestError

        window = kwargs.get("completion_window") or COMPLETION_WINDOW
        if window != COMPLETION_WINDOW:
            raise OpenRouterBatchInputError(
                f"completion_window={window!r}: OpenRouter's Batch API takes only {COMPLETION_WINDOW!r}."
            )
        tag = run_tag(idempotency_key, input_fingerprint)
        provider = self._provider(kwargs.get("request_params"))
        with self._spool(
            requests, model=model, key16=idempotency_key, output_spec=output_spec, **kwargs
        ) as spool:
            lines = list(tagged(iter(spool), tag))
        try:
            batch = self.hook.create_batch(
                model=model, requests=lines, provider=provider, completion_window=COMPLETION_WINDOW
            )
        except OpenRouterAPIError as exc:
            # A refusal created nothing: say so, and do not retry what fails the same way every time.
            if isinstance(exc, OpenRouterBadRequestError) or exc.systemic:
                raise as_permanent(
                    exc,
                    f"{sentence(exc.message)} POST /batches of {len(lines):,} requests to {model!r} was "
                    "refused; nothing was submitted or billed. Fix the model, key or credits, then clear "
                    "the task.",
                ) from exc
            raise  # 429, 5xx: possibly created; a retry looks for it (find_orphaned_batch)
        log.info("Submitted OpenRouter batch %s: %d requests to %s.", batch.id, len(lines), model)
        return SubmitResult(batch_id=batch.id, provider_input_ref=None)

    # --- polling and results ---------------------------------------------------------------------

    def _fetch(self, batch_id: str) -> Batch:
        """``GET /batches/{id}``, asked again for a few seconds when it answers 404 (a batch just created
        may not be visible yet); a lasting 404 raises with ``status_code == 404``, which common-ai takes
        for a batch that is gone."""
        for attempt in range(_NOT_FOUND_RETRIES + 1):
            try:
                return self.hook.get_batch(batch_id)
            except OpenRouterNotFoundError:
                if attempt == _NOT_FOUND_RETRIES:
                    raise
                self._sleep(_NOT_FOUND_WAIT_S)
        raise AssertionError("unreachable")

    def get_batch(self, batch_id: str) -> BatchState:
        batch = self._fetch(batch_id)
        counts = batch.request_counts
        # OpenRouter counts completed and failed requests; once a batch expired or was cancelled, the
        # rest never ran.
        rest = max(counts.total - counts.completed - counts.failed, 0)
        return BatchState(
            status=_STATUSES.get(batch.status, "in_progress"),
            counts={
                "succeeded": counts.completed,
                "errored": counts.failed,
                "expired": rest if batch.status == "expired" else 0,
                "cancelled": rest if batch.status == "cancelled" else 0,
            },
            error_message=(batch.error.message or None) if batch.error else None,
        )

    def iter_results(self, batch_id: str) -> Iterator[RawResultItem]:
        batch = self._fetch(batch_id)  # now: an unknown id raises here, not on the first next()
        return self._results(batch)

    def _results(self, batch: Batch) -> Iterator[RawResultItem]:
        from airflow_openrouter.batch.items import item_custom_id

        for row in self.hook.iter_batch_results(batch.id, expected_rows=batch.request_counts.total or None):
            custom_id = item_custom_id(row.custom_id)
            _, _, index = custom_id.rpartition("-")
            if not index.isdigit():
                log.warning(
                    "Batch %s: skipping a result row with the custom_id %r, which this adapter did not "
                    "submit (its request counts as missing).",
                    batch.id,
                    row.custom_id[:80],
                )
                continue
            yield _raw_item(row, custom_id, int(index))
        if batch.usage is not None and batch.usage.cost is not None:
            log.info("Batch %s: $%.6f billed (OpenRouter's total for the batch).", batch.id, batch.usage.cost)

    def extract_output(self, raw: RawResultItem, spec: OutputSpec) -> ExtractedOutput:
        if raw.raw is None:
            return ExtractedOutput(kind="absent")
        if not spec.is_structured:
            return ExtractedOutput(kind="text", text=raw.raw)
        from airflow_openrouter.schemas import drop_optional_nulls, extract_json

        try:
            value = extract_json(raw.raw)
        except ValueError:
            return ExtractedOutput(kind="json_text", text=raw.raw)  # common-ai: invalid_output, raw kept
        return ExtractedOutput(
            kind="json_value", text=raw.raw, value=drop_optional_nulls(value, spec.json_schema)
        )

    # --- cancelling, and batches whose submit answer was lost --------------------------------------

    def cancel_batch(self, batch_id: str) -> None:
        message = (
            f"OpenRouter has no batch cancel endpoint: batch {batch_id} keeps running and is billed. It can "
            "be deleted once it has finished (OpenRouterHook.delete_batch), which removes its results."
        )
        log.warning("%s", message)
        raise OpenRouterCancelUnsupportedError(message)

    def find_orphaned_batch(
        self, idempotency_key: str, input_fingerprint: str, not_before: str
    ) -> str | None:
        """The batch of a submit whose answer was lost, when its results prove it is this task run's.

        Candidates are the batches created since *not_before* (less a minute of clock skew), of the
        model and size last validated; one is adopted only when its first result rows carry
        ``{idempotency_key}-{index}~{run tag}``. A finished batch that is someone else's is skipped, a
        failed or expired one (no results to prove it by) too; a candidate still running cannot be
        proven yet, so this raises (common-ai then neither adopts nor resubmits; a retry looks again).
        """
        from airflow_openrouter.batch.submit import find_proven_batch

        model, count = self._shape or (None, None)
        batch = find_proven_batch(
            self.hook,
            ours=_TaggedIds(idempotency_key, run_tag(idempotency_key, input_fingerprint)),
            posted_at=datetime.fromisoformat(not_before).timestamp() if not_before else 0,
            model=model,
            count=count,
            what=f"task key {idempotency_key}",
            log=log,
        )
        return batch.id if batch is not None else None


class _TaggedIds(Container[str]):
    """The custom ids ``{key16}-{index}~{tag}`` of one submission, whatever the index."""

    def __init__(self, key16: str, tag: str) -> None:
        self._prefix, self._suffix = f"{key16}-", f"~{tag}"

    def __contains__(self, custom_id: object) -> bool:
        if not isinstance(custom_id, str) or not custom_id.endswith(self._suffix):
            return False
        index = custom_id[len(self._prefix) : -len(self._suffix)]
        return custom_id.startswith(self._prefix) and index.isdigit()


def _request_fields(params: Mapping[str, Any] | None, where: str, *, structured: bool) -> dict[str, Any]:
    """*params* (``request_params``, or a request's ``params``), refusing the fields the adapter sets."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise OpenRouterBatchInputError(
            f"{where} must be a dict of request fields, got {type(params).__name__}."
        )
    managed = dict(_MANAGED_FIELDS)
    if structured:
        managed["response_format"] = "output_type sets the response format"
    extra_body = params.get("extra_body")
    # extra_body is merged into the body last: it must not set them either.
    for fields, label in ((params, where), (extra_body or {}, f"{where}' extra_body")):
        if not isinstance(fields, Mapping):
            raise OpenRouterBatchInputError(f"{label} must be a dict of request fields.")
        for field, advice in managed.items():
            if field in fields:
                raise OpenRouterBatchInputError(
                    f"{label} set {field!r}, which the OpenRouter batch adapter sets itself: {advice}."
                )
    return dict(params)


def _raw_item(row: BatchResult, custom_id: str, index: int) -> RawResultItem:
    completion = row.completion()
    choice = completion.choices[0] if completion and completion.choices else None
    if completion is None or choice is None or row.error is not None or choice.error is not None:
        return _errored_item(row, completion, custom_id, index)
    if choice.finish_reason == "error":
        return _errored_item(row, completion, custom_id, index)
    usage = completion.usage
    # common-ai types usage as ints; the billed cost (USD) goes along and lands in the row.
    row_usage: Any = (
        {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens, "cost": usage.cost}
        if usage is not None
        else None
    )
    return RawResultItem(
        custom_id=custom_id,
        index=index,
        provider_status="success",
        model=completion.model or None,
        usage=row_usage,
        finish_reason=choice.finish_reason,
        error=None,
        raw=choice.message.content,
    )


def _errored_item(
    row: BatchResult, completion: ChatCompletion | None, custom_id: str, index: int
) -> RawResultItem:
    choice = completion.choices[0] if completion and completion.choices else None
    status_code = row.response.status_code if row.response else None
    kind = (row.error.error_type or row.error.type or "") if row.error else ""
    code: str | None
    if choice is not None and choice.error is not None:
        message, code = choice.error.message, str(choice.error.code)
    elif row.error is not None:
        message, code = row.error.message, kind or None
    else:
        message, code = f"The request failed (HTTP {status_code}).", str(status_code)
    status = "expired" if "expired" in kind else "cancelled" if "cancel" in kind else "errored"
    return RawResultItem(
        custom_id=custom_id,
        index=index,
        provider_status=status,  # type: ignore[arg-type]
        model=completion.model if completion else None,
        usage=None,
        finish_reason=choice.finish_reason if choice else None,
        error={
            "type": "provider_error" if status == "errored" else status,
            "message": message or "The model returned an error.",
            "provider_code": code,
            "stage": "provider",
        },
        raw=None,
    )


def _warn_if_not_openrouter(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    if not (host in _OPENROUTER_HOSTS or host.endswith(".openrouter.ai")):
        log.warning(
            "model_id 'openrouter:...' sends this batch to %s, which is not OpenRouter: the connection's "
            "host is the base URL. Leave it empty for https://openrouter.ai/api/v1.",
            base_url,
        )
