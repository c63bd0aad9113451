"""Buttons in the Airflow UI from a task to OpenRouter: a chat task's generation, a batch task's batches.

Airflow 3 computes an operator's extra links on the worker when the task ends and stores each in XCom
(``_link_<class name>``), which the UI reads; an empty link shows no button. The links are read from
what the task itself recorded:

* :class:`OpenRouterGenerationLink` (chat operator, ``@task.openrouter``): the last generation of XCom
  ``openrouter_usage``;
* :class:`OpenRouterBatchLink` (batch operator, sensor): the batch operator's XCom ``batch_ids``
  (pushed when it submits, so the link is there while it waits), the sensor's rendered ``batch_ids``.
  With ``do_xcom_push=False`` the operators push nothing, and there is no link.

**The URLs.** OpenRouter documents its Logs page, ``https://openrouter.ai/logs``, which lists every
generation and can be filtered by generation id, with the filters kept in the URL; it does not
document the name of that URL parameter, nor a page per batch. So both URLs come from the
``[openrouter]`` configuration, with these defaults:

* ``generation_link_template = https://openrouter.ai/logs?generation_id={generation_id}``
  (``generation_id`` is the parameter name OpenRouter's own material uses, not a documented one);
* ``batch_link_template = https://openrouter.ai/logs`` (``{batch_id}``, if the template has it, is the
  first batch's id).

Ids are URL-quoted. The DAG processor imports this module on every parse (the operators name their
links): it imports only Airflow's ``BaseOperatorLink``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = [
    "BATCH_LINK_TEMPLATE",
    "GENERATION_LINK_TEMPLATE",
    "OpenRouterBatchLink",
    "OpenRouterGenerationLink",
    "batch_link",
    "generation_link",
]

GENERATION_LINK_TEMPLATE = "https://openrouter.ai/logs?generation_id={generation_id}"
BATCH_LINK_TEMPLATE = "https://openrouter.ai/logs"


def generation_link(generation_id: str | None) -> str:
    """The URL of a generation (``[openrouter] generation_link_template``), or ``""`` without one."""
    if not generation_id:
        return ""
    template = _template("generation_link_template", GENERATION_LINK_TEMPLATE)
    return template.replace("{generation_id}", quote(generation_id, safe=""))


def batch_link(batch_ids: Sequence[str] | None) -> str:
    """The URL of the batches (``[openrouter] batch_link_template``), or ``""`` without any."""
    if not batch_ids:
        return ""
    template = _template("batch_link_template", BATCH_LINK_TEMPLATE)
    return template.replace("{batch_id}", quote(batch_ids[0], safe=""))


class OpenRouterGenerationLink(BaseOperatorLink):
    """The generation a chat task got its answer from (the last one, after repairs), on openrouter.ai."""

    name = "OpenRouter generation"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow_openrouter.operators.chat import USAGE_XCOM_KEY  # loaded already: the task's module

        usage = _xcom(ti_key, USAGE_XCOM_KEY)
        return generation_link(usage.get("generation_id") if isinstance(usage, dict) else None)


class OpenRouterBatchLink(BaseOperatorLink):
    """The batches a batch task submitted, or a sensor waits for, on openrouter.ai."""

    name = "OpenRouter batches"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        ids: Any = getattr(operator, "batch_ids", None)  # the sensor's, rendered
        if ids is None:
            from airflow_openrouter.operators.batch import BATCH_IDS_XCOM_KEY

            ids = _xcom(ti_key, BATCH_IDS_XCOM_KEY)
        if isinstance(ids, str):
            ids = [ids]
        valid = isinstance(ids, Sequence) and all(isinstance(i, str) for i in ids)
        return batch_link(list(ids) if valid else None)


def _xcom(ti_key: TaskInstanceKey, key: str) -> Any:
    # The same import path on Airflow 3.1 to 3.3; it talks to the API server through the supervisor.
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key=key)


def _template(option: str, default: str) -> str:
    from airflow_openrouter._compat import conf

    return conf.get("openrouter", option, fallback=default) or default
