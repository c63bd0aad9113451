"""Cache keys: a 16-byte digest of everything that decides an output, and never of who asked.

:func:`cache_key` hashes any JSON value (canonical: sorted keys, no whitespace). What goes into the
value is the caller's decision. Each kind of request has its own material, which names its kind first,
so a key of one kind never equals a key of another (a chat key is never an embeddings key).

:func:`chat_key_material` is the one for chat completions, shared by the chat operator and both bulk
engines so that the same request finds the same entry whoever sent it:

* the model, the provider routing the user asked for (not what an engine adds by itself);
* the request body: messages, ``response_format`` and every request parameter;
* the output check (the original JSON Schema the reply is validated against) and the repair policy
  (a reply repaired once may differ from one never repaired).

:func:`embeddings_key_material` is the one for one input of an embeddings request: the model, the
provider routing the user asked for, and the request body of that input exactly as it is sent
(``input``, ``dimensions``, ``encoding_format``, ``input_type``...).

Left out of both: the item id, and the attribution fields (``user``, ``session_id``, ``metadata``), which name
the pipeline and the try that sent a request, not what it asks for -- a retry must hit the entries of
the try before it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_openrouter.schemas import OutputSpec

__all__ = [
    "ATTRIBUTION_FIELDS",
    "ChatKeys",
    "cache_key",
    "chat_key_material",
    "embeddings_key_material",
    "output_identity",
]

#: Body fields that say who sent a request, not what it asks: never part of a key.
ATTRIBUTION_FIELDS = frozenset({"user", "session_id", "metadata"})
# Body fields that change how an answer arrives, not what it says.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options"})
_NOT_IN_REQUEST = ATTRIBUTION_FIELDS | _DELIVERY_FIELDS | {"model", "provider"}
KEY_VERSION = 1


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(material: Any) -> bytes:
    """The 16-byte key of *material*, any JSON value (dict keys in any order give the same key).

    :raises TypeError: *material* holds a value that is not JSON (a key must not depend on a repr).
    """
    return hashlib.sha256(_canonical(material).encode()).digest()[:16]


def output_identity(spec: OutputSpec) -> Any:
    """What a reply is checked against: the kind of output and, for a schema, the original schema."""
    return {"kind": type(spec).__name__, "schema": getattr(spec, "schema", None)}


def chat_key_material(
    *,
    model: str,
    body: Mapping[str, Any],
    provider: Mapping[str, Any] | None,
    spec: OutputSpec,
    max_repair_attempts: int,
) -> dict[str, Any]:
    """The key material of one chat completion (see the module docstring). *body* is the request body
    with or without ``model`` and ``provider`` (both are taken from the arguments)."""
    request = {k: v for k, v in body.items() if k not in _NOT_IN_REQUEST}
    return {
        "kind": "chat",
        "v": KEY_VERSION,
        "model": model,
        "provider": dict(provider) if provider else None,
        "request": request,
        "output": output_identity(spec),
        "repair": {"max_repair_attempts": max_repair_attempts},
    }


def embeddings_key_material(
    *, model: str, body: Mapping[str, Any], provider: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The key material of one embeddings input (see the module docstring). *body* is the request
    body of that one input, with or without ``model`` and ``provider``."""
    return {
        "kind": "embeddings",
        "v": KEY_VERSION,
        "model": model,
        "provider": dict(provider) if provider else None,
        "request": {k: v for k, v in body.items() if k not in _NOT_IN_REQUEST},
    }


class ChatKeys:
    """:func:`cache_key` of :func:`chat_key_material` for many bodies of one job, fast: everything but
    the request is the same for every item, so its canonical JSON is made once. Gives exactly the keys
    ``cache_key(chat_key_material(...))`` gives (a chat task and a bulk item share their entries)."""

    def __init__(
        self,
        *,
        model: str,
        provider: Mapping[str, Any] | None,
        spec: OutputSpec,
        max_repair_attempts: int,
    ) -> None:
        material = chat_key_material(
            model=model, body={}, provider=provider, spec=spec, max_repair_attempts=max_repair_attempts
        )
        # Sorted keys: ... "repair", "request", "v". Split the canonical JSON around the request.
        marker = '"request":{}'
        text = _canonical(material)
        self._prefix, self._suffix = (part.encode() for part in text.split(marker))
        self._prefix += b'"request":'

    def key(self, body: Mapping[str, Any]) -> bytes:
        request = _canonical({k: v for k, v in body.items() if k not in _NOT_IN_REQUEST}).encode()
        return hashlib.sha256(self._prefix + request + self._suffix).digest()[:16]
