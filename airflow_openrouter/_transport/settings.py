"""What the transport needs from an ``openrouter`` connection (read by :mod:`.connection`).

:class:`ClientSettings` is the one place the connection's defaults are written: the hook, the provider
info's connection form and the README take them from here. Nothing from Airflow is imported here:
``get_provider_info()`` reads these defaults while Airflow's configuration is still loading.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from airflow_openrouter import __version__
from airflow_openrouter._text import redact

__all__ = ["API_KEY_ENV_VAR", "DEADLINE_FACTOR", "EXTRA_TYPES", "ClientSettings", "connection_defaults"]

API_KEY_ENV_VAR = "OPENROUTER_API_KEY"
#: ``request_deadline`` defaults to this many times the read timeout.
DEADLINE_FACTOR = 10


@dataclass(frozen=True)
class ClientSettings:
    """Everything the transport needs from a connection. ``api_key`` is kept out of ``repr``.

    :param timeout: read timeout, in seconds: the longest wait for the next bytes of an answer (for a
        stream, between two chunks).
    :param connect_timeout: seconds to open a connection.
    :param max_retries: retries of a retryable failure, after the first try.
    :param request_deadline: seconds one attempt may take in all, from sending to the last byte (for a
        stream, to its end). ``None``: ``DEADLINE_FACTOR`` (10) times ``timeout``.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    default_model: str | None = None
    site_url: str | None = None
    app_name: str | None = None
    timeout: float = 120.0
    connect_timeout: float = 10.0
    max_retries: int = 4
    request_deadline: float | None = None

    @property
    def deadline(self) -> float:
        """Seconds one attempt may take in all (``request_deadline`` or its default)."""
        return self.request_deadline if self.request_deadline is not None else DEADLINE_FACTOR * self.timeout

    def headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": f"airflow-openrouter/{__version__}",
        }
        if self.site_url:
            headers["HTTP-Referer"] = self.site_url
        if self.app_name:
            # X-Title is the legacy name; OpenRouter still reads it, so older dashboards keep working.
            headers["X-OpenRouter-Title"] = self.app_name
            headers["X-Title"] = self.app_name
        return headers

    def redact(self, text: str) -> str:
        """``text`` (an exception's, a server's) safe to put in a message: without this key."""
        return redact(text, self.api_key)


# Connection extras read into ClientSettings: name -> type. The UI stores them by bare name; the legacy
# ``extra__openrouter__<name>`` form is read too.
EXTRA_TYPES: dict[str, type] = {
    "default_model": str,
    "site_url": str,
    "app_name": str,
    "timeout": float,
    "connect_timeout": float,
    "max_retries": int,
    "request_deadline": float,
}


def connection_defaults() -> dict[str, Any]:
    """The default of every connection extra, from :class:`ClientSettings`."""
    fields = {f.name: f.default for f in dataclasses.fields(ClientSettings)}
    return {name: fields[name] for name in EXTRA_TYPES}
