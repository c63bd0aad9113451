"""OpenRouterEmbeddingOperator: one vector per item, for thousands of items, to a Parquet (or JSONL) file.

The batch operator's glue with the embeddings endpoint (:mod:`airflow_openrouter.batch.embeddings`): the
same items, engines, deferral, record, run tag, failure verdict and manifest. It imports nothing heavy
at module level, because the DAG processor imports it on every parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_openrouter._params import SHARED_PARAMS, config_error, is_resolvable
from airflow_openrouter.operators.batch import Engine, OpenRouterBatchOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_openrouter.batch.endpoints import Endpoint
    from airflow_openrouter.batch.items import RequestBuilder

__all__ = ["OpenRouterEmbeddingOperator"]

#: The request fields of an embeddings request that are operator arguments.
EMBEDDING_PARAMS: tuple[str, ...] = ("user", "extra_body")
#: Fields the Batch API refuses in an embeddings batch.
_NOT_IN_BATCHES = ("provider", "input_type")
_MAX_INPUTS_PER_REQUEST = 2048


class OpenRouterEmbeddingOperator(OpenRouterBatchOperator):
    """Embed a text for every item through OpenRouter, and write one row with its vector per item.

    **Items** are a list (an upstream task's output: ``items=changed_documents.output``) or the URI of a
    JSONL file, as for :class:`~airflow_openrouter.operators.batch.OpenRouterBatchOperator`. ``text`` is
    a Jinja template (inline, or a ``.j2`` file) rendered once per item with ``item``, ``index``,
    ``prompt_vars`` and the task context in scope, sandboxed, with StrictUndefined; an item's own text is
    data and is never rendered. Every item is rendered before anything is sent; an empty text fails the
    task then, naming the item.

    **Engines.** ``engine="batch"`` (default) submits one Batch API line per item to ``/v1/embeddings``
    (about half price; minutes to hours), waits in the triggerer when ``deferrable``, and re-attaches on
    a retry without paying twice, like the batch operator. ``engine="concurrent"`` sends ordinary
    embeddings requests from the worker, each carrying up to ``max_inputs_per_request`` items and about
    ``max_tokens_per_request`` estimated tokens, ``max_concurrency`` requests at a time; rows are saved
    as they arrive, so a retry sends only the items not answered yet. Use it for models without a batch
    variant (e.g. ``qwen/qwen3-embedding-8b``) or when minutes matter.

    **Results.** ``output_path`` gets one row per item: ``custom_id``, ``id``, ``index``, ``status``,
    ``vector``, ``model``, ``dimensions``, ``error``, ``cause``, ``transient``, ``usage``. It is Parquet
    (``vector`` a fixed-size list of float32) when ``pyarrow`` is installed (``pip install
    'airflow-openrouter[parquet]'``) and ``output_path`` does not end in ``.jsonl``; JSONL otherwise.
    XCom ``return_value`` is the batch operator's manifest plus ``dimensions``. The task fails, after
    writing both, as the batch operator's does.

    **Result cache.** With ``result_cache`` (or ``[openrouter] result_cache``), an item whose input was
    embedded before -- the same model, text, ``dimensions``, encoding and request fields, whatever its
    id -- is not sent again, on either engine: its vector comes from the cache and its row is written
    like a fresh one, with ``cached`` true, ``usage.cost`` 0 and ``usage.cost_saved``; the manifest's
    ``cached`` and ``cost_saved_usd`` count them. A nightly run over a corpus then pays only for the
    documents that changed.

    :param items: a list of items, or the URI / ``ObjectStoragePath`` of a JSONL file (templated).
    :param text: the template of the text to embed (``{{ item.body }}``, ``{{ item.title }}: ...``).
    :param model: an embedding model id (templated), e.g. ``openai/text-embedding-3-small``
        (``OpenRouterHook().list_embedding_models()`` lists them).
    :param dimensions: shorter vectors, for the models that support it (``text-embedding-3-*``).
    :param id_field: the item field whose value keys the rows (default: the item's index).
    :param output_path: a directory, or a file ending in ``.parquet`` or ``.jsonl`` (templated).
        Default: ``[openrouter] results_path``.
    :param engine: ``"batch"`` or ``"concurrent"``, see above.
    :param max_inputs_per_request: concurrent engine: items in one request at most (1 to 2,048).
    :param max_tokens_per_request: concurrent engine: estimated tokens (UTF-8 bytes / 4) in one request
        at most; an item larger than that goes alone.
    :param user: a stable id of your end user, sent with every request.
    :param extra_body: more request fields (``input_type`` for the models that take it: concurrent
        engine only, as the Batch API refuses it).
    :param provider: provider routing (concurrent engine only: embeddings batches refuse it).
    :param result_cache: an ObjectStoragePath URI under which vectors are cached by input (default:
        ``[openrouter] result_cache``; ``False``: none), see above.
    :param result_cache_ttl: how old a cached vector may be (seconds or timedelta; default: any age).

    ``prompt_vars``, ``wait_for_completion``, ``deferrable``, ``poll_interval``, ``timeout``,
    ``max_failed_fraction``, ``max_cost_usd``, ``dry_run``, ``max_concurrency``, ``requests_per_minute``
    and ``openrouter_conn_id`` are the batch operator's. Every argument is checked when the DAG is parsed.
    """

    prompt_fields: ClassVar[tuple[str, ...]] = ("text",)
    request_params: ClassVar[tuple[str, ...]] = EMBEDDING_PARAMS
    ui_color = "#b2dfdb"

    def __init__(
        self,
        *,
        items: Any,
        text: str,
        model: str,
        dimensions: int | None = None,
        id_field: str | None = None,
        engine: Engine = "batch",
        max_inputs_per_request: int = 256,
        max_tokens_per_request: int = 100_000,
        **kwargs: Any,
    ) -> None:
        arguments = {
            "dimensions": dimensions,
            "engine": engine,
            "max_inputs_per_request": max_inputs_per_request,
            "max_tokens_per_request": max_tokens_per_request,
            **kwargs,
        }
        self._check_embedding_arguments(arguments, task_id=kwargs.get("task_id"))
        super().__init__(items=items, prompt=text, model=model, id_field=id_field, engine=engine, **kwargs)
        self.dimensions = dimensions
        self.max_inputs_per_request = max_inputs_per_request
        self.max_tokens_per_request = max_tokens_per_request

    # The batch operator's name for the per-item template; here it is the text to embed.
    @property
    def prompt(self) -> Any:
        return self.text

    @prompt.setter
    def prompt(self, value: Any) -> None:
        self.text = value

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        cls._check_embedding_arguments(kwargs, task_id=kwargs.get("task_id"))
        return super().partial(**kwargs)

    @classmethod
    def _check_embedding_arguments(cls, arguments: Mapping[str, Any], *, task_id: str | None) -> None:
        """What only embeddings check (the rest: ``check_static_arguments``). *arguments* are all the
        static ones: a missing ``engine`` is the default, ``"batch"``."""
        where = f"Task {task_id!r}" if task_id else "An OpenRouter embedding task"
        chat_only = [
            n
            for n in (*SHARED_PARAMS, "prompt", "system_prompt", "response_format")
            if n not in cls.request_params
        ]
        for name in chat_only:
            if arguments.get(name) is not None:
                raise config_error(
                    where, name, "left out: it is not a parameter of embeddings", arguments[name]
                )
        dimensions = arguments.get("dimensions")
        if dimensions is not None and not (_is_int(dimensions) and dimensions >= 1):
            raise config_error(
                where, "dimensions", "a positive integer (or None: the model's size)", dimensions
            )
        if not _is_int(count := arguments.get("max_inputs_per_request", 1)) or not (
            1 <= count <= _MAX_INPUTS_PER_REQUEST
        ):
            raise config_error(
                where, "max_inputs_per_request", f"an integer from 1 to {_MAX_INPUTS_PER_REQUEST}", count
            )
        if not _is_int(budget := arguments.get("max_tokens_per_request", 1)) or budget < 1:
            raise config_error(where, "max_tokens_per_request", "an integer of at least 1", budget)
        if arguments.get("engine", "batch") == "batch":
            extra = arguments.get("extra_body")
            given = {"provider": arguments.get("provider"), **(extra if isinstance(extra, Mapping) else {})}
            for name in _NOT_IN_BATCHES:
                if given.get(name) is not None:
                    raise config_error(
                        where,
                        name,
                        "left out with engine='batch': embeddings batches refuse it (use engine='concurrent')",
                        given[name],
                    )

    def _check_templated_arguments(self, *, rendered: bool) -> None:
        super()._check_templated_arguments(rendered=rendered)
        if self.model is None or (rendered and not self.model.strip()):
            raise config_error(
                f"Task {self.task_id!r}",
                "model",
                "an embedding model id such as 'openai/text-embedding-3-small'",
                self.model,
            )
        if not isinstance(self.text, str) and not is_resolvable(self.text):
            raise config_error(f"Task {self.task_id!r}", "text", "a template string", self.text)

    # --- what differs from the chat batch operator ----------------------------------------------

    def _endpoint(self) -> Endpoint:
        from airflow_openrouter.batch.embeddings import EmbeddingsEndpoint

        return EmbeddingsEndpoint(self.max_inputs_per_request, self.max_tokens_per_request)

    def _request_builder(self, context: Context) -> RequestBuilder:
        from airflow_openrouter.batch.embeddings import TextRequestBuilder
        from airflow_openrouter.prompts import PromptTemplate

        text = PromptTemplate.load(
            self.text, self.get_template_env(), field="text", extensions=self.template_ext
        )
        return TextRequestBuilder(
            prompt=text,
            system_prompt=None,
            variables={**context, **self._prompt_vars()},
            params={"dimensions": self.dimensions, **self._request_fields()},
        )

    def _results_suffix(self, output_path: str) -> str:
        """``.parquet`` when pyarrow is installed, unless *output_path* names a ``.jsonl`` file."""
        from airflow_openrouter.batch.vectors import parquet_available
        from airflow_openrouter.exceptions import OpenRouterConfigError

        if output_path.endswith(".jsonl"):
            return ".jsonl"
        if parquet_available():
            return ".parquet"
        if output_path.endswith(".parquet"):
            raise OpenRouterConfigError(
                f"Task {self.task_id!r}: output_path {output_path!r} is a Parquet file, but pyarrow is not "
                "installed on this worker: pip install 'airflow-openrouter[parquet]', or pass an output_path "
                "ending in .jsonl. Nothing was sent."
            )
        if not getattr(self, "_said_jsonl", False):
            self._said_jsonl = True
            self.log.info(
                "pyarrow is not installed: writing the vectors as JSONL (pip install "
                "'airflow-openrouter[parquet]' for Parquet)."
            )
        return ".jsonl"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
