"""``make demo`` is the first thing a user runs: keep it working (emulator path, no key)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_make_demo_runs_example_2_and_reports_what_it_did():
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}

    done = subprocess.run(
        [sys.executable, "-m", "example_dags.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "using the local OpenRouter emulator" in out
    assert "DAG run:       success" in out
    assert "Documents:     24 (succeeded 24)" in out
    assert re.search(r"Tokens:\s+\d+ prompt \+ \d+ completion = \d+", out)
    results = re.search(r"Results file:\s+(\S+\.jsonl)", out)
    assert results, out
    with open(results.group(1)) as rows:
        assert sum(1 for _ in rows) == 24
    assert len(re.findall(r"^    invoice_\d\d \[succeeded\] \{", out, flags=re.M)) == 3
