"""The base of the OpenRouter operators: the arguments, checks, templating rules and lookups they share.

:class:`OpenRouterBaseOperator` declares once what the chat operator, ``@task.openrouter`` and the batch
operator have in common: the connection, the model, provider routing, ``response_format``,
``prompt_vars`` and the request parameters of :data:`airflow_openrouter._params.SHARED_PARAMS`
(a subclass adds its own through ``request_params``). Every argument is checked when the operator is
built, so that a broken DAG fails to import; a value known only at run time (templated, or fed from
XCom to a mapped task) is checked right after rendering, before any request.

Templating follows one rule (see :mod:`._upstream`): what the DAG author wrote is a template, what an
upstream task produced is data and is never rendered.

The DAG processor imports this module on every parse: it imports nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_openrouter import DEFAULT_CONN_ID
from airflow_openrouter._params import (
    SHARED_PARAMS,
    TEMPLATE_EXTENSIONS,
    check_request_params,
    check_response_format,
    config_error,
    is_resolvable,
)

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context
    from pydantic import BaseModel

    from airflow_openrouter.hooks.openrouter import OpenRouterHook

__all__ = [
    "DEFAULT_CONN_ID",
    "DEFAULT_POLL_INTERVAL_S",
    "OpenRouterBaseOperator",
    "check_cost_arguments",
    "poll_interval",
]

#: ``[openrouter] poll_interval`` when the setting is missing (the provider registers the same default).
DEFAULT_POLL_INTERVAL_S = 30.0


def poll_interval(explicit: float | None) -> float:
    """Seconds between two polls of a batch: *explicit* when given, else ``[openrouter] poll_interval``.

    The one lookup of the operator, the sensor (deferrable mode) and the trigger's callers.
    """
    if explicit is not None:
        return float(explicit)
    from airflow_openrouter._compat import conf

    return conf.getfloat("openrouter", "poll_interval", fallback=DEFAULT_POLL_INTERVAL_S)


class OpenRouterBaseOperator(BaseOperator):
    """What the OpenRouter operators share. Not used directly: see the chat and the batch operator.

    :param model: model id (templated); defaults to the connection's ``default_model``.
    :param provider: OpenRouter provider routing preferences (``{"order": [...], "only": [...]}``, ...).
    :param response_format: a pydantic model class, a JSON Schema dict or ``"json_object"``: the reply
        is parsed and validated (``None`` or ``"text"``: free text).
    :param prompt_vars: extra template variables (templated; values may be ``XComArg``).
    :param seed, max_tokens, temperature, top_p, stop, frequency_penalty, presence_penalty, reasoning,
        user: request fields, sent as given; ``None`` leaves them out. Checked against OpenRouter's
        ranges (``temperature`` 0-2, ``top_p`` 0-1, penalties -2-2, ``stop`` at most 4 strings, ...).
    :param extra_body: more request fields, merged into the body as they are.
    :param openrouter_conn_id: the OpenRouter connection.
    """

    template_ext: Sequence[str] = TEMPLATE_EXTENSIONS
    #: The request body fields this operator takes as arguments (their rules: airflow_openrouter._params).
    request_params: ClassVar[tuple[str, ...]] = SHARED_PARAMS
    #: Prompt templates: rendered by the prompt renderer (sandboxed, with prompt_vars), never by Airflow.
    prompt_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        model: str | None = None,
        provider: Mapping[str, Any] | None = None,
        response_format: type[BaseModel] | Mapping[str, Any] | str | None = None,
        prompt_vars: Mapping[str, Any] | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        reasoning: Mapping[str, Any] | None = None,
        user: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        openrouter_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.provider = provider
        self.response_format = response_format
        self.prompt_vars = prompt_vars
        self.seed = seed
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stop = stop
        self.frequency_penalty = frequency_penalty
        self.presence_penalty = presence_penalty
        self.reasoning = reasoning
        self.user = user
        self.extra_body = extra_body
        self.openrouter_conn_id = openrouter_conn_id
        # The arguments that are upstream data (set when rendering; see _upstream): plain values only,
        # so that the operator can still be deep-copied.
        self._upstream_fields: frozenset[str] = frozenset()

    # --- checks ----------------------------------------------------------------------------------

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Airflow's ``partial()``, checking the static arguments first: a mapped task's constructor runs
        only at run time, and a broken DAG should fail to import."""
        cls.check_static_arguments(kwargs, task_id=kwargs.get("task_id"))
        return super().partial(**kwargs)

    @classmethod
    def check_static_arguments(cls, arguments: Mapping[str, Any], *, task_id: str | None) -> None:
        """Check the arguments of *arguments* that this operator knows (e.g. ``partial()``'s or a
        decorator's keyword arguments); others are left to the operator's constructor.

        :raises OpenRouterConfigError: naming the task, the argument and what is allowed.
        """
        where = _where(task_id)
        check_request_params({k: v for k, v in arguments.items() if k in cls.request_params}, where=where)
        if "response_format" in arguments:
            check_response_format(arguments["response_format"], where=where)
        conn_id = arguments.get("openrouter_conn_id", DEFAULT_CONN_ID)
        if not isinstance(conn_id, str) or not conn_id:
            raise config_error(where, "openrouter_conn_id", "the id of an OpenRouter connection", conn_id)
        if "provider" in arguments and not isinstance(arguments["provider"], (Mapping, type(None))):
            raise config_error(where, "provider", "a dict of provider preferences", arguments["provider"])

    def _check_arguments(self) -> None:
        """Check every argument; subclasses call it at the end of ``__init__``."""
        self.check_static_arguments(
            {name: getattr(self, name) for name in (*self.request_params, "provider", "openrouter_conn_id")}
            | {"response_format": self.response_format},
            task_id=self.task_id,
        )
        self._check_templated_arguments(rendered=False)

    def _check_templated_arguments(self, *, rendered: bool) -> None:
        """``model`` and ``prompt_vars``: before rendering a string may still be a template."""
        where = _where(self.task_id)
        model = self.model
        if model is not None and not (isinstance(model, str) or (not rendered and is_resolvable(model))):
            raise config_error(where, "model", "a model id such as 'openai/gpt-4o-mini'", model)
        if rendered and model is not None and not model.strip():
            raise config_error(where, "model", "a model id (it rendered empty)", model)
        self._prompt_vars(rendered=rendered)

    def _prompt_vars(self, *, rendered: bool = True) -> Mapping[str, Any]:
        """``prompt_vars`` as a dict (empty when not given)."""
        value = self.prompt_vars
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return value
        if not rendered and (isinstance(value, str) or is_resolvable(value)):
            return {}  # a template or an XComArg: known after rendering
        raise config_error(_where(self.task_id), "prompt_vars", "a dict of template variables", value)

    # --- templating ------------------------------------------------------------------------------

    def _do_render_template_fields(
        self,
        parent: Any,
        template_fields: Iterable[str],
        context: Context,
        jinja_env: jinja2.Environment,
        seen_oids: set[int],
    ) -> None:
        # Overridden here rather than render_template_fields() because a mapped task renders through this
        # method only (called on the unmapped task). Same signature on Airflow 3.1-3.3.
        if parent is not self:  # a nested object with template fields of its own
            super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
            return
        from airflow_openrouter.operators._upstream import mark_upstream_data

        fields = list(template_fields)
        ti = context.get("ti")
        self._upstream_fields = mark_upstream_data(
            self, [*fields, *self.prompt_fields], getattr(ti, "map_index", None)
        )
        # The prompts as written (the chat operator renders them in place): lineage names and hashes
        # the templates, never the rendered text.
        self._prompt_sources = {name: getattr(self, name, None) for name in self.prompt_fields}
        self._before_rendering()
        # First everything but the prompts: prompt_vars' XComArgs resolve here, to plain values.
        other_fields = [name for name in fields if name not in self.prompt_fields]
        super()._do_render_template_fields(self, other_fields, context, jinja_env, seen_oids)
        self._render_prompt_fields(
            [name for name in fields if name in self.prompt_fields], context, jinja_env
        )
        self._check_templated_arguments(rendered=True)

    def _before_rendering(self) -> None:
        """Note what only the unrendered values tell (e.g. which ones are XComArgs); a subclass hook."""

    def _render_prompt_fields(
        self, names: Sequence[str], context: Context, jinja_env: jinja2.Environment
    ) -> None:
        """Render the prompt templates among *names* (those that are template fields) in place."""

    # --- execution helpers -----------------------------------------------------------------------

    def _request_fields(self) -> dict[str, Any]:
        """The request body fields given as arguments (``None`` for the ones not given)."""
        return {name: getattr(self, name) for name in self.request_params}

    def _model(self, hook: OpenRouterHook) -> str:
        from airflow_openrouter.exceptions import OpenRouterConfigError

        model = self.model or hook.default_model
        if not model:
            raise OpenRouterConfigError(
                f"No model for task {self.task_id!r}: pass model=... or set default_model in the extra of "
                f"connection {self.openrouter_conn_id!r}."
            )
        return model


