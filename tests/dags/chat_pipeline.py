"""The chat operator in a pipeline: upstream data flows into prompts as data, structured output flows on.

Run by tests/operators/test_chat_pipeline.py with dag.test() against the emulator. Every request sets
``user`` to its task id, so that the test can find it in the emulator's journal.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from pydantic import BaseModel

from airflow_openrouter.operators.chat import OpenRouterChatOperator

# Upstream text that looks like Jinja. It must reach the model byte for byte, never evaluated.
HOSTILE = "{{ var.value.secret }} {% if true %}EVALUATED{% endif %} {{ conn.openrouter_default.password }}"


class DocSummary(BaseModel):
    title: str
    key_points: list[str]
    sentiment: str | None = None


with DAG("chat_pipeline", schedule=None, catchup=False, tags=["test"]) as dag:

    @task
    def make_document() -> str:
        return f"Quarterly report: revenue grew 12% in Ghent. Reviewer note: {HOSTILE}"

    @task
    def make_topics() -> list[dict]:
        return [{"topic": HOSTILE}, {"topic": "plain"}]

    document = make_document()

    summarise = OpenRouterChatOperator(
        task_id="summarise",
        prompt="prompts/chat_summary.j2",
        system_prompt="You write for {{ audience }}.",
        prompt_vars={"document": document, "audience": "executives"},
        response_format=DocSummary,
        user="summarise",
    )

    @task
    def check_summary(summary: dict) -> str:
        # What a downstream user gets: a plain dict that the schema accepts.
        assert type(summary) is dict, f"expected a dict, got {type(summary)}"
        return DocSummary.model_validate(summary).title

    check_summary(summarise.output)

    pulled = OpenRouterChatOperator(
        task_id="pulled_in_template",
        prompt="Proofread: {{ ti.xcom_pull(task_ids='make_document') }}",
        user="pulled_in_template",
    )
    document >> pulled

    @task.openrouter(user="decorated")
    def decorated(doc: str) -> str:
        return f"Proofread: {doc}"

    decorated(document)

    OpenRouterChatOperator.partial(task_id="mapped", prompt="Topic: {{ topic }}", user="mapped").expand(
        prompt_vars=make_topics()
    )

    OpenRouterChatOperator(task_id="no_xcom", prompt="Say hi.", do_xcom_push=False, user="no_xcom")


# Arguments known only at run time: a mapped task's values, literal or from XCom, are checked when the
# task is unmapped, before any request. Index 0 of each is fine; index 1 is not.
with DAG("chat_mapped_arguments", schedule=None, catchup=False, tags=["test"]) as mapped_arguments_dag:

    @task
    def token_limits() -> list[dict]:
        return [{"max_tokens": 50}, {"max_tokens": "100"}]

    @task
    def temperatures() -> list[float]:
        return [0.2, 9]

    OpenRouterChatOperator.partial(
        task_id="literal_temperatures", prompt="Hi", user="literal_temperatures"
    ).expand(temperature=[0.5, 7])
    OpenRouterChatOperator.partial(
        task_id="xcom_max_tokens", prompt="Hi", user="xcom_max_tokens"
    ).expand_kwargs(token_limits())
    OpenRouterChatOperator.partial(task_id="xcom_temperatures", prompt="Hi", user="xcom_temperatures").expand(
        temperature=temperatures()
    )
