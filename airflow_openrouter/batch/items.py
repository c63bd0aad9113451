"""Items in, one chat request per item out.

Items come from a list (usually an upstream task's XCom) or, for inputs too large for XCom, from a
JSONL file named by a URI or an ``ObjectStoragePath``; a file is read line by line, never whole.

Each item gets a ``custom_id`` (the value of ``id_field``, else its index) and a request body: the
prompt templates rendered once with ``item`` and ``index`` in scope. Rendering goes through
:mod:`airflow_openrouter.prompts` (sandboxed, StrictUndefined): the item is a variable, so its text
reaches the model literally and is never rendered as a template itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_openrouter.batch.ids import ItemIds
from airflow_openrouter.exceptions import BatchInputError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_openrouter.prompts import PromptTemplate

MAX_CUSTOM_ID_LENGTH = 64  # OpenRouter's limit on a batch request's custom_id


def iter_items(items: Any) -> Iterator[Any]:
    """Every item, in order: from a list, or streamed from a JSONL file (URI or ``ObjectStoragePath``)."""
    if items is None:
        return iter(())
    # Any sequence: a list from XCom, or the lazy sequence Airflow hands over for a mapped upstream.
    if isinstance(items, Sequence) and not isinstance(items, (str, bytes)):
        return iter(items)
    path = _jsonl_path(items)
    if path is None:
        raise BatchInputError(
            f"items must be a list or the URI of a JSONL file, got {type(items).__name__} {items!r:.80}. "
            "A templated string renders to text: pass the upstream output itself (items=task.output), "
            "or a URI such as 's3://bucket/items.jsonl'."
        )
    return _read_jsonl(path)


def _jsonl_path(items: Any) -> ObjectStoragePath | None:
    from airflow.sdk import ObjectStoragePath

    if isinstance(items, ObjectStoragePath):
        return items
    if isinstance(items, str) and "://" in items:
        return ObjectStoragePath(items)
    return None


def _read_jsonl(path: ObjectStoragePath) -> Iterator[Any]:
    with path.open("r", encoding="utf-8") as lines:
        index = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchInputError(
                    f"Item {index} (line {number} of {path}) is not valid JSON: {exc.msg}."
                ) from None
            index += 1


def custom_id_of(item: Any, index: int, id_field: str | None, max_length: int | None = None) -> str:
    """The item's ``custom_id``: the value of *id_field* (a string, or an integer made a string),
    else the index; at most *max_length* characters."""
    if id_field is None:
        return str(index)
    if not isinstance(item, Mapping):
        raise BatchInputError(
            f"Item {index} is a {type(item).__name__}, not a dict: id_field={id_field!r} needs every item to "
            "be a dict with that field (or leave id_field unset to key the rows by index)."
        )
    if id_field not in item:
        raise BatchInputError(f"Item {index} has no field {id_field!r} (id_field); every item needs one.")
    value = item[id_field]
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise BatchInputError(
            f"Item {index}: {id_field!r} must be a non-empty string or an integer, got {value!r:.80}."
        )
    custom_id = str(value)
    if max_length is not None and len(custom_id) > max_length:
        raise BatchInputError(
            f"Item {index}: {id_field!r} is {len(custom_id)} characters long; the Batch API takes custom ids "
            f"of at most {MAX_CUSTOM_ID_LENGTH} characters, {MAX_CUSTOM_ID_LENGTH - max_length} of which "
            f"carry the run tag (see the results docs), leaving {max_length}. Use a shorter id_field, or "
            "engine='concurrent'."
        )
    return custom_id


def index_custom_ids(items: Any, id_field: str | None, max_length: int | None = None) -> ItemIds:
    """The :class:`~.ids.ItemIds` of every item, checking that the custom ids are valid and unique."""

    def custom_ids() -> Iterator[str]:
        for index, item in enumerate(iter_items(items)):
            yield custom_id_of(item, index, id_field, max_length)

    ids = ItemIds(id_field=id_field)
    for index, item in enumerate(iter_items(items)):
        custom_id = custom_id_of(item, index, id_field, max_length)
        ids.add(custom_id, int_id=id_field is not None and isinstance(item[id_field], int))
    ids.seal(custom_ids)
    return ids


_RUN_TAG = re.compile(r"~[0-9a-f]{10}$")


def item_custom_id(batch_custom_id: str) -> str:
    """The item's custom id in a Batch API result row: the operator submits ``{custom_id}~{run tag}``
    (the tag proves which task run a batch belongs to); this strips the tag. For reading results with
    ``OpenRouterHook.iter_batch_results`` after an ``OpenRouterBatchSensor``."""
    return _RUN_TAG.sub("", batch_custom_id)


@dataclass(frozen=True)
class ItemRequest:
    """The request for one item, as a batch line: ``{"custom_id": ..., "body": {...}}``."""

    index: int
    custom_id: str
    body: dict[str, Any]

    def line(self) -> dict[str, Any]:
        return {"custom_id": self.custom_id, "body": self.body}


@dataclass
class RequestBuilder:
    """Renders the request of one item: the chat body the chat operator would send, without ``model``
    (a batch names its model once; the concurrent engine passes it per call).

    :param prompt: the compiled user prompt.
    :param system_prompt: the compiled system prompt, if any.
    :param variables: what the templates see besides ``item`` and ``index``: the task context and
        ``prompt_vars``.
    :param params: the other body fields (``max_tokens``, ``response_format``, ...); ``None`` values
        are left out.
    """

    prompt: PromptTemplate
    system_prompt: PromptTemplate | None
    variables: Mapping[str, Any]
    params: Mapping[str, Any]

    def build(self, item: Any, index: int, custom_id: str) -> ItemRequest:
        from airflow_openrouter.hooks.openrouter import chat_body
        from airflow_openrouter.prompts import PromptRenderError, build_messages

        try:
            system = (
                self.system_prompt.render(self.variables, item=item, index=index)
                if self.system_prompt
                else None
            )
            prompt = self.prompt.render(self.variables, item=item, index=index)
        except PromptRenderError as exc:
            raise exc.with_context(f"Item {index} (custom_id {custom_id!r})") from exc.__cause__
        messages = build_messages(prompt=prompt, system_prompt=system)
        body = chat_body(messages, None, self.params)
        check_body(body, index, custom_id)
        return ItemRequest(index, custom_id, body)

    def requests(self, items: Any, id_field: str | None) -> Iterator[ItemRequest]:
        """The request of every item, in order; raises on the first item that cannot be rendered."""
        for index, item in enumerate(iter_items(items)):
            _check_serialisable(item, index)
            yield self.build(item, index, custom_id_of(item, index, id_field))


def check_body(body: Mapping[str, Any], index: int, custom_id: str) -> None:
    """Check a rendered request body against the request-parameter rules before anything is submitted.

    The operators check their arguments when the DAG is parsed and after rendering; this is the last
    look at what is really sent, since a mistyped field costs a whole batch: OpenRouter accepts it and
    then fails the batch as a whole.
    """
    from airflow_openrouter._params import check_request_params

    check_request_params(body, where=f"Item {index} (custom_id {custom_id!r}): nothing was sent; the request")


def _check_serialisable(item: Any, index: int) -> None:
    # Items reach templates, the fingerprint and (for the concurrent engine) retries: they must be JSON.
    try:
        json.dumps(item)
    except (TypeError, ValueError) as exc:
        raise BatchInputError(
            f"Item {index} is not JSON-serialisable ({exc}); items must be JSON values (dicts, lists, "
            "strings, numbers)."
        ) from None
