"""Smoke run of the benchmark harness (issue 7): tiny sizes, so the harness never rots.

It checks that every benchmark runs and reports a row; it never looks at how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    process = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return process, output


def test_quick_run_succeeds_and_prints_the_table(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    process, output = quick_run

    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "benchmark" in process.stdout and str(output) in process.stdout


def test_every_benchmark_writes_rows_with_a_figure_or_a_reason(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    document = json.loads(quick_run[1].read_text())

    assert document["quick"] is True and document["cores"] >= 1 and document["date"]
    rows = document["rows"]
    assert {row["benchmark"] for row in rows} == set(BENCHMARKS)
    for row in rows:
        assert row["status"] in ("holds", "MISSED", "reported", "not available"), row
        if row["status"] == "not available":
            assert row["note"], row
        else:
            assert isinstance(row["figure"], (int, float)) and isinstance(row["baseline"], (int, float)), row
