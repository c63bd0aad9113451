"""Scenario files: latency settings and a list of faults, applied to an emulator at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._emulator import OpenRouterEmulator

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


def load_scenario(source: str | Path | dict[str, Any] | list[Any]) -> dict[str, Any]:
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
    for entry in scenario.get("faults", []):
        if not isinstance(entry, dict) or entry.get("fault") not in FAULTS:
            raise ValueError(f"each fault needs 'fault' set to one of {sorted(FAULTS)}: {entry!r}")
    return scenario


def apply_scenario(emulator: OpenRouterEmulator, scenario: dict[str, Any]) -> None:
    if "latency_ms" in scenario or "latency_jitter_ms" in scenario:
        emulator.set_latency(scenario.get("latency_ms", 0), scenario.get("latency_jitter_ms", 0))
    if "token_delay_ms" in scenario:
        emulator._state.token_delay_s = scenario["token_delay_ms"] / 1000
    if "credits" in scenario:
        emulator.set_credits(scenario["credits"])
    for entry in scenario.get("faults", []):
        kwargs = {k: v for k, v in entry.items() if k != "fault"}
        getattr(emulator, entry["fault"])(**kwargs)
