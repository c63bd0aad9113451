"""A result cache on object storage: outputs already paid for are found again by what was asked.

Engine-agnostic: a caller computes a key from whatever decides its output (:func:`cache_key` of any
JSON value; :func:`chat_key_material` for chat completions, :func:`embeddings_key_material` for one
embeddings input) and stores a JSON entry (a result row) under it::

    from airflow_openrouter.cache import ResultCache, cache_key

    cache = ResultCache("s3://bucket/openrouter-cache", namespace=model, ttl=7 * 86400)
    keys = [(i, cache_key({"model": model, "input": text, "dimensions": 256})) for i, text in enumerate(texts)]
    hits = cache.lookup(keys)                   # reads the segments' indexes only
    for hit in hits.entries():                  # hit.position, hit.entry, hit.created_at
        ...
    with cache.writer() as writer:              # one new segment file when the block ends
        writer.add(keys[7][1], {"status": "succeeded", "output": [...]})

Storage format, concurrency and memory: see :mod:`.store` and :mod:`._segment`. Nothing here is
imported when a DAG file is parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_openrouter.cache.keys import (
    ATTRIBUTION_FIELDS,
    ChatKeys,
    cache_key,
    chat_key_material,
    embeddings_key_material,
    output_identity,
)
from airflow_openrouter.cache.store import CacheHit, CacheHits, CacheWriter, ResultCache

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "ATTRIBUTION_FIELDS",
    "CacheHit",
    "CacheHits",
    "CacheWriter",
    "ChatKeys",
    "ResultCache",
    "cache_key",
    "chat_key_material",
    "configured_root",
    "embeddings_key_material",
    "output_identity",
]


def configured_root(explicit: Any) -> str | ObjectStoragePath | None:
    """The cache root an operator uses: *explicit* (a URI or ``ObjectStoragePath``), ``None`` for the
    deployment-wide ``[openrouter] result_cache`` (empty: no cache), ``False`` or ``""`` for none."""
    if explicit is False or explicit == "":
        return None
    if explicit is not None:
        return explicit
    from airflow_openrouter._compat import conf

    configured = conf.get("openrouter", "result_cache", fallback="") or ""
    return configured.strip() or None
