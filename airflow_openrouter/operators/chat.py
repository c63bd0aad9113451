"""OpenRouterChatOperator: one chat completion as a task, with templated prompts and validated output.

The operator only wires things together: prompt rendering lives in :mod:`airflow_openrouter.prompts`,
structured output and the repair loop in :mod:`airflow_openrouter.schemas`, and all I/O in the hook.
This module imports nothing heavy at module level, because the DAG processor imports it on every parse.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Container, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_openrouter._params import CHAT_ONLY_PARAMS, SHARED_PARAMS, config_error
from airflow_openrouter.links import OpenRouterGenerationLink
from airflow_openrouter.operators._base import OpenRouterBaseOperator, check_cost_arguments

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from airflow_openrouter._streaming import ChatStream
    from airflow_openrouter.exceptions import OpenRouterAPIError, OpenRouterConnectionError
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.operators._chat_cost import ChatCache
    from airflow_openrouter.prompts import ImageSource
    from airflow_openrouter.schemas import OutputSpec
    from airflow_openrouter.types import ChatCompletion

USAGE_XCOM_KEY = "openrouter_usage"

_STREAM_PROGRESS_EVERY_S = 2.0
_EVERY_IMAGE = range(sys.maxsize)  # "all of them", as a container of indexes
# How often a retry wait checks whether the task was killed.
_KILL_POLL_S = 0.1


class OpenRouterChatOperator(OpenRouterBaseOperator):
    """Send one chat completion to OpenRouter and return the reply: text, validated JSON, or tool calls.

    **Prompts.** ``prompt``, ``system_prompt`` and ``messages`` are Jinja templates, inline or in a
    file ending in ``.j2``, ``.jinja2``, ``.md`` or ``.txt`` (found in the DAG folder and
    ``template_searchpath``). They see the task context plus ``prompt_vars``, whose values may be
    ``XComArg``s. Each prompt is rendered once, in a sandbox with ``StrictUndefined``: upstream values
    reach the model literally (``{{ ... }}`` inside them is never evaluated), and an undefined variable
    fails the task before any request, naming the variable, the template and the line.

    **Upstream data is data.** Only what the DAG file says is a template: the constructor's arguments,
    a mapped task's ``partial()`` arguments, and literal values given to ``expand()`` (so
    ``.expand(prompt=["... {{ run_id }}", ...])`` renders each). Whatever an upstream task produced,
    through an ``XComArg``, ``.expand(x=task.output)`` or ``.expand_kwargs(task.output)``, is sent as it
    is: never rendered, never read as a template file name, and never allowed to name a file outside
    the DAG folder (see ``images``).

    **Structured output.** With ``response_format`` (a pydantic model class, a JSON Schema dict, or
    ``"json_object"``) the reply is parsed and validated; an invalid reply is sent back with its errors
    up to ``max_repair_attempts`` times, then the task fails with ``OpenRouterOutputValidationError``.
    The request then also carries ``provider={"require_parameters": true}`` so that OpenRouter routes
    only to providers that honour the format, unless you pass ``provider`` yourself.

    **Return value** (XCom ``return_value``): the text; or the validated JSON as plain dicts and lists
    (a pydantic model's ``model_dump(mode="json")``); or, when the model called tools instead of
    answering, ``[{"id": str, "name": str, "arguments": <parsed JSON>}]`` (the tools are not run).
    XCom ``openrouter_usage`` holds ``model``, ``provider``, ``generation_id``, ``generation_ids``
    (one per call, repairs included), ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
    ``cached_tokens``, ``reasoning_tokens``, ``cost`` (billed), ``cost_details`` and ``is_byok``
    (summed over every call), ``latency_s``, ``try_number``, ``attempts`` and ``cached``. With
    ``do_xcom_push=False`` neither is pushed.

    **Attribution.** Unless set, every request carries ``user``, ``session_id`` and ``metadata`` naming
    the DAG, task, run, map index and try (see :mod:`airflow_openrouter.cost.attribution`).

    **Checks.** Every argument is checked when the DAG is parsed (ranges of the request fields, a
    JSON Schema against its meta-schema, ...); a value known only at run time is checked right after
    rendering. Either way the error (``OpenRouterConfigError``) names the task, the argument and what
    is allowed, before any request.

    :param prompt: the user message (templated).
    :param system_prompt: the system message (templated).
    :param messages: a conversation in OpenAI chat format (templated); ``prompt``, if also given, is
        appended as the last user turn.
    :param images: image URLs, data URLs, local paths or ``ObjectStoragePath``s / URIs, attached to
        ``prompt`` (templated). Local paths are relative to the DAG folder (then ``template_searchpath``)
        and must stay inside those folders; a ``file://`` or object-storage URI is read only when it is
        written in the DAG file, not when an upstream task produced it.
    :param models: fallback models, tried in order when ``model`` is unavailable.
    :param max_repair_attempts: how many times an invalid structured reply is sent back for repair.
    :param logit_bias, logprobs, top_logprobs, tools, tool_choice, plugins: request fields, sent as
        given (see OpenRouter's chat completion API); ``None`` leaves them out.
    :param stream: stream the reply (logs progress; same result as without streaming).
    :param result_cache: an ObjectStoragePath URI under which replies are cached by request (default:
        ``[openrouter] result_cache``; ``False``: none). The same request (model, rendered messages,
        parameters, schema, ``max_repair_attempts``) is answered from the cache, without a request
        (``openrouter_usage`` says ``cached: true``, ``cost`` 0); a new valid reply is stored.
    :param result_cache_ttl: how old a cached reply may be (seconds or timedelta; default: any age).

    The other arguments (``model``, ``provider``, ``response_format``, ``prompt_vars``, the sampling
    fields, ``extra_body``, ``openrouter_conn_id``) are described in
    :class:`~airflow_openrouter.operators._base.OpenRouterBaseOperator`.

    **Killing the task** (``on_kill``: marked failed, timed out, or the worker stops) aborts whatever is
    in flight: the HTTP connection is dropped (which stops generation, and billing, on providers that
    support it), a retry wait ends, no repair is sent, and the task fails with
    ``OpenRouterConnectionError``; a reply that arrives anyway is never returned as a success.
    """

    template_fields: Sequence[str] = ("prompt_vars", "model", "images", "system_prompt", "prompt", "messages")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "prompt": "jinja",
        "system_prompt": "jinja",
        "messages": "json",
        "prompt_vars": "json",
        "images": "json",
    }
    # Rendered with prompt_vars in scope, after every other templated field.
    prompt_fields: ClassVar[tuple[str, ...]] = ("system_prompt", "prompt", "messages")
    request_params: ClassVar[tuple[str, ...]] = (*SHARED_PARAMS, *CHAT_ONLY_PARAMS)
    ui_color = "#e8eaf6"
    operator_extra_links = (OpenRouterGenerationLink(),)

    def __init__(
        self,
        *,
        prompt: str | None = None,
        system_prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        images: Sequence[ImageSource] | None = None,
        models: Sequence[str] | None = None,
        max_repair_attempts: int = 1,
        logit_bias: Mapping[str, float] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        plugins: Sequence[Mapping[str, Any]] | None = None,
        stream: bool = False,
        result_cache: str | Any | None = None,
        result_cache_ttl: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.messages = messages
        self.images = images
        self.models = models
        self.max_repair_attempts = max_repair_attempts
        self.logit_bias = logit_bias
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.tools = tools
        self.tool_choice = tool_choice
        self.plugins = plugins
        self.stream = stream
        self.result_cache = result_cache
        self.result_cache_ttl = check_cost_arguments(
            f"Task {self.task_id!r}", result_cache=result_cache, ttl=result_cache_ttl
        )
        self._check_arguments()
        if type(max_repair_attempts) is not int or max_repair_attempts < 0:
            raise config_error(
                f"Task {self.task_id!r}",
                "max_repair_attempts",
                "an integer of at least 0",
                max_repair_attempts,
            )
        # Execution state, shared with on_kill (which may run on another thread): plain values only,
        # so that the operator can still be deep-copied.
        self._active_stream: ChatStream | None = None
        self._hook: OpenRouterHook | None = None
        self._execute_thread: int | None = None
        self._killed = False
        # Which images came from upstream (indexes into the rendered list), set when rendering.
        self._upstream_images: Container[int] = frozenset()

    # --- templating ------------------------------------------------------------------------------

    def resolve_template_files(self) -> None:
        # Airflow swaps a template file name for the file's text when it parses the DAG. The prompt
        # fields keep the name instead, and the prompt renderer loads the file itself, so that a
        # render error can name the file and not just "inline prompt".
        prompt_values = {name: getattr(self, name) for name in self.prompt_fields}
        super().resolve_template_files()
        for name, value in prompt_values.items():
            setattr(self, name, value)

    def _before_rendering(self) -> None:
        # Which images an upstream task produced: known only before rendering resolves the XComArgs.
        from airflow_openrouter._params import is_resolvable

        images = self.images
        if "images" in self._upstream_fields or is_resolvable(images):
            self._upstream_images = _EVERY_IMAGE
        elif isinstance(images, (list, tuple)):
            self._upstream_images = frozenset(i for i, image in enumerate(images) if is_resolvable(image))
        else:
            self._upstream_images = frozenset()

    def _render_prompt_fields(
        self, names: Sequence[str], context: Context, jinja_env: jinja2.Environment
    ) -> None:
        from airflow_openrouter.prompts import render_prompt_value

        # The prompts, once, with prompt_vars beside the context. Upstream values among them were
        # marked as data (literal) before rendering began: they are resolved, not rendered.
        variables = {**context, **self._prompt_vars()}
        for name in names:
            rendered = render_prompt_value(
                getattr(self, name), jinja_env, variables, field=name, extensions=self.template_ext
            )
            setattr(self, name, rendered)

    # --- OpenLineage (called by the OpenLineage provider, on the worker; see airflow_openrouter.lineage) --

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_openrouter.lineage import chat_lineage

        return chat_lineage(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_openrouter.lineage import chat_lineage

        return chat_lineage(self)

    # --- execution -------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_openrouter.cost.attribution import Attribution
        from airflow_openrouter.hooks.openrouter import OpenRouterHook
        from airflow_openrouter.operators._chat_cost import cached_usage, chat_usage
        from airflow_openrouter.schemas import complete_validated, output_spec

        self._killed = False
        self._execute_thread = threading.get_ident()
        spec = output_spec(self.response_format)
        messages = self._messages()
        params = self._request_params(spec)
        # The connection's retry policy, except that a retry wait ends as soon as the task is killed.
        started = time.monotonic()
        try_number = context["ti"].try_number
        with OpenRouterHook(
            openrouter_conn_id=self.openrouter_conn_id, sleep=self._sleep_unless_killed
        ) as hook:
            model = self._model(hook)
            self.log.debug("Messages sent to %s: %s", model, messages)
            cache = self._cache(model, messages, params, spec)
            hit = cache.get() if cache is not None else None
            if hit is not None:
                self._push_usage(context, cached_usage(hit, time.monotonic() - started, try_number))
                return hit.entry.get("output")
            # Who sent it, added on the way out: never part of the cache key.
            attribution = Attribution.of_context(context)
            sent_params = attribution.applied_to_params(params) if attribution is not None else params

            def complete(conversation: list[dict[str, Any]]) -> ChatCompletion:
                self._raise_if_killed()  # e.g. killed during the previous call: no repair request
                request = {"messages": conversation, "model": model, **sent_params}
                if self.stream:
                    return self._stream_completion(hook, **request)
                return hook.chat_completion(**request)

            self._hook = hook
            try:
                reply = complete_validated(
                    complete, messages, spec, max_repair_attempts=self.max_repair_attempts, logger=self.log
                )
            except Exception as exc:
                if self._killed:  # whatever the aborted call raised, the cause is the kill
                    raise self._killed_error() from exc
                if params["provider"] is not self.provider and (explained := self._routing_error(exc, model)):
                    raise explained from exc
                raise
            finally:
                self._hook = None
            self._raise_if_killed()  # a reply that made it through anyway is not a success
        self.log.debug("Reply: %s", reply.value)
        usage = chat_usage(reply.completions, time.monotonic() - started, try_number)
        if cache is not None:
            cache.put(reply.value, usage)
        self._push_usage(context, usage)
        return reply.value

    def _push_usage(self, context: Context, usage: dict[str, Any]) -> None:
        self._usage = usage  # for OpenLineage, which reads it in a forked process (no XCom from there)
        if self.do_xcom_push:
            context["ti"].xcom_push(key=USAGE_XCOM_KEY, value=usage)

    def _cache(
        self, model: str, messages: list[dict[str, Any]], params: Mapping[str, Any], spec: OutputSpec
    ) -> ChatCache | None:
        from airflow_openrouter.cache import configured_root
        from airflow_openrouter.hooks.openrouter import chat_body
        from airflow_openrouter.operators._chat_cost import ChatCache

        root = configured_root(self.result_cache)
        if root is None:
            return None
        return ChatCache(
            root,
            model=model,
            body=chat_body(messages, None, {k: v for k, v in params.items() if k != "provider"}),
            provider=self.provider,
            spec=spec,
            max_repair_attempts=self.max_repair_attempts,
            ttl=self.result_cache_ttl,
            log=self.log,
        )

    def _messages(self) -> list[dict[str, Any]]:
        from airflow_openrouter.prompts import build_messages

        images = self.images or ()
        return build_messages(
            prompt=self.prompt,
            system_prompt=self.system_prompt,
            messages=self.messages,
            images=[images] if isinstance(images, (str, os.PathLike)) else images,  # one image
            image_roots=self._image_roots(),
            upstream_images=self._upstream_images,
        )

    def _image_roots(self) -> list[str]:
        """Where local images may be read from: the DAG folder, then ``template_searchpath``."""
        dag = self.get_dag()
        if dag is None:
            return []
        searchpath = dag.template_searchpath or []
        return [dag.folder, *([searchpath] if isinstance(searchpath, str) else searchpath)]

    def _request_params(self, spec: OutputSpec) -> dict[str, Any]:
        from airflow_openrouter.schemas import provider_preferences

        provider = provider_preferences(spec, self.provider)
        if provider is not self.provider:
            self.log.info(
                "Structured output requested: routing only to providers that support response_format "
                "(provider.require_parameters=true). Pass provider=... to choose the routing yourself."
            )
        return {**self._request_fields(), "provider": provider, "response_format": spec.response_format}

    def _routing_error(self, exc: Exception, model: str) -> OpenRouterAPIError | None:
        """The error to raise for a 404 "No endpoints found" after this operator added
        ``provider.require_parameters`` (so that it says so), or ``None`` for any other error."""
        from airflow_openrouter.exceptions import OpenRouterNotFoundError

        if not isinstance(exc, OpenRouterNotFoundError) or "no endpoints found" not in exc.message.lower():
            return None
        asked = "response_format and tools" if self.tools else "response_format"
        return exc.with_message(
            f"{exc.message.rstrip().removesuffix('.')}. The operator added provider.require_parameters=true "
            f"because response_format is set, so that OpenRouter routes only to providers that honour "
            f"{asked}, and no provider of {model!r} does. Use a model that supports structured outputs, or "
            "pass provider=... yourself to choose the routing (for example "
            "provider={'require_parameters': False}: the reply is then still validated and repaired, but a "
            "provider may ignore the format)."
        )

    def _stream_completion(self, hook: OpenRouterHook, **request: Any) -> ChatCompletion:
        """Stream one completion, logging progress now and then; returns the assembled completion."""
        stream = self._active_stream = hook.stream_chat_completion(**request)
        chars, last_report = 0, time.monotonic()
        try:
            with stream:
                for chunk in stream:
                    chars += sum(len(choice.delta.content or "") for choice in chunk.choices)
                    if time.monotonic() - last_report >= _STREAM_PROGRESS_EVERY_S:
                        self.log.info("Streaming %s: %d characters so far.", stream.generation_id, chars)
                        last_report = time.monotonic()
                return stream.completion()
        finally:
            self._active_stream = None

    def on_kill(self) -> None:
        """Abort the in-flight request, stream or retry wait; ``execute`` then raises.

        Safe to call from another thread, or from the SIGTERM handler on the thread running ``execute``.
        """
        self._killed = True
        stream, hook = self._active_stream, self._hook
        if stream is None and hook is None:
            return
        self.log.info("Task killed: aborting the in-flight OpenRouter request.")
        if hook is not None:
            hook.abort()
        if threading.get_ident() == self._execute_thread:
            # Airflow's SIGTERM handler, on the thread running execute, which may be holding httpx's
            # connection pool lock at this very moment: closing the stream or the client here could
            # deadlock. The blocked read fails on the shut-down socket, and execute closes the hook
            # on its way out.
            return
        if stream is not None:
            stream.close()
        if hook is not None:
            hook.close()  # a retry or a repair cannot reuse the pooled client

    # --- kill support ----------------------------------------------------------------------------

    def _sleep_unless_killed(self, seconds: float) -> None:
        """The retry policy's wait: ends early, raising, when the task is killed."""
        deadline = time.monotonic() + seconds
        while not self._killed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short sleeps rather than an Event: on_kill may run in a signal handler on this thread.
            time.sleep(min(remaining, _KILL_POLL_S))
        raise self._killed_error()

    def _raise_if_killed(self) -> None:
        if self._killed:
            raise self._killed_error()

    def _killed_error(self) -> OpenRouterConnectionError:
        from airflow_openrouter.exceptions import OpenRouterConnectionError

        return OpenRouterConnectionError(
            f"Task {self.task_id!r} was killed: the request to OpenRouter was aborted and no result is "
            "returned."
        )
