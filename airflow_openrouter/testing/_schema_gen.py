"""Deterministic JSON instances for a JSON Schema (the subset pydantic and OpenAI strict mode emit).

Supported: ``type`` (single or list, incl. "null"), object ``properties``/``required``/
``additionalProperties``, array ``items``/``prefixItems``/``minItems``/``maxItems``, ``enum``, ``const``,
``anyOf``/``oneOf``/``allOf``, ``$ref`` into ``$defs``/``definitions`` (recursion is cut off by
depth), string ``format`` (date, date-time, time, email, uri/url, uuid, ipv4, hostname),
``minLength``/``maxLength``, numeric ``minimum``/``maximum``/``exclusiveMinimum``/
``exclusiveMaximum``/``multipleOf``, and ``default``/``examples`` when present.

Limit: ``pattern`` is best effort. The generator tries a handful of candidates (prompt words, digits,
codes like ``ABC-123``, dates, e-mails, UUIDs...) and keeps the first that matches; when none does,
the value will not match the pattern. ``not``, ``if``/``then``/``else`` and ``dependentSchemas``
are ignored.

``violate()`` turns a valid instance into one that fails the schema (missing required property or a
wrong type), for the invalid-output faults.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import uuid
from typing import Any

_MAX_DEPTH = 6


class SchemaInstanceGenerator:
    def __init__(self, root: dict[str, Any], rng: random.Random, words: list[str]) -> None:
        self._root = root
        self._rng = rng
        self._words = words or ["alpha", "beta", "gamma", "delta"]

    def generate(self) -> Any:
        return self._value(self._root, depth=0, name="value")

    # -- dispatch --------------------------------------------------------------------------------

    def _resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            target = self._lookup(schema["$ref"])
            # Siblings of $ref (allowed since 2019-09) refine the target.
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self._root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node

    def _value(self, schema: Any, depth: int, name: str) -> Any:
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._rng.choice(schema["enum"])
        if "allOf" in schema:
            return self._value(self._merge_all_of(schema), depth, name)
        for keyword in ("anyOf", "oneOf"):
            if schema.get(keyword):
                return self._value(self._pick_branch(schema[keyword], depth), depth, name)
        kind = self._pick_type(schema, depth)
        if kind == "null":
            return None
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth, name)
        if kind == "boolean":
            return self._rng.random() < 0.5
        if kind in ("integer", "number"):
            return self._number(schema, integer=kind == "integer")
        return self._string(schema, name)

    def _merge_all_of(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self._resolve(part)
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = sorted({*merged.get("required", []), *value})
                else:
                    merged.setdefault(key, value)
        return merged

    def _pick_branch(self, branches: list[Any], depth: int) -> Any:
        # Prefer a non-null branch (Optional[X] is anyOf [X, null]); near the depth limit prefer null
        # so recursive models terminate.
        resolved = [self._resolve(b) for b in branches]
        nulls = [b for b in resolved if b.get("type") == "null"]
        others = [b for b in resolved if b.get("type") != "null"]
        if depth >= _MAX_DEPTH and nulls:
            return nulls[0]
        return self._rng.choice(others or nulls)

    def _pick_type(self, schema: dict[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, str):
            return declared
        if isinstance(declared, list) and declared:
            non_null = [t for t in declared if t != "null"]
            if depth >= _MAX_DEPTH and "null" in declared:
                return "null"
            return non_null[0] if non_null else "null"
        if "properties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    # -- kinds -----------------------------------------------------------------------------------

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        result: dict[str, Any] = {}
        for key, sub in properties.items():
            # Optional properties are filled too (like a diligent model), except deep in recursion.
            if key in required or depth < _MAX_DEPTH - 1:
                result[key] = self._value(sub, depth + 1, key)
        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, dict):
            result[self._word()] = self._value(extra, depth + 1, "value")
        return result

    def _array(self, schema: dict[str, Any], depth: int, name: str) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        low = max(int(schema.get("minItems", 1 if depth < _MAX_DEPTH else 0)), len(prefix))
        high = int(schema.get("maxItems", max(low, 3)))
        count = self._rng.randint(low, max(low, high)) if depth < _MAX_DEPTH else low
        items = [self._value(p, depth + 1, name) for p in prefix]
        item_schema = schema.get("items", {})
        while len(items) < count:
            items.append(self._value(item_schema, depth + 1, name))
        if schema.get("uniqueItems"):
            items = _unique(items)
        return items

    def _number(self, schema: dict[str, Any], integer: bool) -> int | float:
        low = schema.get("minimum", -math.inf)
        high = schema.get("maximum", math.inf)
        # A boolean exclusive bound is the draft-4 spelling; a number is the 2019+ spelling.
        ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        step = 1 if integer else 0.01
        if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
            low = max(low, ex_low + step)
        elif ex_low is True:
            low += step
        if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool):
            high = min(high, ex_high - step)
        elif ex_high is True:
            high -= step
        low = 0 if low == -math.inf else low
        high = max(low, low + 100 if high == math.inf else high)
        multiple = schema.get("multipleOf")
        if integer:
            value: int | float = self._rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
        else:
            value = round(self._rng.uniform(low, high), 2)
            value = min(max(value, low), high)
        if multiple:
            value = math.ceil(low / multiple) * multiple
            value = int(value) if integer else value
        return value

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        candidate = _FORMATS[fmt](self._rng, self._words) if fmt in _FORMATS else self._sentence_for(name)
        pattern = schema.get("pattern")
        if pattern:
            candidate = self._match_pattern(pattern, candidate)
        return _fit_length(candidate, schema.get("minLength"), schema.get("maxLength"), self._word)

    def _match_pattern(self, pattern: str, preferred: str) -> str:
        try:
            regex = re.compile(pattern)
        except re.error:
            return preferred
        word = self._word()
        candidates = [
            preferred,
            word,
            word.lower(),
            word.upper(),
            word.capitalize(),
            str(self._rng.randint(0, 9)),
            str(self._rng.randint(100, 999)),
            str(self._rng.randint(10000, 99999)),
            f"{word.upper()[:3]}-{self._rng.randint(100, 999)}",
            f"{word[:3].upper()}{self._rng.randint(100, 999)}",
            f"{word}-{self._word()}",
            f"{word}_{self._word()}",
            *(fmt(self._rng, self._words) for fmt in _FORMATS.values()),
            "+1-555-0100",
            "A",
            "a",
        ]
        # JSON Schema patterns are unanchored (search, not match).
        return next((c for c in candidates if regex.search(c)), preferred)

    # -- words -----------------------------------------------------------------------------------

    def _word(self) -> str:
        return self._rng.choice(self._words)

    def _sentence_for(self, name: str) -> str:
        lowered = name.lower()
        if any(hint in lowered for hint in ("name", "title", "label", "tag", "category", "keyword")):
            return " ".join(self._word().capitalize() for _ in range(self._rng.randint(1, 2)))
        count = self._rng.randint(3, 8)
        text = " ".join(self._word() for _ in range(count))
        return text[0].upper() + text[1:] + "."


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _fit_length(value: str, min_length: int | None, max_length: int | None, word: Any) -> str:
    while min_length is not None and len(value) < min_length:
        value = f"{value} {word()}".strip()
    if max_length is not None and len(value) > max_length:
        value = value[:max_length]
    return value


def _date(rng: random.Random, _: list[str]) -> str:
    return (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 730))).isoformat()


def _date_time(rng: random.Random, words: list[str]) -> str:
    return f"{_date(rng, words)}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"


def _time(rng: random.Random, _: list[str]) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"


def _email(rng: random.Random, words: list[str]) -> str:
    return f"{re.sub(r'[^a-z0-9]', '', rng.choice(words).lower()) or 'user'}@example.com"


def _uri(rng: random.Random, words: list[str]) -> str:
    return f"https://example.com/{re.sub(r'[^a-z0-9-]', '', rng.choice(words).lower()) or 'page'}"


def _uuid(rng: random.Random, _: list[str]) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ipv4(rng: random.Random, _: list[str]) -> str:
    return f"192.0.2.{rng.randint(1, 254)}"


def _hostname(rng: random.Random, words: list[str]) -> str:
    return _uri(rng, words).removeprefix("https://").split("/")[0]


_FORMATS = {
    "date": _date,
    "date-time": _date_time,
    "time": _time,
    "email": _email,
    "uri": _uri,
    "url": _uri,
    "uuid": _uuid,
    "ipv4": _ipv4,
    "hostname": _hostname,
}


def violate(instance: Any, schema: dict[str, Any]) -> Any:
    """Break a valid instance: drop a required property and give another one a wrong type."""
    if not isinstance(instance, dict) or not instance:
        # Not an object: any value of a different JSON type fails.
        return {"unexpected": "value"} if not isinstance(instance, dict) else "not an object"
    broken = dict(instance)
    resolved = SchemaInstanceGenerator(schema, random.Random(0), [])._resolve(schema)
    required = [key for key in resolved.get("required", []) if key in broken]
    if required:
        del broken[required[0]]
    for key, value in broken.items():
        broken[key] = (
            12345 if isinstance(value, str) else "not-a-number" if isinstance(value, (int, float)) else 0
        )
        break
    return broken
