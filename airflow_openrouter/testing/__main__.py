"""``python -m airflow_openrouter.testing``: run the emulator until SIGINT/SIGTERM.

The banner says how to authenticate without printing a key: by default any non-empty bearer key is
accepted; with ``--api-key`` only the given keys are (they are never echoed). An address that cannot
be bound (a busy port) is one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from ._emulator import DEFAULT_API_KEY, OpenRouterEmulator
from ._server import EmulatorAddressError


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
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve chat completions, embeddings and model lists from N processes on the port "
        "(default: %(default)s)",
    )
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
    try:
        emulator = OpenRouterEmulator(
            host=args.host,
            port=args.port,
            api_keys=args.api_keys,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            token_delay_ms=args.token_delay_ms,
            batch_durations=tuple(args.batch_durations),
            scenario=args.scenario,
            workers=args.workers,
        )
    except (OSError, ValueError) as exc:  # an unreadable or malformed scenario file, a bad duration
        print(f"OpenRouter emulator: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        emulator.start()
    except EmulatorAddressError as exc:
        print(f"OpenRouter emulator: {exc.strerror}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as exc:  # a worker process could not start
        print(f"OpenRouter emulator: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        print(f"OpenRouter emulator listening on {emulator.base_url}", flush=True)
        if args.workers > 1:
            print(f"Workers: {args.workers} processes share the port", flush=True)
        print(auth_banner(args.api_keys), flush=True)
        print("Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    print("OpenRouter emulator stopped", flush=True)
    return 0


def auth_banner(api_keys: Sequence[str] | None) -> str:
    if api_keys:
        count = len(set(api_keys))
        return f"Auth: only the {count} key{'s' if count > 1 else ''} given with --api-key (not shown)"
    return (
        "Auth: any non-empty bearer key is accepted, e.g. "
        f"'Authorization: Bearer {DEFAULT_API_KEY}' (no real key needed)"
    )


if __name__ == "__main__":
    sys.exit(main())
