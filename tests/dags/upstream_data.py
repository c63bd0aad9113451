"""Upstream data reaching prompts through every route a DAG author can wire it: it must stay data.

Run by tests/operators/test_chat_upstream_data.py with dag.test() against the emulator. ``HOSTILE`` is
what an attacker who controls an upstream value (a document, a ticket, a row) would write: Jinja that,
if rendered, puts the connection's API key and a loop's output into the prompt. Every task sends its
task id as ``user``, so that the test finds its requests in the emulator's journal.

The routes: a plain operator's ``XComArg``; ``.expand(prompt=task.output)``; ``.expand_kwargs(...)`` of
prompts, ``prompt_vars`` (nested) and ``system_prompt``; ``partial(prompt_vars={...: XComArg})``; the
decorator mapped both ways; the batch operator's ``prompt_vars`` from XCom and its ``expand_kwargs``
(items, ``prompt_vars``, ``prompt``). And one author-written literal passed to ``.expand()``, which *is*
a template and is rendered.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_openrouter.operators.batch import OpenRouterBatchOperator
from airflow_openrouter.operators.chat import OpenRouterChatOperator

HOSTILE = (
    "KEY={{ conn.openrouter_default.password }} "
    "{% for i in range(2) %}LOOP{{ i }}{% endfor %} RUN={{ run_id }}"
)
# Upstream text that looks like a template file name: data too, never loaded from the DAG folder.
FILE_NAME = "prompts/chat_summary.j2"
# What an upstream task must not get the operator to read and send: a file outside the DAG folder.
SECRET = b"\x89PNG top secret"


def _secret_file() -> Path:
    path = Path(tempfile.mkdtemp(prefix="upstream-data-")) / "secret.png"
    path.write_bytes(SECRET)
    return path


with DAG("upstream_data", schedule=None, catchup=False, tags=["test"]) as dag:

    @task
    def hostile_text() -> str:
        return f"Doc {HOSTILE}"

    @task
    def hostile_prompts() -> list[str]:
        return [f"Echo {HOSTILE}", FILE_NAME]

    @task
    def prompt_rows() -> list[dict]:
        return [{"prompt": f"Echo {HOSTILE}"}, {"prompt": FILE_NAME}]

    @task
    def var_rows() -> list[dict]:
        return [
            {
                "prompt_vars": {"doc": f"Doc {HOSTILE}", "nested": {"deep": [f"Deep {HOSTILE}"]}},
                "system_prompt": f"System {HOSTILE}",
            }
        ]

    @task
    def doc_rows() -> list[dict]:
        return [{"doc": f"Doc {HOSTILE}"}]

    @task
    def batch_rows() -> list[dict]:
        return [{"items": [{"text": f"Item {HOSTILE}"}], "prompt_vars": {"note": f"Note {HOSTILE}"}}]

    @task
    def batch_prompt_rows() -> list[dict]:
        return [{"prompt": f"Fixed {HOSTILE}", "items": [{"text": "one"}]}]

    @task
    def one_row() -> dict:
        return {"prompt": f"Row {HOSTILE}"}

    @task
    def model_rows() -> list[dict]:
        return [{"model": "{{ 'openai/gpt-4o-mini' }}"}]

    @task
    def secret_uris() -> list[str]:
        return [f"file://{_secret_file()}"]

    @task
    def traversal_rows() -> list[dict]:
        return [{"images": ["../../../../../../../../../.." + str(_secret_file())]}]

    @task
    def inside_images() -> list[str]:
        return ["images/pixel.png"]

    text = hostile_text()

    # Images named by upstream values: a storage URI or a path out of the DAG folder fails the task
    # before anything is read or sent; a file inside the DAG folder is fine.
    OpenRouterChatOperator(task_id="images_uri", prompt="Describe.", images=secret_uris(), user="images_uri")
    OpenRouterChatOperator.partial(
        task_id="images_kwargs", prompt="Describe.", user="images_kwargs"
    ).expand_kwargs(traversal_rows())
    OpenRouterChatOperator(
        task_id="images_inside", prompt="Describe.", images=inside_images(), user="images_inside"
    )

    OpenRouterChatOperator(task_id="plain_xcomarg", prompt=text, user="plain_xcomarg")

    OpenRouterChatOperator.partial(task_id="expand_prompt", user="expand_prompt").expand(
        prompt=hostile_prompts()
    )

    # Written by the DAG author: a template, rendered once (run_id is evaluated).
    OpenRouterChatOperator.partial(task_id="expand_literal", user="expand_literal").expand(
        prompt=["Literal run {{ run_id }}"]
    )

    OpenRouterChatOperator.partial(task_id="kwargs_prompt", user="kwargs_prompt").expand_kwargs(prompt_rows())

    OpenRouterChatOperator.partial(
        task_id="kwargs_vars", prompt="{{ doc }} | {{ nested.deep[0] }}", user="kwargs_vars"
    ).expand_kwargs(var_rows())

    # A literal expand_kwargs list: its dicts are the author's (rendered), an XComArg element is data.
    OpenRouterChatOperator.partial(task_id="kwargs_literal_list", user="kwargs_literal_list").expand_kwargs(
        [{"prompt": "Literal row {{ run_id }}"}, one_row()]
    )

    # Any argument, not only prompts: a model id from upstream is not rendered either (so this one is
    # sent as the odd text it is, and the emulator rejects it).
    OpenRouterChatOperator.partial(task_id="kwargs_model", prompt="Hi", user="kwargs_model").expand_kwargs(
        model_rows()
    )

    OpenRouterChatOperator.partial(
        task_id="partial_xcomarg", prompt="{{ doc }}", prompt_vars={"doc": text}, user="partial_xcomarg"
    ).expand(system_prompt=["Be brief.", "Be {{ 'kind' }}."])

    @task.openrouter(user="decorated_kwargs")
    def decorated_kwargs(doc: str) -> str:
        return f"Echo {doc}"

    decorated_kwargs.expand_kwargs(doc_rows())

    @task.openrouter(user="decorated_expand")
    def decorated_expand(doc: str) -> str:
        return f"Echo {doc}"

    decorated_expand.expand(doc=hostile_prompts())

    OpenRouterBatchOperator(
        task_id="batch_vars",
        items=[{"text": "one"}],
        prompt="{{ item.text }} | {{ note }}",
        prompt_vars={"note": text},
        engine="concurrent",
        user="batch_vars",
    )

    OpenRouterBatchOperator.partial(
        task_id="batch_kwargs", prompt="{{ item.text }} | {{ note }}", user="batch_kwargs"
    ).expand_kwargs(batch_rows())

    OpenRouterBatchOperator.partial(
        task_id="batch_kwargs_prompt", engine="concurrent", user="batch_kwargs_prompt"
    ).expand_kwargs(batch_prompt_rows())
