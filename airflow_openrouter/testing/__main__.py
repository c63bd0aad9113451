"""``python -m airflow_openrouter.testing``: run the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from ._emulator import OpenRouterEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_openrouter.testing",
        description="Run a local OpenRouter-compatible API server (the airflow-openrouter test emulator).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8789, help="0 picks a free port (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay added to every request")
    parser.add_argument("--latency-jitter-ms", type=float, default=0, help="uniform extra delay up to this")
    parser.add_argument("--token-delay-ms", type=float, default=0, help="delay between SSE chunks")
    parser.add_argument(
        "--batch-durations",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 0.5),
        metavar=("VALIDATING", "IN_PROGRESS", "FINALIZING"),
        help="seconds a batch spends in each phase (default: %(default)s)",
    )
    parser.add_argument("--scenario", help="JSON scenario file with latency settings and faults")
    parser.add_argument(
        "--api-key",
        action="extend",
        nargs="+",
        dest="api_keys",
        metavar="KEY",
        help="accept only these keys (repeatable); by default any non-empty bearer key is accepted",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator = OpenRouterEmulator(
        host=args.host,
        port=args.port,
        api_keys=args.api_keys,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        token_delay_ms=args.token_delay_ms,
        batch_durations=tuple(args.batch_durations),
        scenario=args.scenario,
    )
    with emulator:
        print(f"OpenRouter emulator listening on {emulator.base_url}", flush=True)
        print(f"API key: {emulator.api_key}  (Ctrl-C to stop)", flush=True)
        while not stop.wait(0.5):
            pass
    print("OpenRouter emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
