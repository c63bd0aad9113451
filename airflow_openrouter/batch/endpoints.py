"""What differs between the endpoints a bulk job can run (chat completions, embeddings), behind one protocol.

The engines (:mod:`.batch_api`, :mod:`.concurrent`) and :mod:`.submit` ask the job's :class:`Endpoint`
(``JobOptions.endpoint``) only these questions; everything else -- the spool and its fingerprint, the
record that never pays twice, the run tag that proves a lost POST's batch, the failure classification,
the checkpoint and the manifest -- is the same for every endpoint:

* **Batch API**: the ``endpoint`` string of ``POST /batches`` (:attr:`~Endpoint.path`), the
  ``provider`` field of the POST, how one result line becomes a row, and what to say when the Batch API
  refuses a batch (which catalogue lists the model ids, which requests batches take). The limits of one
  batch (5,000 requests, 200 MB: :mod:`.spool`) are the Batch API's for every endpoint;
* **concurrent**: how the spooled request lines become requests (a chat request carries one item, an
  embeddings request many: :class:`ConcurrentRequest`), how one is sent, and how its answer becomes one
  row per item, however many items shared it;
* **rows out**: the results writer (JSONL for chat; Parquet or JSONL for vectors).

The request lines themselves are built by ``JobOptions.requests`` (an :class:`~.items.RequestBuilder`),
one per item, before anything is sent. :data:`CHAT` is the chat endpoint, the default of every job; the
embeddings endpoint is :class:`~.embeddings.EmbeddingsEndpoint`. No Airflow imports here.

**The result cache** (:mod:`.cached`) asks the endpoint three questions, the same in both engines:
the key of a spooled request body (:meth:`Endpoint.cache_keys`: what the answer is a function of, in a
key of the endpoint's own kind, so a chat key never equals an embeddings key), what to keep of a
``succeeded`` row (:meth:`Endpoint.cache_entry`), and the row a kept entry becomes
(:meth:`Endpoint.row_from_cache`: ``cached: true``, cost 0, ``usage.cost_saved``), which the endpoint's
writer writes like a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from airflow_openrouter._transport.calls import CHAT_ENDPOINT

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.ids import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.progress import Progress
    from airflow_openrouter.batch.results import ResultsWriter
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import BatchResult, Model

__all__ = ["CHAT", "ChatEndpoint", "ConcurrentRequest", "Endpoint"]


@dataclass(frozen=True)
class ConcurrentRequest:
    """One request of the concurrent engine and the items it carries (their custom ids, in input order).

    :param body: the keyword arguments of the endpoint's :meth:`Endpoint.send`, model included.
    """

    custom_ids: tuple[str, ...]
    body: Mapping[str, Any]

    @property
    def key(self) -> str:
        """What the engine calls the request by: its first item's custom id (an item is in one request)."""
        return self.custom_ids[0]


