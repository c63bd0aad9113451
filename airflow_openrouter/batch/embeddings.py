"""The embeddings endpoint of the bulk engines: one text per item, one vector per row.

**Requests.** The ``text`` template is rendered once per item (sandboxed, StrictUndefined; the item is a
variable, so its text is embedded literally and never rendered itself); an item whose text renders empty
fails the task before anything is sent. Each item's request line is ``{"input": text, "dimensions"?,
"encoding_format": "base64", ...}``: a Batch API line as it is (model and endpoint are named once per
batch), and the unit the fingerprint, the record and the run tag work with, exactly as for chat.

**Concurrent requests carry many inputs.** Lines are grouped, in item order, into requests of at most
``max_inputs_per_request`` inputs (OpenRouter takes 2,048) and about ``max_tokens_per_request``
estimated tokens (an estimate: UTF-8 bytes / 4; an input larger than the budget goes alone). Every item
still gets its own row. When OpenRouter refuses a request of several inputs with a 400 that is not about
the key or the model, the request is split in halves, and the halves again, so that only the inputs
that are refused on their own fail (an input longer than the model's context, say); when *both* halves
of a request are refused with the same message, the refusal is not one input's, and it stops the run
like any error that repeats for every item.

**Rows** (:mod:`.vectors` writes them, Parquet or JSONL)::

    {"custom_id": "doc-7", "id": "doc-7", "index": 7, "status": "succeeded", "vector": "<base64>",
     "model": "openai/text-embedding-3-small", "dimensions": 1536, "error": null, "cause": null,
     "transient": null, "cached": false, "usage": {"prompt_tokens": 412, "cost": 0.00000824}}

Between the engines and the writer (and in the concurrent engine's checkpoint) ``vector`` stays what the
wire carried: the base64 of the little-endian float32 values. The writer decodes it once, straight into
the Parquet column (or into JSON numbers), so no vector is ever a list of Python floats on the way.

``usage`` of a row that shared a request is its share of that request's usage, in proportion to its
estimated tokens: the rows add up to exactly the tokens, and to the cost, that OpenRouter billed.

**The result cache** (``result_cache=``, :mod:`.cached`) keys each item by the model, the provider
routing asked for and the item's own request line (``input``, ``dimensions``, ``encoding_format``,
``extra_body`` fields: :func:`~airflow_openrouter.cache.embeddings_key_material`), never by its id or
who asked; a key of the ``embeddings`` kind never equals a chat key. It keeps the vector as the wire
carried it (base64 float32: about 8 KB for 1,536 dimensions), the model and the usage; a cached row is
the fresh row with ``cached: true``, cost 0 and ``usage.cost_saved``, written by the same writer.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_openrouter._transport.calls import EMBEDDINGS_ENDPOINT, embeddings_body
from airflow_openrouter.batch.endpoints import ConcurrentRequest
from airflow_openrouter.batch.items import ItemRequest, RequestBuilder
from airflow_openrouter.exceptions import BatchInputError, OpenRouterBadRequestError
from airflow_openrouter.types import Usage

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.batch.ids import ItemIds
    from airflow_openrouter.batch.options import JobOptions
    from airflow_openrouter.batch.progress import Progress
    from airflow_openrouter.batch.results import ResultsWriter
    from airflow_openrouter.exceptions import OpenRouterAPIError
    from airflow_openrouter.hooks.openrouter import OpenRouterHook
    from airflow_openrouter.types import BatchResult, EmbeddingsResponse, Model

__all__ = [
    "MAX_INPUTS_PER_REQUEST",
    "EmbeddingsEndpoint",
    "TextRequestBuilder",
    "VectorAnswer",
    "decode_vector",
    "encode_vector",
    "estimated_tokens",
    "vector_row",
]

MAX_INPUTS_PER_REQUEST = 2048  # OpenRouter's (and OpenAI's) limit on inputs in one embeddings request
_FLOAT32_BYTES = 4


def estimated_tokens(text: str) -> int:
    """What a text is likely to cost in tokens before it is sent: UTF-8 bytes / 4, rounded up (about
    right for English; more generous than characters / 4 for other scripts)."""
    return -(-len(text.encode("utf-8")) // 4)


@dataclass
class TextRequestBuilder(RequestBuilder):
    """Renders the text of one item into its embeddings request line (``prompt`` is the ``text``
    template; ``system_prompt`` is unused). ``params``: ``dimensions``, ``user``, ``extra_body``..."""

    def build(self, item: Any, index: int, custom_id: str) -> ItemRequest:
        from airflow_openrouter.prompts import PromptRenderError

        where = f"Item {index} (custom_id {custom_id!r})"
        try:
            text = self.prompt.render(self.variables, item=item, index=index)
        except PromptRenderError as exc:
            raise exc.with_context(where) from exc.__cause__
        if not text:
            raise BatchInputError(
                f"{where}: the text to embed rendered empty, and OpenRouter refuses empty inputs. Leave such "
                "items out upstream, or change the text template. Nothing was sent."
            )
        return ItemRequest(index, custom_id, embeddings_body(None, text, self.params))


@dataclass(frozen=True)
class Embedded:
    """One input's vector (base64 float32, as on the wire) and its share of the billed usage."""

    vector: str
    model: str
    prompt_tokens: int
    cost: float


