"""Draw ``quarterly_revenue.png``, the chart used by ``example_vision.py``, with the standard library only.

Run ``python example_dags/data/draw_chart.py`` to redraw it. The chart is a plain bar chart with the
values printed above the bars, so that a vision model (or a person) can read the numbers off it.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

TITLE = "REVENUE BY QUARTER 2026 (K EUR)"
BARS = [("Q1", 120), ("Q2", 185), ("Q3", 140), ("Q4", 210)]
OUT = Path(__file__).with_name("quarterly_revenue.png")

WIDTH, HEIGHT, SCALE = 480, 320, 2
WHITE, INK, GRID = (255, 255, 255), (40, 40, 40), (210, 210, 210)
BAR_COLOURS = [(70, 130, 180), (70, 130, 180), (70, 130, 180), (220, 120, 40)]

# A 5x7 bitmap font with just the characters the chart needs ('#' = ink).
GLYPHS = {
    "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    "3": ["####.", "....#", "....#", ".###.", "....#", "....#", "####."],
    "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    "6": [".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."],
    "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    "9": [".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."],
    "A": [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "B": ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."],
    "E": ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
    "K": ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
    "N": ["#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"],
    "Q": [".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"],
    "R": ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"],
    "T": ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
    "U": ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
    "V": ["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."],
    "Y": ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."],
    "(": ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."],
    ")": [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."],
    " ": ["....."] * 7,
}


def draw() -> bytes:
    pixels = [[WHITE] * WIDTH for _ in range(HEIGHT)]

    def rect(x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int]) -> None:
        for y in range(max(0, y0), min(HEIGHT, y1)):
            pixels[y][max(0, x0) : min(WIDTH, x1)] = [colour] * (min(WIDTH, x1) - max(0, x0))

    def text(x: int, y: int, s: str, scale: int = SCALE) -> None:
        for i, ch in enumerate(s):
            for row, line in enumerate(GLYPHS[ch]):
                for col, cell in enumerate(line):
                    if cell == "#":
                        px, py = x + (i * 6 + col) * scale, y + row * scale
                        rect(px, py, px + scale, py + scale, INK)

    def text_width(s: str, scale: int = SCALE) -> int:
        return (len(s) * 6 - 1) * scale

    text((WIDTH - text_width(TITLE)) // 2, 14, TITLE)
    left, right, top, bottom = 40, WIDTH - 20, 60, HEIGHT - 40
    top_value = 250
    for value in range(0, top_value + 1, 50):  # light grid lines every 50
        y = bottom - (bottom - top) * value // top_value
        rect(left, y, right, y + 1, GRID)
    rect(left, top, left + 2, bottom, INK)  # y axis
    rect(left, bottom, right, bottom + 2, INK)  # x axis
    slot = (right - left) // len(BARS)
    for i, ((label, value), colour) in enumerate(zip(BARS, BAR_COLOURS, strict=True)):
        x0 = left + i * slot + slot // 4
        x1 = x0 + slot // 2
        y0 = bottom - (bottom - top) * value // top_value
        rect(x0, y0, x1, bottom, colour)
        centre = (x0 + x1) // 2
        text(centre - text_width(str(value)) // 2, y0 - 20, str(value))
        text(centre - text_width(label) // 2, bottom + 12, label)
    return _png(pixels)


def _png(pixels: list[list[tuple[int, int, int]]]) -> bytes:
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", len(pixels[0]), len(pixels), 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


if __name__ == "__main__":
    OUT.write_bytes(draw())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
