"""Which arguments of a task are upstream data: the rule behind "upstream data is never rendered".

A value is a template only when the DAG author wrote it. What the author wrote is what the DAG file
passes: the constructor arguments of a plain task; for a mapped task, its ``partial()`` arguments and
the *literal* values given to ``expand()`` / ``expand_kwargs()`` (``.expand(prompt=["... {{ ds }}"])``
is the author's list of templates, and each is rendered). Everything an upstream task produced is data:

* an ``XComArg`` anywhere (``prompt=t.output``, ``prompt_vars={"doc": t.output}``): Airflow resolves it
  and never renders what it resolved to;
* every argument a mapped task takes from XCom: ``.expand(prompt=t.output)``,
  ``.expand_kwargs(t.output)``, or an XComArg element of a literal ``expand_kwargs([...])`` list. For
  ``@task.openrouter`` these are the function's arguments (``op_kwargs``).

Airflow does not keep that rule for mapped tasks by itself. It decides what not to render from the ids
of the objects it resolved, and ``expand_kwargs`` does not report the plain values of the dicts it
pulled from XCom, so those were rendered as Jinja (with the connection's password one
``{{ conn.<id>.password }}`` away). So the decision is made here, from where each value came from:
the mapped operator in the DAG (its ``partial_kwargs`` and its expand input), never from object ids
after resolution. The upstream values are then wrapped in ``airflow.sdk.literal(...)``, which every
renderer (Airflow's and the prompt renderer) resolves to the value itself without rendering it.

Imported by the operators at DAG parse: nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_openrouter._params import is_resolvable

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

_DICT_OF_LISTS = "dict-of-lists"  # .expand(name=...)
_LIST_OF_DICTS = "list-of-dicts"  # .expand_kwargs(...)


def mark_upstream_data(task: BaseOperator, names: Iterable[str], map_index: int | None) -> frozenset[str]:
    """Wrap the arguments among *names* that a mapped *task* took from XCom in ``literal(...)``.

    Call it on the unmapped task before its fields are rendered. A decorated task's mapped values are
    its function's arguments: those are wrapped inside ``op_kwargs`` (and reported as ``op_kwargs.x``).

    :returns: the names of the wrapped arguments; empty for a task that is not mapped.
    """
    mapped = _mapped_operator_of(task)
    if mapped is None:
        return frozenset()
    expand_input = mapped._get_specified_expand_input()
    if getattr(mapped, "_expand_input_attr", "expand_input") == "op_kwargs_expand_input":
        op_kwargs = dict(getattr(task, "op_kwargs", None) or {})
        keys = _upstream_keys(
            expand_input, mapped.partial_kwargs.get("op_kwargs") or {}, op_kwargs, map_index
        )
        keys = {k for k in keys if _wrappable(op_kwargs.get(k))}
        task.op_kwargs = {k: _literal(v) if k in keys else v for k, v in op_kwargs.items()}
        return frozenset(f"op_kwargs.{k}" for k in keys)
    current = {name: getattr(task, name, None) for name in names}
    keys = {
        k
        for k in _upstream_keys(expand_input, mapped.partial_kwargs, current, map_index)
        if _wrappable(current.get(k))
    }
    for name in keys:
        setattr(task, name, _literal(current[name]))
    return frozenset(keys)


def _wrappable(value: Any) -> bool:
    # None needs no protection; an XComArg is resolved as data anyway (and literal() of it would not be).
    return value is not None and not is_resolvable(value)


def _mapped_operator_of(task: BaseOperator) -> Any:
    """The mapped operator *task* was unmapped from, or ``None``.

    An unmapped task is not added to its DAG: the DAG keeps the mapped operator under the same task id.
    """
    dag = task.get_dag()
    candidate = dag.task_dict.get(task.task_id) if dag is not None else None
    if candidate is None or candidate is task or not getattr(candidate, "is_mapped", False):
        return None
    return candidate


def _upstream_keys(
    expand_input: Any, partial: Mapping[str, Any], current: Mapping[str, Any], map_index: int | None
) -> set[str]:
    """The keys of *current* whose values came from XCom rather than from the DAG file."""
    kind = getattr(expand_input, "EXPAND_INPUT_TYPE", None)
    source = expand_input.value
    if kind == _DICT_OF_LISTS:
        return {k for k, v in source.items() if is_resolvable(v)}
    if kind == _LIST_OF_DICTS and not is_resolvable(source):
        element = source[map_index] if map_index is not None and 0 <= map_index < len(source) else None
        if isinstance(element, Mapping):
            # A literal dict is the author's; XComArgs among its values are resolved as data anyway.
            return set()
    # The whole set of arguments came from XCom (or an expand input this code does not know): every
    # value is data, except the ones that are provably the partial()'s own objects.
    return {k for k, v in current.items() if not (k in partial and v is partial[k])}


def _literal(value: Any) -> Any:
    from airflow.sdk import literal

    return literal(value)