@dataclass(frozen=True)
class VectorAnswer:
    """The answer to one concurrent request: per input, its vector, or the error OpenRouter gave when
    the input was sent on its own (see the module docstring)."""

    results: Sequence[Embedded | OpenRouterAPIError]

    @property
    def usage(self) -> Usage:
        """What the request (and its halves) were billed, summed; read against ``max_cost_usd``."""
        embedded = [r for r in self.results if isinstance(r, Embedded)]
        return Usage(prompt_tokens=sum(r.prompt_tokens for r in embedded), cost=sum(r.cost for r in embedded))


class RefusedForEveryInput(OpenRouterBadRequestError):
    """A 400 that both halves of a request's inputs got alike, and each input of the first half on its
    own: not one input's fault, so it would come back for every request of the run (a ``dimensions``
    the model cannot return, a chat model...)."""

    @property
    def systemic(self) -> bool:  # type: ignore[override]
        return True


@dataclass(frozen=True)
class EmbeddingsEndpoint:
    """``/v1/embeddings`` for the engines (see :class:`~.endpoints.Endpoint` and the module docstring).

    :param max_inputs_per_request: concurrent engine: inputs in one request at most (1 to 2,048).
    :param max_tokens_per_request: concurrent engine: estimated tokens in one request at most.
    """

    max_inputs_per_request: int = 256
    max_tokens_per_request: int = 100_000

    path: ClassVar[str] = EMBEDDINGS_ENDPOINT
    model_catalogue: ClassVar[str] = "/embeddings/models"
    # The embeddings request (the official SDK's CreateEmbeddingsRequestBody) has user and session_id,
    # no metadata.
    takes_metadata: ClassVar[bool] = False
    batch_advice: ClassVar[str] = (
        "Embeddings batches take text inputs for embedding models with a batch variant (without provider "
        "or input_type); for other models use engine='concurrent'."
    )

    # --- the Batch API -------------------------------------------------------------------------

    def batch_provider(self, job: JobOptions) -> Mapping[str, Any] | None:
        return None  # embeddings batches refuse `provider` (the operator says so when the DAG is parsed)

    def models(self, hook: OpenRouterHook) -> list[Model]:
        return hook.list_embedding_models()

    def row_from_batch_result(
        self, job: JobOptions, result: BatchResult, custom_id: str, index: int
    ) -> dict[str, Any]:
        from airflow_openrouter.batch.results import result_row, row_from_failed_batch_result

        response = result.embeddings() if result.error is None else None
        if response is None:
            return row_from_failed_batch_result(result, custom_id, index)
        if len(response.data) != 1 or not response.data[0].embedding:
            error = (
                f"The batch row holds {sum(bool(d.embedding) for d in response.data)} vectors for 1 input."
            )
            return result_row(custom_id, index, "failed", error=error, cause="provider error", transient=True)
        usage = response.usage or Usage()
        return vector_row(
            custom_id,
            index,
            response.data[0].embedding,
            response.model,
            usage.prompt_tokens,
            usage.cost or 0.0,
        )

    # --- the concurrent engine -----------------------------------------------------------------

    def concurrent_requests(
        self, job: JobOptions, lines: Iterable[dict[str, Any]]
    ) -> Iterator[ConcurrentRequest]:
        custom_ids: list[str] = []
        inputs: list[str] = []
        tokens = 0
        body: Mapping[str, Any] = {}
        for line in lines:
            text = line["body"]["input"]
            cost = estimated_tokens(text)
            full = len(inputs) >= self.max_inputs_per_request or tokens + cost > self.max_tokens_per_request
            if inputs and full:
                yield self._request(job, body, custom_ids, inputs)
                custom_ids, inputs, tokens = [], [], 0
            body = line["body"]  # every line has the same fields but ``input``
            custom_ids.append(line["custom_id"])
            inputs.append(text)
            tokens += cost
        if inputs:
            yield self._request(job, body, custom_ids, inputs)

    @staticmethod
    def _request(
        job: JobOptions, body: Mapping[str, Any], custom_ids: list[str], inputs: list[str]
    ) -> ConcurrentRequest:
        provider = {"provider": job.provider} if job.provider is not None else {}
        return ConcurrentRequest(tuple(custom_ids), {**body, **provider, "model": job.model, "input": inputs})

    async def send(self, hook: OpenRouterHook, body: Mapping[str, Any]) -> VectorAnswer:
        inputs = list(body["input"])
        try:
            return VectorAnswer(_embedded(await hook.aembed(**body), inputs))
        except OpenRouterBadRequestError as error:
            if error.systemic or len(inputs) == 1:
                raise
            return VectorAnswer(await _halves(hook, body, inputs, top=True))

    def rows_from_answer(
        self, job: JobOptions, request: ConcurrentRequest, indexes: Sequence[int], answer: VectorAnswer
    ) -> list[dict[str, Any]]:
        from airflow_openrouter.batch.results import row_from_error

        rows = []
        for custom_id, index, result in zip(request.custom_ids, indexes, answer.results, strict=True):
            if isinstance(result, Embedded):
                rows.append(
                    vector_row(
                        custom_id, index, result.vector, result.model, result.prompt_tokens, result.cost
                    )
                )
            else:
                rows.append(row_from_error(custom_id, index, result))
        return rows

    # --- rows out, and the result cache --------------------------------------------------------

    def writer(
        self,
        path: ObjectStoragePath,
        ids: ItemIds,
        on_written: Callable[[dict[str, Any]], None] | None = None,
        progress: Progress | None = None,
    ) -> ResultsWriter:
        from airflow_openrouter.batch.vectors import vector_writer

        return vector_writer(path, ids, on_written, progress)

    def cache_keys(self, job: JobOptions) -> Callable[[Mapping[str, Any]], bytes]:
        from airflow_openrouter.cache import cache_key, embeddings_key_material

        model, provider = job.model, job.provider

        def key(body: Mapping[str, Any]) -> bytes:
            return cache_key(embeddings_key_material(model=model, body=body, provider=provider))

        return key

    def cache_entry(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "status": "succeeded",
            "vector": row["vector"],
            "model": row.get("model"),
            "usage": row.get("usage"),
        }

    def row_from_cache(self, entry: Mapping[str, Any], custom_id: str, index: int) -> dict[str, Any]:
        from airflow_openrouter.cost.ledger import cached_row_usage

        usage = cached_row_usage(entry.get("usage"))
        row = vector_row(
            custom_id, index, entry["vector"], entry.get("model"), usage.get("prompt_tokens") or 0, 0.0
        )
        row.update(cached=True, usage=usage)
        return row