class Endpoint(Protocol):
    """The endpoint-specific part of a bulk job (see the module docstring). Implementations are
    stateless or frozen: one instance serves every try, on any worker."""

    #: ``endpoint`` of ``POST /batches``: ``"/v1/chat/completions"``, ``"/v1/embeddings"``.
    path: ClassVar[str]
    #: The route that lists this endpoint's model ids (named in the advice when a model is unknown).
    model_catalogue: ClassVar[str]
    #: What a batch of this endpoint may hold, said when the Batch API refuses one.
    batch_advice: ClassVar[str]
    #: Whether its request bodies take OpenRouter ``metadata`` (the attribution's, see
    #: :mod:`airflow_openrouter.cost.attribution`); ``user`` and ``session_id`` every endpoint takes.
    takes_metadata: ClassVar[bool]

    def batch_provider(self, job: JobOptions) -> Mapping[str, Any] | None:
        """The ``provider`` field of ``POST /batches``."""
        ...

    def models(self, hook: OpenRouterHook) -> list[Model]:
        """The models this endpoint serves, with their prices (one request): for the estimate, and to
        name the closest ids to an unknown one."""
        ...

    def row_from_batch_result(
        self, job: JobOptions, result: BatchResult, custom_id: str, index: int
    ) -> dict[str, Any]:
        """The row of one line of a finished batch (*custom_id*: the item's, without the run tag)."""
        ...

    def concurrent_requests(
        self, job: JobOptions, lines: Iterable[dict[str, Any]]
    ) -> Iterator[ConcurrentRequest]:
        """The requests that carry the spooled request *lines* (``{"custom_id", "body"}``, in item
        order), lazily: the engine pulls one only when it can start it."""
        ...

    async def send(self, hook: OpenRouterHook, body: Mapping[str, Any]) -> Any:
        """Send one request; returns its answer (with ``usage.cost``), raises ``OpenRouterError``."""
        ...

    def rows_from_answer(
        self, job: JobOptions, request: ConcurrentRequest, indexes: Sequence[int], answer: Any
    ) -> list[dict[str, Any]]:
        """One row per item of *request* (``indexes``: theirs, in the same order) from its answer."""
        ...

    def writer(
        self,
        path: ObjectStoragePath,
        ids: ItemIds,
        on_written: Callable[[dict[str, Any]], None] | None = None,
        progress: Progress | None = None,
    ) -> ResultsWriter:
        """The writer of the results file at *path*; *on_written* sees every row written, *progress*
        counts it."""
        ...

    def cache_keys(self, job: JobOptions) -> Callable[[Mapping[str, Any]], bytes]:
        """The result cache's key of one spooled request body of *job* (16 bytes): everything its
        answer is a function of, never who asked (see :mod:`airflow_openrouter.cache.keys`)."""
        ...

    def cache_entry(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """What the result cache keeps of a ``succeeded`` row: its answer, not which item or run it was."""
        ...

    def row_from_cache(self, entry: Mapping[str, Any], custom_id: str, index: int) -> dict[str, Any]:
        """The row of an item answered by a kept *entry* (``succeeded``, ``cached: true``, cost 0 and
        ``usage.cost_saved``)."""
        ...


class ChatEndpoint:
    """Chat completions: one rendered chat request per item, one validated output per row (JSONL)."""

    path: ClassVar[str] = CHAT_ENDPOINT
    model_catalogue: ClassVar[str] = "/models"
    takes_metadata: ClassVar[bool] = True
    batch_advice: ClassVar[str] = (
        "Batches take text-only chat requests to models with a batch variant; for other models or "
        "multimodal items use engine='concurrent'."
    )

    def batch_provider(self, job: JobOptions) -> Mapping[str, Any] | None:
        return job.provider

    def models(self, hook: OpenRouterHook) -> list[Model]:
        return hook.list_models()

    def row_from_batch_result(
        self, job: JobOptions, result: BatchResult, custom_id: str, index: int
    ) -> dict[str, Any]:
        from airflow_openrouter.batch.results import row_from_batch_result

        return row_from_batch_result(result, custom_id, index, job.spec)

    def concurrent_requests(
        self, job: JobOptions, lines: Iterable[dict[str, Any]]
    ) -> Iterator[ConcurrentRequest]:
        from airflow_openrouter.schemas import provider_preferences

        provider = provider_preferences(job.spec, job.provider)
        for line in lines:
            yield ConcurrentRequest(
                (line["custom_id"],), {**line["body"], "model": job.model, "provider": provider}
            )

    async def send(self, hook: OpenRouterHook, body: Mapping[str, Any]) -> Any:
        return await hook.achat_completion(**body)

    def rows_from_answer(
        self, job: JobOptions, request: ConcurrentRequest, indexes: Sequence[int], answer: Any
    ) -> list[dict[str, Any]]:
        from airflow_openrouter.batch.results import row_from_completion

        return [row_from_completion(request.key, indexes[0], answer, job.spec)]

    def writer(
        self,
        path: ObjectStoragePath,
        ids: ItemIds,
        on_written: Callable[[dict[str, Any]], None] | None = None,
        progress: Progress | None = None,
    ) -> ResultsWriter:
        from airflow_openrouter.batch.results import ResultsWriter

        return ResultsWriter(path, ids, on_written, progress)

    def cache_keys(self, job: JobOptions) -> Callable[[Mapping[str, Any]], bytes]:
        from airflow_openrouter.cache import ChatKeys

        # A bulk row is answered once and never repaired: its key says so (a chat task with
        # max_repair_attempts=0 shares its entries).
        return ChatKeys(model=job.model, provider=job.provider, spec=job.spec, max_repair_attempts=0).key

    def cache_entry(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "status": "succeeded",
            "output": row.get("output"),
            "provider": row.get("provider"),
            "model": row.get("model"),
            "generation_id": row.get("generation_id"),
            "usage": row.get("usage"),
        }

    def row_from_cache(self, entry: Mapping[str, Any], custom_id: str, index: int) -> dict[str, Any]:
        from airflow_openrouter.batch.results import result_row
        from airflow_openrouter.cost.ledger import cached_row_usage

        return result_row(
            custom_id,
            index,
            "succeeded",
            output=entry.get("output"),
            provider=entry.get("provider"),
            usage=cached_row_usage(entry.get("usage")),
            model=entry.get("model"),
            generation_id=entry.get("generation_id"),
            cached=True,
        )


#: The chat endpoint: what every job runs unless its options name another.
CHAT: Endpoint = ChatEndpoint()
