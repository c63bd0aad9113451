"""What goes over the wire, whichever HTTP client carries it (httpx for the sync transport, aiohttp for
the async one): JSON as bytes, the absolute URL of each path, and the :class:`Answer` read back.

* JSON is encoded and decoded by msgspec, which Airflow installs: about 15 times faster than ``json`` to
  encode a request and 3 times to decode an answer. A body is written compactly, as UTF-8 without
  escapes, in the dict's insertion order, which the Batch API depends on (``endpoint`` and ``model``
  before ``requests``). Text that is not JSON raises ``ValueError``, as ``json.loads`` does.
* Absolute URLs are built once per path: httpx re-parses the base URL and merges it into every relative
  one (about 100 µs a call), and aiohttp parses every URL string it is given.
* The proxy is the one the environment names for the base URL (:func:`environment_proxy`), read once
  per client by both clients alike.
* A streamed body is split into lines at ``\\n`` (and ``\\r\\n``) only, by :class:`LineSplitter`: a JSON
  string may hold a raw U+2028, U+2029 or U+0085 (JavaScript's ``JSON.stringify`` leaves them), at which
  ``str.splitlines``, and so httpx's ``iter_lines``, would cut an event in two.
"""

from __future__ import annotations

import codecs
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["Answer", "LineSplitter", "Urls", "decode_json", "encode_json", "environment_proxy"]

U = TypeVar("U")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
# Paths with an id in them (``/batches/{id}``) are many over a long-lived hook: keep the newest few.
_URLS_KEPT = 256


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, keys in insertion order."""
    return _encoder.encode(value)


def decode_json(content: bytes | str) -> Any:
    """The JSON value of ``content``; ``ValueError`` (``msgspec.DecodeError``) when it is not JSON."""
    return _decoder.decode(content)


def environment_proxy(url: str) -> str | None:
    """The proxy URL the environment names for ``url`` (``HTTPS_PROXY`` / ``HTTP_PROXY`` by its scheme,
    else ``ALL_PROXY``; lower case first), or ``None``, also when ``NO_PROXY`` covers its host."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


class Answer:
    """A whole HTTP answer, read: all that the error mapper and the parsers need, from either client.

    ``headers`` is case-insensitive (``httpx.Headers``, or aiohttp's ``CIMultiDictProxy``).
    """

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return decode_json(self.content)


class Urls(Generic[U]):
    """The absolute URL of each API path under ``base_url``, built (by ``make``: ``httpx.URL``,
    ``yarl.URL``) once per path."""

    def __init__(self, base_url: str, make: Callable[[str], U]) -> None:
        self._base = base_url.rstrip("/")
        self._make = make
        self._built: dict[str, U] = {}

    def __call__(self, path: str) -> U:
        url = self._built.get(path)
        if url is None:
            if len(self._built) >= _URLS_KEPT:
                self._built.clear()
            url = self._built[path] = self._make(f"{self._base}/{path.lstrip('/')}")
        return url


class LineSplitter:
    """The lines of a body that arrives in chunks, without their ends (``\n`` or ``\r\n``)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that ``chunk`` completes."""
        text = self._decoder.decode(chunk)
        if "\n" not in text:
            self._pending.append(text)
            return []
        *lines, rest = text.split("\n")
        lines[0] = "".join(self._pending) + lines[0]
        self._pending = [rest]
        return [line[:-1] if line.endswith("\r") else line for line in lines]

    def close(self) -> list[str]:
        """The last line, when the body did not end with a line end."""
        rest = "".join(self._pending) + self._decoder.decode(b"", final=True)
        self._pending = []
        return [rest.removesuffix("\r")] if rest else []