def vector_row(
    custom_id: str,
    index: int,
    vector: str | list[float] | array[float],
    model: str | None,
    prompt_tokens: int,
    cost: float,
) -> dict[str, Any]:
    """The row of an embedded item (``id`` is filled in by the writer). *vector*: base64 float32 as
    OpenRouter sends it, or float values."""
    encoded = vector if isinstance(vector, str) else encode_vector(vector)
    return {
        "custom_id": custom_id,
        "id": None,
        "index": index,
        "status": "succeeded",
        "vector": encoded,
        "model": model or None,
        "dimensions": _float32_count(encoded),
        "error": None,
        "cause": None,
        "transient": None,
        "cached": False,
        "usage": {"prompt_tokens": prompt_tokens, "cost": cost},
    }


def encode_vector(values: Sequence[float] | array[float]) -> str:
    """Float values as base64 float32, little-endian (the wire's ``encoding_format="base64"``)."""
    floats = array("f", values)
    if sys.byteorder != "little":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode()


def decode_vector(encoded: str) -> bytes:
    """The little-endian float32 bytes of a base64 vector (``binascii``: several times faster than
    ``b64decode(validate=True)``; a malformed vector comes out with the wrong length, which the writer
    refuses)."""
    return binascii.a2b_base64(encoded)


