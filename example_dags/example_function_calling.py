"""Example 5 -- function calling: the model picks a tool, a downstream task runs it.

The chat operator sends the tool definitions (JSON Schema parameters, OpenAI format). When the model
decides to call tools, the operator does **not** run them: it returns the calls as
``[{"id": ..., "name": ..., "arguments": {...}}]`` with the arguments already parsed from JSON. A
downstream task then runs them -- with its own permissions, retries and audit log, which is exactly
where side effects such as refunds belong in a pipeline.

Here the model reads a support ticket about a double charge and may call ``issue_refund`` or
``escalate``. ``tool_choice="required"`` makes it call one of them rather than reply in prose.
"""

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_openrouter.operators.chat import OpenRouterChatOperator

MODEL = "openai/gpt-4o-mini"  # supports tool calling
TICKET = Path(__file__).parent / "data" / "tickets" / "ticket_1045.md"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "description": "Refund a duplicate or wrong card charge to the customer.",
            "parameters": {
                "type": "object",
                "properties": {
                    "customer": {"type": "string", "description": "Customer name as in the ticket"},
                    "amount": {"type": "number", "description": "Amount to refund"},
                    "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
                    "reason": {"type": "string"},
                },
                "required": ["customer", "amount", "currency", "reason"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "escalate",
            "description": "Hand the ticket to a human when no other tool fits.",
            "parameters": {
                "type": "object",
                "properties": {"team": {"type": "string", "enum": ["billing", "engineering"]}},
                "required": ["team"],
                "additionalProperties": False,
            },
        },
    },
]

with DAG(
    dag_id="example_openrouter_function_calling",
    description="Let the model choose a tool call; run it in a downstream task",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["openrouter", "example", "tools"],
) as dag:

    @task
    def load_ticket() -> str:
        return TICKET.read_text(encoding="utf-8")

    decide = OpenRouterChatOperator(
        task_id="decide",
        model=MODEL,
        system_prompt="You resolve Ledgerly billing tickets by calling exactly one tool.",
        prompt="Resolve this ticket:\n\n{{ ticket }}",
        prompt_vars={"ticket": load_ticket()},
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
    )

    @task
    def run_tool_calls(calls: list[dict] | str) -> list[dict]:
        """Dispatch each call to a Python function; the arguments arrive as a dict."""
        if isinstance(calls, str):  # a model may still answer in prose; nothing to run then
            print(f"No tool call, the model said: {calls}")
            return []

        def issue_refund(customer: str, amount: float, currency: str, reason: str) -> dict:
            # In production: call your payment provider's refund API here.
            return {"refunded": f"{amount:.2f} {currency}", "customer": customer, "reason": reason}

        def escalate(team: str) -> dict:
            return {"escalated_to": team}

        handlers = {"issue_refund": issue_refund, "escalate": escalate}
        done = []
        for call in calls:
            result = handlers[call["name"]](**call["arguments"])
            print(f"{call['name']}({call['arguments']}) -> {result}")
            done.append({"call_id": call["id"], "tool": call["name"], "result": result})
        return done

    run_tool_calls(decide.output)
