"""Scenario files: latency settings and a list of faults, read and checked here, applied by
``OpenRouterEmulator.apply_scenario()`` (this module knows nothing of the emulator's internals)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fault entries may call exactly these emulator methods (keyword arguments as in the Python API).
FAULTS = frozenset(
    {
        "fail_next",
        "drop_connection_next",
        "error_body_next",
        "non_json_next",
        "cut_stream_next",
        "stream_error_next",
        "invalid_output_next",
        "batch_outcome_next",
        "batch_item_errors_next",
        "batch_invalid_output_next",
        "batch_payment_required_until_credits",
        "batch_not_found_for",
    }
)
_SETTINGS = {"latency_ms", "latency_jitter_ms", "token_delay_ms", "credits", "faults"}


@dataclass(frozen=True)
class Scenario:
    """A checked scenario: settings (``None`` = leave as is) and faults as (method name, kwargs)."""

    latency_ms: float | None = None
    latency_jitter_ms: float | None = None
    token_delay_ms: float | None = None
    credits: float | None = None
    faults: tuple[tuple[str, dict[str, Any]], ...] = field(default=())


def load_scenario(source: str | Path | dict[str, Any] | list[Any]) -> Scenario:
    """Read a scenario (path, JSON text, dict, or a bare list of faults) and check its shape."""
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(("{", "["))):
        source = json.loads(Path(source).read_text())
    elif isinstance(source, str):
        source = json.loads(source)
    scenario: Any = {"faults": source} if isinstance(source, list) else source
    if not isinstance(scenario, dict):
        raise ValueError("a scenario is a JSON object or a list of faults")
    unknown = set(scenario) - _SETTINGS
    if unknown:
        raise ValueError(f"unknown scenario keys {sorted(unknown)}; allowed: {sorted(_SETTINGS)}")
    faults = []
    for entry in scenario.get("faults", []):
        if not isinstance(entry, dict) or entry.get("fault") not in FAULTS:
            raise ValueError(f"each fault needs 'fault' set to one of {sorted(FAULTS)}: {entry!r}")
        faults.append((entry["fault"], {k: v for k, v in entry.items() if k != "fault"}))
    return Scenario(
        latency_ms=scenario.get("latency_ms"),
        latency_jitter_ms=scenario.get("latency_jitter_ms"),
        token_delay_ms=scenario.get("token_delay_ms"),
        credits=scenario.get("credits"),
        faults=tuple(faults),
    )
