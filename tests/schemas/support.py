"""Shared by the structured-output tests: pydantic models, a completion builder, a canary schema."""

from __future__ import annotations

from pydantic import BaseModel, Field

from airflow_openrouter.types import ChatCompletion


class Address(BaseModel):
    city: str
    postcode: str | None = None


class Invoice(BaseModel):
    number: str = Field(description="invoice number")
    total: float
    currency: str = "EUR"
    billing: Address
    shipping: Address | None = None
    lines: list[Address] = []


def completion(content=None, *, tool_call_args=None, gen_id="gen-1", cost=0.01):
    message = {"role": "assistant", "content": content}
    if tool_call_args is not None:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": tool_call_args}}
        ]
    return ChatCompletion.model_validate(
        {"id": gen_id, "model": "m", "choices": [{"message": message}], "usage": {"cost": cost}}
    )


#: A value that must never reach a log line or ``str()`` of an error.
CANARY = "Zanzibar-canary-7731"
TAGGED = {
    "title": "Tagged",
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
        "n": {"type": "integer"},
    },
    "required": ["tags", "n"],
}
