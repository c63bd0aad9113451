"""``@task.openrouter``: a Python function builds the prompt, OpenRouterChatOperator sends it.

::

    @task.openrouter(model="openai/gpt-4o-mini", response_format=Summary)
    def summarise(doc: str) -> str:
        return f"Summarise this document:\\n{doc}"

The function returns the prompt (a string) or a full ``messages`` list; the decorator's keyword
arguments are the operator's, checked when the DAG is parsed (as the operator checks them). A returned
prompt with ``messages=...`` on the decorator is appended to that conversation as the last user turn,
as with the operator; a returned messages list *is* the conversation, so passing ``messages=...`` as
well is an error (the task fails before any request).

What the function returns is **data**: it is sent as is and never rendered as a Jinja template, so a
document containing ``{{ var.value.secret }}`` reaches the model literally. The function's arguments
are data too when they come from upstream, also for a mapped task (``.expand(doc=t.output)``,
``.expand_kwargs(t.output)``): Airflow would otherwise render what ``expand_kwargs`` pulled from XCom
before the function sees it. (The operator's own template fields, e.g. ``system_prompt``, are rendered
as usual, before the function is called.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge

from airflow_openrouter._compat import determine_kwargs
from airflow_openrouter.operators.chat import OpenRouterChatOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class _OpenRouterDecoratedOperator(DecoratedOperator, OpenRouterChatOperator):
    """Calls the decorated function for the prompt, then runs :class:`OpenRouterChatOperator`."""

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *OpenRouterChatOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **OpenRouterChatOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.openrouter"
    # The prompt exists only once the function has run: store the rendered fields again afterwards.
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            prompt=SET_DURING_EXECUTION,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        # Template fields were rendered before execute(); the returned prompt is deliberately not.
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        returned = self.python_callable(*self.op_args, **kwargs)
        if isinstance(returned, str) and returned.strip():
            self.prompt = returned
        elif isinstance(returned, list) and returned:
            if self.messages is not None:
                raise ValueError(
                    f"The @task.openrouter function {self.python_callable.__name__!r} returned a messages "
                    "list, but messages=... was also passed to the decorator: one of them would be "
                    "dropped. Return the whole conversation and drop messages=..., or keep messages=... "
                    "and return only the prompt (a string, appended as the last user turn)."
                )
            self.prompt, self.messages = None, returned
        else:
            raise TypeError(
                f"The @task.openrouter function {self.python_callable.__name__!r} must return the prompt: "
                f"a non-empty string or a non-empty messages list, not {returned!r:.100}."
            )
        return super().execute(context)


def openrouter_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a prompt into an :class:`OpenRouterChatOperator` task.

    Registered as ``@task.openrouter``; keyword arguments are the operator's.
    """
    task_id = kwargs.get("task_id") or getattr(python_callable, "__name__", None)
    _OpenRouterDecoratedOperator.check_static_arguments(kwargs, task_id=task_id)
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_OpenRouterDecoratedOperator,
        **kwargs,
    )
