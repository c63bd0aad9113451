"""Attribution values within the documented limits, and the user's own fields left alone."""

from __future__ import annotations

import pytest

from airflow_openrouter.cost.attribution import MAX_METADATA_PAIRS, Attribution, fit


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.parametrize(
    "text",
    ["a" * 600, "\U0001f600" * 400, "x" + "\U0001f600" * 300, "é" * 513, "a" * 511 + "\U0001f600"],
)
def test_a_long_value_is_cut_on_a_character_boundary_within_the_limit(text):
    cut = fit(text, 512)

    assert utf16(cut) <= 512
    head, _, digest = cut.rpartition("~")
    assert text.startswith(head) and len(digest) == 8
    cut.encode("utf-8")  # no lone surrogate: a whole character or none


def test_two_long_values_with_the_same_beginning_stay_distinct_after_cutting():
    a, b = "run-" + "x" * 600 + "a", "run-" + "x" * 600 + "b"

    assert fit(a, 512) != fit(b, 512)
    assert fit("short", 512) == "short"


def test_the_attribution_of_a_mapped_task_run():
    attribution = Attribution.of(dag_id="d", task_id="t", run_id="r", map_index=3, try_number=2)

    assert attribution.user == "airflow/d/t"
    assert attribution.session_id == "airflow/d/t/r/3"
    assert dict(attribution.metadata) == {
        "dag_id": "d",
        "task_id": "t",
        "run_id": "r",
        "map_index": "3",
        "try_number": "2",
    }


def test_fields_the_user_set_are_kept_and_ours_fill_what_is_left_up_to_16_pairs():
    attribution = Attribution.of(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)
    theirs = {f"k{i}": "v" for i in range(14)}

    fields = attribution.fields_for({"user": "me", "session_id": "s", "metadata": theirs})

    assert "user" not in fields and "session_id" not in fields
    assert len(fields["metadata"]) == MAX_METADATA_PAIRS
    assert {k: fields["metadata"][k] for k in theirs} == theirs
    assert list(fields["metadata"])[-2:] == ["dag_id", "task_id"]


def test_batch_bodies_get_no_session_and_hook_arguments_keep_extra_body_winning():
    attribution = Attribution.of(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)

    assert "session_id" not in attribution.fields_for({}, batch=True)
    params = attribution.applied_to_params({"temperature": 0, "extra_body": {"metadata": {"team": "x"}}})
    assert (
        params["extra_body"]["metadata"]["team"] == "x" and params["extra_body"]["metadata"]["dag_id"] == "d"
    )
    assert "metadata" not in params and params["user"] == "airflow/d/t"


def test_an_operator_run_by_hand_outside_airflow_sends_no_attribution():
    assert Attribution.of_context({"ti": object()}) is None
