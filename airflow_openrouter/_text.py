"""Text that goes into error messages and logs: sentences joined once, secrets redacted, long text cut.

Rules:

* A message built from OpenRouter's words and our advice is joined by :func:`join_sentences`, so that
  ``User not found.`` + ``Check the API key`` reads ``User not found. Check the API key.``, never
  ``User not found.. Check``.
* Text this provider did not write (an httpx/h11/httpcore exception, a proxy's error page, a validation
  error quoting a body) passes through :func:`redact` before it is quoted anywhere: h11, for one, quotes
  the whole ``Authorization`` header when it rejects it.
* A key is shown, when at all, as :func:`mask_key` makes it: the public prefix and the last three
  characters, as openrouter.ai itself shows keys.
"""

from __future__ import annotations

import re

__all__ = ["excerpt", "join_sentences", "mask_key", "redact", "safe_label"]

_SENTENCE_END = (".", "!", "?", "…", ":")
# "Bearer <credential>" as it appears in header reprs: b'Bearer sk-or-v1-abc\n', "Bearer sk-…".
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|\\x20)[^\s'\"]+")
# Anything shaped like an OpenRouter key, including one this provider was never given.
_KEY_SHAPED = re.compile(r"sk-or-[A-Za-z0-9_-]{12,}")
REDACTED = "***"


def join_sentences(*parts: str | None) -> str:
    """The non-empty ``parts`` as sentences: stripped, ended with a period unless they end with
    punctuation already (``.!?…:``), separated by one space."""
    sentences = []
    for part in parts:
        text = (part or "").strip()
        if text:
            sentences.append(text if text.endswith(_SENTENCE_END) else text + ".")
    return " ".join(sentences)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without any of ``secrets`` (as given and stripped), bearer credentials or key-shaped
    strings."""
    for secret in secrets:
        for variant in {secret or "", (secret or "").strip()}:
            if len(variant) >= 4:  # replacing a one-letter test key would garble every message
                text = text.replace(variant, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _KEY_SHAPED.sub("sk-or-" + REDACTED, text)


def mask_key(key: str) -> str:
    """A form of ``key`` safe to show: ``sk-or-v1-abc…xyz`` for a real-sized key, ``***`` otherwise."""
    if len(key) < 24:
        return REDACTED
    return f"{key[:12]}…{key[-3:]}"


def safe_label(label: str | None, key: str) -> str:
    """A key's label fit to show, unless it holds the key, a long piece of it, or anything shaped like
    a key: then :func:`mask_key`."""
    if not label:
        return "(unlabelled)"
    pieces = {key[i : i + 16] for i in range(max(1, len(key) - 15))}
    if any(piece in label for piece in pieces) or redact(label, key) != label:
        return mask_key(key)
    return label


def excerpt(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
