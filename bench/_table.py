"""The results table: printed as text, written as Markdown (``bench/RESULTS.md``) and as JSON."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench._common import Row

COLUMNS = ("benchmark", "figure", "baseline", "ratio", "goal", "status")


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    text = f"{value:,.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def cells(row: Row) -> tuple[str, ...]:
    baseline = number(row.baseline, row.unit)
    if row.baseline is not None and row.baseline_label:
        baseline = f"{baseline} ({row.baseline_label})"
    ratio = "-" if row.ratio is None else f"{row.ratio:.3g}"
    return (
        row.name,
        number(row.figure, row.unit),
        baseline,
        ratio,
        row.goal.text if row.goal else "reported",
        row.status,
    )


def render_text(rows: Sequence[Row]) -> str:
    table = [COLUMNS, *map(cells, rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    return "\n".join(lines + (["", "Notes:", *notes] if notes else []))


def render_markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    notes = [f"- **{row.name}**: {row.note}" for row in rows if row.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        # Shared machines: the load next to the run says how much of the cores the run could have.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def write_json(rows: Sequence[Row], path: Path, *, command: str, quick: bool) -> None:
    document = {**machine(), "command": command, "quick": quick, "rows": [row.to_json() for row in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n")
