"""OpenLineage for the chat and the batch operator: what a task read, what it wrote, and its LLM call.

The OpenLineage provider (``apache-airflow-providers-openlineage``, the ``openlineage`` extra) calls the
operators' ``get_openlineage_facets_on_start`` / ``..._on_complete`` on the worker; those import this
module, which imports OpenLineage. Nothing imports it when a DAG file is parsed, and without the
provider nothing calls it.

* **Inputs**: the items file of a batch task (``items`` given as a URI or an ``ObjectStoragePath``), and
  the task's ``inlets``. **Outputs**: the results file (with its row count), and the task's
  ``outlets``. A file is a dataset named as Airflow's ObjectStoragePath names it: namespace
  ``s3://bucket`` (no connection id), name the key; local files ``file`` and the absolute path.
* **The run facet** ``openRouter_llm`` (:class:`OpenRouterLlmRunFacet`; schema ``OpenRouterLlmRunFacet.json``
  beside this module): the engine, the model asked for and the model and provider that served it,
  batch or generation ids, item counts per status, tokens, the billed cost, and each prompt template's
  name and the SHA-256 of its text. **Never a prompt, an item or a completion.**
* What ran comes from the operator itself (the usage and the manifest it also pushes to XCom): the
  provider calls ``..._on_complete`` in a process forked from the task's, which must not talk to the
  API server (an XCom pull from there hangs until the provider gives up on the event).

Note that ``[openlineage] include_full_task_info = True`` makes the provider put *every* operator
attribute, prompts included, into its ``airflow`` run facet; the default does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.generated.base import InputDataset, OutputDataset, RunFacet

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = ["FACET_KEY", "OpenRouterLlmRunFacet", "batch_lineage", "chat_lineage", "prompt_templates"]

#: The run facet's key: OpenLineage's ``{prefix}_{name}`` rule for custom facets.
FACET_KEY = "openRouter_llm"


@attrs.define
class OpenRouterLlmRunFacet(RunFacet):
    """The LLM call of a task run (its JSON schema: ``OpenRouterLlmRunFacet.json`` beside this module).
    Field names are camelCase, as OpenLineage's own facets."""

    engine: str  # "chat", "batch" or "concurrent"
    requestedModel: str | None = None  # the task's model argument
    model: str | None = None  # as served
    provider: str | None = None  # as served (the most frequent one, for a bulk run)
    batchIds: list[str] = attrs.Factory(list)
    generationIds: list[str] = attrs.Factory(list)
    counts: dict[str, int] = attrs.Factory(dict)  # items per row status (the non-zero ones)
    promptTokens: int | None = None
    completionTokens: int | None = None
    costUsd: float | None = None  # billed
    promptTemplates: list[dict[str, Any]] = attrs.Factory(list)  # {field, name, sha256}


def chat_lineage(operator: Any) -> OperatorLineage:
    """The chat operator's lineage: once it ran, with what the call billed."""
    usage = _ran(operator, "_usage")
    facet = _facet(operator, "chat", usage, generation_ids=usage.get("generation_ids") or [])
    return _lineage(operator, facet, inputs=[], outputs=[])


def batch_lineage(operator: Any) -> OperatorLineage:
    """The batch operator's lineage: the items file in, the results file out, the run's counts and cost."""
    manifest = _ran(operator, "_manifest")
    batch_ids = manifest.get("batch_ids") or getattr(operator, "_batch_ids", None) or []
    facet = _facet(
        operator,
        manifest.get("engine") or operator.engine,
        manifest,
        batch_ids=list(batch_ids),
        counts=manifest.get("counts") or {},
        cost=manifest.get("cost_usd"),
    )
    items = operator.items
    inputs = [_file_dataset(InputDataset, items)] if _is_file(items) else []
    outputs = []
    if manifest.get("output_uri"):
        from openlineage.client.generated.output_statistics_output_dataset import (
            OutputStatisticsOutputDatasetFacet,
        )

        statistics = OutputStatisticsOutputDatasetFacet(rowCount=manifest.get("total"))
        outputs.append(_file_dataset(OutputDataset, manifest["output_uri"], outputStatistics=statistics))
    return _lineage(operator, facet, inputs=inputs, outputs=outputs)


# --- the run facet --------------------------------------------------------------------------------


