"""Example 4 -- vision: ask a question about an image and get a structured answer.

``data/quarterly_revenue.png`` is a bar chart shipped with the examples (drawn by ``data/draw_chart.py``).
The chat operator attaches it to the prompt and asks for a reply that fits ``ChartReading``; the
downstream task works with numbers, not with prose.

``images=`` takes, per image, an ``https://`` URL, a ``data:`` URL, a path relative to the DAG folder
(as here), or an ``ObjectStoragePath`` / URI such as ``s3://bucket/scan.png``. Local and object-storage
files are read by the worker and sent inline as base64, so the model provider never needs access to
your storage. Pick a model that accepts images (OpenRouter lists ``image`` among its input modalities).
"""

from datetime import datetime

from airflow.sdk import DAG, task
from pydantic import BaseModel, Field

from airflow_openrouter.operators.chat import OpenRouterChatOperator

MODEL = "openai/gpt-4o-mini"  # accepts image input


class Bar(BaseModel):
    label: str = Field(description="The label under the bar, e.g. Q1")
    value: float = Field(description="The number printed above the bar")


class ChartReading(BaseModel):
    title: str
    bars: list[Bar]
    highest_label: str = Field(description="Label of the tallest bar")
    unit: str = Field(description="The unit the values are in, as stated in the chart")


with DAG(
    dag_id="example_openrouter_vision",
    description="Read the numbers off a chart image into a validated structure",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["openrouter", "example", "vision"],
) as dag:
    read_chart = OpenRouterChatOperator(
        task_id="read_chart",
        model=MODEL,
        prompt=(
            "Read this chart. List every bar with its label and the value printed above it, "
            "say which bar is the tallest, and give the unit of the values."
        ),
        images=["data/quarterly_revenue.png"],
        response_format=ChartReading,
        temperature=0,
    )

    @task
    def compare_quarters(reading: dict):
        """Plain arithmetic on what the model read: the values are numbers because the schema says so."""
        values = {bar["label"]: bar["value"] for bar in reading["bars"]}
        first, last = next(iter(values.values()), 0), next(reversed(values.values()), 0)
        change = (last - first) / first * 100 if first else None
        print(f"{reading['title']}: {values} ({reading['unit']}); tallest: {reading['highest_label']}")
        if change is not None:
            print(f"First to last bar: {change:+.1f}%")
        return {"values": values, "first_to_last_percent": change}

    compare_quarters(read_chart.output)
