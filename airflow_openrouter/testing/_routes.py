"""Route patterns shared by fault matching and the request journal.

A *route* is a path relative to ``/api/v1`` (``/api/beta/batches`` is the same route as
``/api/v1/batches``). A pattern matches a route segment by segment:

* a literal segment matches itself (``/chat/completions``);
* ``{name}`` or ``*`` matches any single segment (``/batches/{id}`` matches ``/batches/batch_1`` but
  not ``/batches/batch_1/results``);
* a trailing ``/**`` matches any remaining segments, including none (``/batches/**`` matches every
  batch route).
"""

from __future__ import annotations

from functools import lru_cache

API_PREFIXES = ("/api/v1", "/api/beta")


def relative_route(path: str) -> str:
    """``/api/v1/batches/x`` -> ``/batches/x``; paths outside the API are returned unchanged."""
    for prefix in API_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix) :] or "/"
    return path


@lru_cache(maxsize=256)
def _segments(pattern: str) -> tuple[str, ...]:
    return tuple(s for s in pattern.strip("/").split("/") if s)


def route_matches(pattern: str, route: str) -> bool:
    want = _segments(pattern)
    have = _segments(relative_route(route))
    if want and want[-1] == "**":
        want = want[:-1]
        have = have[: len(want)] if len(have) >= len(want) else have
    if len(want) != len(have):
        return False
    return all(
        w == h or w == "*" or (w.startswith("{") and w.endswith("}")) for w, h in zip(want, have, strict=True)
    )
