"""What the bulk engines log: a progress line every 10 s or 5 %, one summary, no INFO line per call."""

from __future__ import annotations

import logging
from typing import Any

from airflow_openrouter.batch.progress import Progress
from tests.batch.support import (
    FakeClock,
    docs,
    read_rows,
    run_operator,
    summarise,
)


class Lines:
    """A logger that keeps its INFO lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)


def test_a_line_every_five_percent_with_counts_rate_cost_and_eta():
    clock, log = FakeClock(0.0), Lines()
    progress = Progress("requests", 200, log, clock=clock)

    for i in range(40):
        progress.started()
        clock.now += 0.125
        progress.settled(ok=i % 4 != 0, cost_usd=0.001)

    assert len(log.lines) == 4  # at 10, 20, 30 and 40 of 200: every 5 %
    assert log.lines[-1] == (
        "Progress: 40 of 200 requests done (10 failed), 0 in flight, 8.0/s, $0.0400 so far, ETA 20 s."
    )


def test_a_line_every_ten_seconds_when_five_percent_takes_longer():
    clock, log = FakeClock(0.0), Lines()
    progress = Progress("requests", 1_000_000, log, clock=clock)
    for _ in range(64):
        progress.started()

    for _ in range(30):
        clock.now += 1.0
        progress.settled(ok=True)

    assert len(log.lines) == 3  # at 10, 20 and 30 s
    assert log.lines[0].startswith("Progress: 10 of 1,000,000 requests done (0 failed), 54 in flight, 1.0/s")
    assert log.lines[0].endswith("ETA 277 h 46 min.")


def test_a_job_done_within_a_second_logs_only_its_summary():
    clock, log = FakeClock(0.0), Lines()
    progress = Progress("rows", 24, log, in_flight=False, clock=clock)

    for _ in range(24):
        clock.now += 0.01
        progress.settled(ok=True)
    progress.summary()

    assert log.lines == ["Done: 24 rows in 0 s (100.0/s), 0 failed, $0.0000."]


def test_the_summary_says_how_many_how_fast_and_what_it_cost():
    clock, log = FakeClock(0.0), Lines()
    progress = Progress("rows", None, log, in_flight=False, clock=clock)
    for _ in range(3):
        progress.settled(ok=True, cost_usd=0.5)
    progress.settled(ok=False)
    clock.now = 125.0

    progress.summary()

    assert log.lines == ["Done: 4 rows in 2 min 05 s (0.0/s), 1 failed, $1.5000."]


def test_the_concurrent_engine_logs_progress_not_a_line_per_request(batch_emu, context, capsys, caplog):
    operator = summarise(items=docs(60), id_field="id", engine="concurrent", max_concurrency=4)

    with caplog.at_level(logging.DEBUG, logger="airflow_openrouter.transport"):
        manifest = run_operator(operator, context)

    assert manifest["counts"]["succeeded"] == 60 and len(read_rows(manifest["output_uri"])) == 60
    out = capsys.readouterr().out
    assert out.count("Progress: ") <= 20  # at most every 3 of 60 requests (5 %), at most one a second
    assert out.count("Done: 60 items in ") == 1
    calls = [r for r in caplog.records if r.getMessage().startswith("OpenRouter POST /chat/completions")]
    assert len(calls) == 60 and {r.levelno for r in calls} == {logging.DEBUG}


def test_the_batch_engine_fetch_logs_a_summary_and_its_pages_at_debug(batch_emu, context, capsys, caplog):
    operator = summarise(items=docs(30), id_field="id")

    with caplog.at_level(logging.DEBUG, logger="airflow_openrouter.transport"):
        manifest = run_operator(operator, context)

    assert manifest["counts"]["succeeded"] == 30
    out = capsys.readouterr().out
    assert out.count("Done: 30 rows in ") == 1 and out.count("Progress: ") <= 20
    pages = [
        r for r in caplog.records if "/results" in r.getMessage() and r.getMessage().startswith("OpenRouter")
    ]
    assert pages and {r.levelno for r in pages} == {logging.DEBUG}
    posts = [r for r in caplog.records if r.getMessage().startswith("OpenRouter POST /batches")]
    assert [r.levelno for r in posts] == [logging.INFO]  # one submission: worth its line