def _float32_count(encoded: str) -> int:
    """How many float32 values a base64 vector holds, from its length alone."""
    padding = len(encoded) - len(encoded.rstrip("="))
    return (len(encoded) * 3 // 4 - padding) // _FLOAT32_BYTES


def _embedded(response: EmbeddingsResponse, inputs: Sequence[str]) -> list[Embedded]:
    """The vectors of one answer, each with its share of the answer's usage (see the module docstring)."""
    usage = response.usage or Usage()
    weights = [estimated_tokens(text) for text in inputs]
    tokens = _apportion(usage.prompt_tokens, weights)
    total_weight = sum(weights)
    cost = usage.cost or 0.0
    costs = [cost * w / total_weight for w in weights[:-1]]
    costs.append(cost - sum(costs))
    data = sorted(response.data, key=lambda item: item.index)
    vectors = [d.embedding if isinstance(d.embedding, str) else encode_vector(d.embedding) for d in data]
    return [Embedded(v, response.model, t, c) for v, t, c in zip(vectors, tokens, costs, strict=True)]


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """*total* in whole parts proportional to *weights*, adding up to *total* (largest remainders)."""
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: total * weights[i] % whole, reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


async def _halves(
    hook: OpenRouterHook, body: Mapping[str, Any], inputs: list[str], *, top: bool
) -> list[Embedded | OpenRouterAPIError]:
    """Send the two halves of a refused request, and the refused halves' halves, down to single inputs."""
    middle = len(inputs) // 2
    parts = (inputs[:middle], inputs[middle:])
    answers: list[list[Embedded] | OpenRouterBadRequestError] = []
    for part in parts:
        try:
            answers.append(_embedded(await hook.aembed(**{**body, "input": part}), part))
        except OpenRouterBadRequestError as error:
            if error.systemic:
                raise
            answers.append(error)
    refused = [a for a in answers if isinstance(a, OpenRouterBadRequestError)]
    first: list[Embedded | OpenRouterAPIError] | None = None
    if top and len(refused) == 2 and refused[0].message == refused[1].message:
        # Both halves refused alike: every input, or one bad input in each half? The first half, taken
        # down to single inputs, tells: the run stops only when none of its inputs is accepted.
        first = await _halves(hook, body, parts[0], top=False) if len(parts[0]) > 1 else [refused[0]]
        if not any(isinstance(result, Embedded) for result in first):
            same = refused[0].with_message(
                f"{refused[0].message} (both halves of a request's inputs were refused alike, and each "
                "input of the first half on its own, so this is not caused by one input)"
            )
            same.__class__ = RefusedForEveryInput
            raise same
    results: list[Embedded | OpenRouterAPIError] = []
    for number, (part, answer) in enumerate(zip(parts, answers, strict=True)):
        if number == 0 and first is not None:
            results += first
        elif not isinstance(answer, OpenRouterBadRequestError):
            results += answer
        elif len(part) == 1:
            results.append(answer)
        else:
            results += await _halves(hook, body, part, top=False)
    return results
