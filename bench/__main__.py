"""``python -m bench [--quick] [--peers] [--only NAME ...] [--output PATH] [--markdown PATH]``

Runs the benchmarks of issue 7 against the emulator on loopback, prints the table and writes it as
JSON (default ``bench/results.json``). ``--quick`` uses tiny sizes (the test suite's smoke run: it
checks that the harness works, not how fast anything is). ``--peers`` also measures the other Airflow
LLM providers and SDKs from a separate virtualenv (``.venv-peers``, built on first use).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import (
    cache_hits,
    concurrent,
    embeddings_write,
    emulator_capacity,
    parse_cost,
    results_memory,
    sharded,
    transport,
    triggerer,
)
from bench._common import REPO, Row
from bench._peers import peers_python
from bench._table import machine, render_markdown, render_text, write_json

Benchmark = Callable[..., list[Row]]

# In the order of the issue. Each takes (quick=..., peers_python=...) and returns its rows.
BENCHMARKS: dict[str, Benchmark] = {
    "parse_cost": parse_cost.run,
    "transport": transport.run,
    "concurrent": concurrent.run,
    "results_memory": results_memory.run,
    "triggerer": triggerer.run,
    "sharded": sharded.run,
    "emulator_capacity": emulator_capacity.run,
    "embeddings_write": embeddings_write.run,
    "cache_hits": cache_hits.run,
}
PEER_BENCHMARKS = {"parse_cost", "transport"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a measurement")
    parser.add_argument("--peers", action="store_true", help="add the peers' rows (builds .venv-peers)")
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), metavar="NAME", help="repeatable"
    )
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown (bench/RESULTS.md)")
    return parser


def run_benchmark(name: str, benchmark: Benchmark, *, quick: bool, peers: Path | None) -> list[Row]:
    """Its rows; a benchmark that crashes gives one FAILED row instead of ending the run."""
    try:
        return benchmark(quick=quick, peers_python=peers if name in PEER_BENCHMARKS else None)
    except Exception as exc:
        return [Row(name, name, "", None, note=f"{type(exc).__name__}: {exc}", failed=True)]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Workers import Airflow: give them a throwaway home instead of the user's ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    peers, peers_error = None, None
    if args.peers:
        try:
            peers = peers_python()
        except RuntimeError as exc:
            peers_error = str(exc)
    rows: list[Row] = []
    for name in args.only or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += run_benchmark(name, BENCHMARKS[name], quick=args.quick, peers=peers)
    if peers_error:
        rows.append(Row("peers", "peers (--peers)", "", None, note=f"not available: {peers_error}"))
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json(rows, args.output, command=command.strip(), quick=args.quick)
    about = machine()
    header = (
        f"{about['date']}, {about['cores']} cores (load average {about['load_average_1m']}), "
        f"Python {about['python']}: {command.strip()}"
    )
    print(f"\n{header}\n\n{render_text(rows)}\n\nwritten to {args.output}")
    if args.markdown:
        args.markdown.write_text(f"# Benchmark results\n\n{header}\n\n{render_markdown(rows)}\n")
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
