"""Which rows a recovery pass takes, and on which model (the engines' tests are in
tests/operators/test_batch_recovery.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from airflow_openrouter.batch.options import JobOptions, Limits, Recovery
from airflow_openrouter.batch.recovery import _model_of, kind_of
from airflow_openrouter.batch.results import result_row
from airflow_openrouter.schemas import output_spec

CHAIN = ("openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-3.5-haiku")


class Summary(BaseModel):
    summary: str


def job(**recovery: Any) -> JobOptions:
    return JobOptions(
        model=CHAIN[0],
        provider=None,
        requests=None,  # type: ignore[arg-type]  (not read by kind_of)
        spec=output_spec(Summary),
        identity=None,  # type: ignore[arg-type]
        results_file=None,  # type: ignore[arg-type]
        id_field=None,
        limits=Limits(),
        recovery=Recovery(**recovery),
    )


def row(status: str = "failed", **fields: Any) -> dict[str, Any]:
    return result_row("a", 0, status, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("the_row", "kind"),
    [
        (row(cause="503 server_error", transient=True), "resend"),
        (row("missing", cause="missing", transient=True), "resend"),
        (row("invalid_output", output='{"summary": 3}', cause="invalid output", transient=False), "repair"),
        (row(cause="400 bad_request", transient=False), None),
        (row(cause="403 moderation", transient=False), None),
        (row(cause="not started: cost cap", transient=False), None),
        (row(cause="503 server_error", transient=True, attempts=2), None),
        (row("succeeded"), None),
    ],
    ids=["5xx", "missing", "invalid", "4xx", "moderation", "not started", "attempts used up", "succeeded"],
)
def test_a_pass_resends_transient_rows_repairs_invalid_ones_and_leaves_the_rest(the_row, kind):
    assert kind_of(the_row, job()) == kind


def test_a_provider_error_moves_to_the_next_fallback_model_until_the_chain_ends():
    provider_error = row(cause="provider_unavailable", transient=True)
    assert kind_of(provider_error, job(fallback_models=CHAIN[1:])) == "fallback"
    on_the_last = {**provider_error, "model": CHAIN[2]}
    assert kind_of(on_the_last, job(fallback_models=CHAIN[1:], max_row_attempts=3)) == "resend"
    assert kind_of(row(cause="timeout", transient=True), job(fallback_models=CHAIN[1:])) == "resend"


def test_the_model_of_an_attempt_is_the_longest_id_the_served_one_starts_with():
    assert _model_of({"model": "openai/gpt-4o-mini-2024-07-18"}, CHAIN) == 0
    assert _model_of({"model": "openai/gpt-4o-2024-08-06"}, CHAIN) == 1
    assert _model_of({"model": None}, CHAIN) == 0
    assert _model_of({"model": "anthropic/claude-3.5-haiku"}, CHAIN) == 2