def check_cost_arguments(
    where: str,
    *,
    max_cost_usd: Any = None,
    dry_run: Any = False,
    result_cache: Any = None,
    ttl: Any = None,
) -> float | None:
    """Check the cost-control arguments (``max_cost_usd``, ``dry_run``, ``result_cache``,
    ``result_cache_ttl``) when the DAG is parsed; returns the TTL in seconds.

    :raises OpenRouterConfigError: naming *where*, the argument and what is allowed.
    """
    from datetime import timedelta

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if max_cost_usd is not None and not (number(max_cost_usd) and max_cost_usd >= 0):
        raise config_error(where, "max_cost_usd", "a number of US dollars of at least 0", max_cost_usd)
    if not isinstance(dry_run, bool):
        raise config_error(where, "dry_run", "True or False", dry_run)
    # A string (a URI, maybe templated) or a path object (ObjectStoragePath, not imported at DAG parse).
    if not (result_cache is None or result_cache is False or isinstance(result_cache, str)) and not hasattr(
        result_cache, "iterdir"
    ):
        raise config_error(
            where,
            "result_cache",
            "an ObjectStoragePath URI such as 's3://bucket/cache', or False",
            result_cache,
        )
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if seconds is not None and not (number(seconds) and seconds > 0):
        raise config_error(where, "result_cache_ttl", "a positive number of seconds or a timedelta", ttl)
    return None if seconds is None else float(seconds)


def _where(task_id: str | None) -> str:
    return f"Task {task_id!r}" if task_id else "An OpenRouter task"
