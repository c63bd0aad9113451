"""The schema-instance generator behind json_schema outputs and tool arguments (pure unit tests)."""

from __future__ import annotations

import datetime as dt
import enum
import random
import uuid
from typing import Annotated, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from airflow_openrouter.testing._schema_gen import SchemaInstanceGenerator, violate

WORDS = ["harbour", "ledger", "turbine", "orchid"]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Node(BaseModel):
    name: str
    children: list[Node] = []


class Everything(BaseModel):
    title: str = Field(min_length=5, max_length=12)
    code: str = Field(pattern=r"^[A-Z]{3}-\d{3}$")
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]
    ratio: float = Field(gt=0, lt=1)
    count: int = Field(ge=10, le=20, multiple_of=5)
    colour: Colour
    tags: list[str] = Field(min_length=2, max_length=3)
    scores: dict[str, int]
    pair: tuple[int, str]
    pet: Cat | Dog = Field(discriminator="kind")
    maybe: float | None
    when: dt.datetime
    day: dt.date
    ident: uuid.UUID
    tree: Node


@pytest.mark.parametrize("seed", range(15))
def test_instances_validate_against_a_pydantic_schema(seed: int) -> None:
    schema = Everything.model_json_schema()
    instance = SchemaInstanceGenerator(schema, random.Random(seed), WORDS).generate()
    jsonschema.validate(instance, schema)
    Everything.model_validate(instance)


def test_same_seed_gives_same_instance() -> None:
    schema = Everything.model_json_schema()
    first = SchemaInstanceGenerator(schema, random.Random(1), WORDS).generate()
    assert first == SchemaInstanceGenerator(schema, random.Random(1), WORDS).generate()


def test_type_lists_consts_and_exclusive_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": ["integer", "null"], "exclusiveMinimum": 3, "exclusiveMaximum": 5},
            "b": {"const": "fixed"},
            "c": {
                "allOf": [
                    {
                        "type": "object",
                        "properties": {"x": {"type": "string", "format": "email"}},
                        "required": ["x"],
                    }
                ]
            },
            "d": {"type": "string", "format": "uri"},
        },
        "required": ["a", "b", "c", "d"],
        "additionalProperties": False,
    }
    instance = SchemaInstanceGenerator(schema, random.Random(0), WORDS).generate()
    jsonschema.validate(instance, schema)
    assert instance["a"] == 4 and instance["b"] == "fixed" and "@" in instance["c"]["x"]


def test_string_values_come_from_prompt_words() -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    instance = SchemaInstanceGenerator(schema, random.Random(0), WORDS).generate()
    assert set(instance["summary"].rstrip(".").lower().split()) <= set(WORDS)


def test_violate_breaks_required_properties_and_types() -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
        "required": ["label", "score"],
    }
    for seed in range(5):
        instance = SchemaInstanceGenerator(schema, random.Random(seed), WORDS).generate()
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(violate(instance, schema), schema)
