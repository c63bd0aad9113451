"""Every request says which pipeline sent it: ``user``, ``session_id`` and OpenRouter ``metadata``.

Unless the user sets them (``user=...``, or ``extra_body={"session_id": ..., "metadata": {...}}``), each
request carries

* ``user``: ``airflow/{dag_id}/{task_id}`` -- a stable id per pipeline step. OpenRouter uses it for
  abuse isolation (a provider's block then hits one step, not the whole account) and shows it as the
  generation's ``external_user``;
* ``session_id``: ``airflow/{dag_id}/{task_id}/{run_id}[/{map_index}]`` -- groups a task run's requests
  (OpenRouter routes a session to one provider, which helps prompt caching; ``GET /generation`` shows
  it). Sync requests only: batch generations are not grouped by session, so batch bodies leave it out;
* ``metadata``: ``dag_id``, ``task_id``, ``run_id``, ``map_index`` and ``try_number``, as strings, to
  filter the activity page by DAG and task. Batch request bodies take the sync shape, so their
  ``metadata`` is kept (and checked) like a sync request's; the Batch API has no submission-level
  metadata, so none is sent there. A user's own ``metadata`` keeps every pair; ours fill the keys it does
  not have, up to the limit of 16 pairs.

**Limits** (the official ``ChatRequest``): 16 metadata pairs, keys up to 64 characters, values up to
512, ``session_id`` up to 256. Characters are counted as JavaScript does (UTF-16 code units: an emoji
counts 2). A value past its limit is cut on a character boundary and ends with ``~`` and 8 hex
characters of the whole value's SHA-256, so two long run ids never collide after cutting.

Attribution is added when a request is *sent*, never to what the run's fingerprint or the result cache
key is computed from: ``try_number`` changes on every retry, and a retry must still re-attach to its
batches and hit the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_METADATA_PAIRS", "Attribution", "fit"]

MAX_METADATA_PAIRS = 16
MAX_METADATA_VALUE = 512
MAX_SESSION_ID = 256
MAX_USER = 256
_HASH_CHARS = 8


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def fit(text: str, limit: int) -> str:
    """*text* within *limit* UTF-16 code units: unchanged when it fits, else a prefix cut on a character
    boundary plus ``~`` and a short hash of the whole (see the module docstring)."""
    if _utf16_length(text) <= limit:
        return text
    suffix = "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    room = limit - len(suffix)
    kept, used = [], 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > room:
            break
        kept.append(char)
        used += width
    return "".join(kept) + suffix


@dataclass(frozen=True)
class Attribution:
    """The attribution of one try of one task run."""

    user: str
    session_id: str
    metadata: Mapping[str, str]

    @classmethod
    def of(cls, *, dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int) -> Attribution:
        mapped = f"/{map_index}" if map_index is not None and map_index >= 0 else ""
        return cls(
            user=fit(f"airflow/{dag_id}/{task_id}", MAX_USER),
            session_id=fit(f"airflow/{dag_id}/{task_id}/{run_id}{mapped}", MAX_SESSION_ID),
            metadata={
                "dag_id": fit(dag_id, MAX_METADATA_VALUE),
                "task_id": fit(task_id, MAX_METADATA_VALUE),
                "run_id": fit(run_id, MAX_METADATA_VALUE),
                "map_index": str(map_index if map_index is not None else -1),
                "try_number": str(try_number),
            },
        )

    @classmethod
    def of_context(cls, context: Mapping[str, Any], *, metadata: bool = True) -> Attribution | None:
        """The attribution of the task run *context* describes (``None`` when it names no DAG, task and
        run, e.g. an operator executed by hand outside Airflow).

        :param metadata: ``False`` for an endpoint whose requests take no ``metadata`` (embeddings).
        """
        ti = context.get("ti")
        dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None)
        task_id = getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", None)
        run_id = getattr(ti, "run_id", None) or context.get("run_id")
        if not (isinstance(dag_id, str) and isinstance(task_id, str) and isinstance(run_id, str)):
            return None
        map_index = getattr(ti, "map_index", -1)
        try_number = getattr(ti, "try_number", 1)
        attribution = cls.of(
            dag_id=dag_id,
            task_id=task_id,
            run_id=run_id,
            map_index=map_index if isinstance(map_index, int) else -1,
            try_number=try_number if isinstance(try_number, int) else 1,
        )
        return attribution if metadata else dataclasses.replace(attribution, metadata={})

    def fields_for(self, body: Mapping[str, Any], *, batch: bool = False) -> dict[str, Any]:
        """The attribution fields to add to *body*: those it does not set (metadata: merged)."""
        fields: dict[str, Any] = {}
        if body.get("user") is None:
            fields["user"] = self.user
        if not batch and body.get("session_id") is None:
            fields["session_id"] = self.session_id
        theirs = body.get("metadata")
        if theirs is None or isinstance(theirs, Mapping):
            merged = dict(theirs or {})
            for key, value in self.metadata.items():
                if key not in merged and len(merged) < MAX_METADATA_PAIRS:
                    merged[key] = value
            if merged != (theirs or {}):
                fields["metadata"] = merged
        return fields

    def applied(self, body: Mapping[str, Any], *, batch: bool = False) -> dict[str, Any]:
        """*body* with the attribution fields it lacks."""
        return {**body, **self.fields_for(body, batch=batch)}

    def applied_to_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Hook keyword arguments (request fields plus ``extra_body``) with the fields they lack; a field
        the user put in ``extra_body`` is merged there (``extra_body`` wins in the request body)."""
        extra = dict(params.get("extra_body") or {})
        fields = self.fields_for({**params, **extra})
        out = dict(params)
        for name, value in fields.items():
            if name in extra:
                extra[name] = value
            else:
                out[name] = value
        if extra:
            out["extra_body"] = extra
        return out
