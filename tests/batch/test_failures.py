"""What is systemic, transient or permanent, and the verdict on a bulk run: the decisions, without I/O."""

from __future__ import annotations

import pytest

from airflow_openrouter._compat import AirflowFailException
from airflow_openrouter.batch.failures import RunSummary, as_permanent, cause_of, causes_text, judge, sentence
from airflow_openrouter.exceptions import (
    CostCapReached,
    OpenRouterAPIError,
    OpenRouterAuthenticationError,
    OpenRouterBadRequestError,
    OpenRouterConnectionError,
    OpenRouterNotFoundError,
    OpenRouterPaymentRequiredError,
    OpenRouterPermissionDeniedError,
    OpenRouterRateLimitError,
    OpenRouterServerError,
    OpenRouterTimeoutError,
)


@pytest.mark.parametrize(
    ("error", "systemic"),
    [
        (OpenRouterAuthenticationError("User not found.", status=401), True),
        (OpenRouterPaymentRequiredError("Insufficient credits.", status=402), True),
        (OpenRouterPermissionDeniedError("The selected provider or model is not allowed.", status=403), True),
        (OpenRouterPermissionDeniedError("flagged", status=403, metadata={"reasons": ["violence"]}), False),
        (
            OpenRouterNotFoundError(
                "No endpoints found that can handle the requested parameters.", status=404
            ),
            True,
        ),
        (OpenRouterBadRequestError("openai/gpt-5x is not a valid model ID", status=400), True),
        (OpenRouterBadRequestError("max_tokens must be a positive integer", status=400), False),
        (OpenRouterRateLimitError("slow down", status=429), False),
        (OpenRouterServerError("Provider returned error", status=502), False),
        (OpenRouterTimeoutError("read timed out"), False),
    ],
)
def test_systemic_means_every_other_request_would_get_the_same_answer(error, systemic):
    assert error.systemic is systemic


@pytest.mark.parametrize(
    ("error", "cause", "transient"),
    [
        (OpenRouterServerError("x", status=503), "503 server_error", True),
        (OpenRouterRateLimitError("x", status=429), "429 rate_limit", True),
        (OpenRouterTimeoutError("x"), "timeout", True),
        (OpenRouterConnectionError("x"), "connection error", True),
        (OpenRouterBadRequestError("x", status=400), "400 bad_request", False),
        (
            OpenRouterPermissionDeniedError("x", status=403, metadata={"reasons": ["hate"]}),
            "403 moderation",
            False,
        ),
        (CostCapReached(1.0, 1.0), "not started: cost cap", False),
    ],
)
def test_each_error_has_a_short_cause_and_says_whether_it_may_pass(error, cause, transient):
    assert cause_of(error) == cause and error.transient is transient


def summary(**fields) -> RunSummary:
    defaults = {
        "total": 10,
        "unsuccessful": 0,
        "retry_count": 0,
        "causes": {},
        "output_uri": "file:///r.jsonl",
        "engine": "concurrent",
    }
    return RunSummary(**{**defaults, **fields})


def test_the_verdict_of_a_run_within_the_threshold_is_success():
    assert judge(summary(), 0.0).status == "completed"
    ok = judge(summary(unsuccessful=1, causes={"timeout": 1}, retry_count=1), 0.1)
    assert ok.status == "completed_with_failures" and ok.message is None


def test_too_many_transient_failures_are_retryable_and_say_what_the_retry_sends():
    verdict = judge(summary(unsuccessful=3, retry_count=3, causes={"503 server_error": 3}), 0.0)

    assert verdict.retryable and verdict.status == "failed"
    assert "a retry sends those items again" in (verdict.message or "")


def test_all_permanent_failures_of_one_cause_fail_for_good_without_advising_a_higher_threshold():
    verdict = judge(summary(unsuccessful=10, causes={"400 bad_request": 10}), 0.0)

    assert not verdict.retryable and "max_failed_fraction" not in (verdict.message or "").split("allows.")[1]


def test_a_systemic_error_is_the_verdict_and_keeps_its_type():
    error = OpenRouterAuthenticationError("User not found.", status=401)
    verdict = judge(
        summary(
            unsuccessful=10,
            causes={"401 authentication": 2, "not started: 401 authentication": 8},
            systemic=error,
        ),
        0.0,
    )

    assert verdict.error is error and "(8 items were not started)" in (verdict.message or "")
    assert (verdict.message or "").endswith(
        causes_text({"not started: 401 authentication": 8, "401 authentication": 2})
    )


def test_a_permanent_error_keeps_its_class_and_fields_and_is_an_airflow_fail_exception():
    error = OpenRouterAuthenticationError("bad key", status=401, code=401, metadata={"a": 1})

    permanent = as_permanent(error, "bad key; fix the connection")

    assert isinstance(permanent, OpenRouterAuthenticationError) and isinstance(
        permanent, AirflowFailException
    )
    assert (
        isinstance(permanent, OpenRouterAPIError)
        and type(permanent).__name__ == "OpenRouterAuthenticationError"
    )
    assert (permanent.status, permanent.code, permanent.metadata) == (401, 401, {"a": 1})
    assert str(permanent) == "bad key; fix the connection"
    assert type(as_permanent(error, "again")) is type(permanent)  # one class per error class


def test_messages_are_joined_as_sentences():
    assert sentence("is not a valid model ID") == "is not a valid model ID."
    assert sentence("Done.") == "Done." and sentence("") == ""