def _facet(
    operator: Any,
    engine: str,
    ran: Mapping[str, Any],
    *,
    batch_ids: list[str] | None = None,
    generation_ids: list[str] | None = None,
    counts: Mapping[str, int] | None = None,
    cost: float | None = None,
) -> RunFacet:
    requested = operator.model if isinstance(operator.model, str) else None
    return OpenRouterLlmRunFacet(
        engine=engine,
        requestedModel=requested,
        model=ran.get("model") or requested,
        provider=ran.get("provider"),
        batchIds=batch_ids or [],
        generationIds=list(generation_ids or []),
        counts={status: n for status, n in (counts or {}).items() if n},
        promptTokens=ran.get("prompt_tokens"),
        completionTokens=ran.get("completion_tokens"),
        costUsd=cost if cost is not None else ran.get("cost"),
        promptTemplates=prompt_templates(operator),
    )


def prompt_templates(operator: Any) -> list[dict[str, Any]]:
    """``{field, name, sha256}`` of each prompt template of *operator*, as the DAG author wrote it.

    A file template is named by its path and hashed with the file's text; an inline one is named
    ``inline <field>`` and hashed with its text; a prompt from upstream (data, not a template) is named
    ``upstream <field>`` and not hashed. The chat operator renders its prompts in place, so it keeps
    what they were before rendering (``_prompt_sources``).
    """
    sources = getattr(operator, "_prompt_sources", None) or {
        field: getattr(operator, field, None) for field in operator.prompt_fields
    }
    described = []
    for field, source in sources.items():
        if source is None:
            continue
        name, text = _template_text(operator, field, source)
        sha256 = hashlib.sha256(text.encode()).hexdigest() if text is not None else None
        described.append({"field": field, "name": name, "sha256": sha256})
    return described


def _template_text(operator: Any, field: str, source: Any) -> tuple[str, str | None]:
    from airflow_openrouter._params import is_resolvable

    if isinstance(source, str):
        if not source.endswith(tuple(operator.template_ext)):
            return f"inline {field}", source
        try:
            env = operator.get_template_env()
            return source, env.loader.get_source(env, source)[0] if env.loader else None
        except Exception:  # the file moved since the task ran: name it, without a hash
            return source, None
    if is_resolvable(source):
        return f"upstream {field}", None
    # A messages list: its literal parts are the template; upstream parts are marked, not shown.
    return f"inline {field}", json.dumps(source, sort_keys=True, default=lambda _: "<upstream>")


# --- datasets -------------------------------------------------------------------------------------


def _lineage(operator: Any, facet: RunFacet, *, inputs: list[Any], outputs: list[Any]) -> OperatorLineage:
    return OperatorLineage(
        inputs=[*inputs, *_assets(operator.inlets)],
        outputs=[*outputs, *_assets(operator.outlets)],
        run_facets={FACET_KEY: facet},
    )


def _assets(objects: Iterable[Any]) -> list[Any]:
    """The task's inlets or outlets (Assets, files, tables) as OpenLineage datasets, as the provider
    converts them for tasks that report no lineage of their own."""
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    converted = (ExtractorManager.convert_to_ol_dataset(obj) for obj in objects or ())
    return [dataset for dataset in converted if dataset is not None]


def _is_file(items: Any) -> bool:
    from airflow.sdk import ObjectStoragePath

    return isinstance(items, ObjectStoragePath) or (isinstance(items, str) and "://" in items)


def _file_dataset(kind: type, location: str | ObjectStoragePath, **facets: Any) -> Any:
    """The dataset of a file: namespace ``{protocol}://{bucket}`` (``file`` for local files), name its
    key (an absolute path for local files)."""
    from airflow.sdk import ObjectStoragePath

    path = location if isinstance(location, ObjectStoragePath) else ObjectStoragePath(location)
    protocol, key = path.protocol, path.key
    bucket = path.bucket.rpartition("@")[2]  # Airflow 3.1 keeps "conn_id@" in the bucket
    if protocol == "file" or protocol == "local":
        namespace, name = "file", "/" + key.lstrip("/")
    else:
        namespace, name = (f"{protocol}://{bucket}" if bucket else protocol), key
    facet_field = "inputFacets" if kind is InputDataset else "outputFacets"
    return kind(namespace=namespace, name=name, **({facet_field: facets} if facets else {}))


# --- what ran ------------------------------------------------------------------------------------


def _ran(operator: Any, attribute: str) -> dict[str, Any]:
    """What the operator recorded of its run (``{}`` before it ran)."""
    value = getattr(operator, attribute, None)
    return value if isinstance(value, dict) else {}
