"""The HTTP transport under :class:`~airflow_openrouter.hooks.openrouter.OpenRouterHook`, one module a job:

=================  =====================================================================================
``settings``       :class:`ClientSettings`: what a connection gives the transport, and its defaults
``connection``     reading a connection into settings: the API key's rules, connections that do not exist
``retry``          :class:`RetryPolicy` (whether and when to retry) and ``Retry-After`` parsing
``wire``           JSON bytes (msgspec), absolute URLs built once per path, the :class:`Answer` read back
``errors``         from an error answer or a failed request to the typed error, with advice, redacted
``calls``          :class:`Call` and the request builders of every endpoint (``chat_body`` among them)
``sockets``        the sync client's per-attempt deadline (``request_deadline``) and open connections
``aio``            the async client's aiohttp session, and its failures said as httpx's exceptions
``clients``        :class:`SyncTransport` (httpx) / :class:`AsyncTransport` (aiohttp): send, retry, log
``pagination``     the results pages of a batch, checked as they come
=================  =====================================================================================

A module imports only those above it in this table (and ``exceptions``, ``types``, ``_text``;
``clients`` also ``_streaming``); aiohttp is imported only when an async client is made. The public
names are re-exported by :mod:`airflow_openrouter.hooks.openrouter`. Importing this package is free,
names load on first use:
``get_provider_info()`` reads the connection defaults while Airflow's configuration is loading.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_openrouter._transport.calls import Call, chat_body, drop_none
    from airflow_openrouter._transport.clients import OFF_LOOP_BODY_BYTES, AsyncTransport, SyncTransport
    from airflow_openrouter._transport.retry import RetryPolicy
    from airflow_openrouter._transport.settings import ClientSettings
    from airflow_openrouter.exceptions import TRANSIENT_STATUSES as RETRYABLE_STATUSES

__all__ = [
    "OFF_LOOP_BODY_BYTES",
    "RETRYABLE_STATUSES",
    "AsyncTransport",
    "Call",
    "ClientSettings",
    "RetryPolicy",
    "SyncTransport",
    "chat_body",
    "drop_none",
]

_WHERE = {
    "Call": "calls",
    "chat_body": "calls",
    "drop_none": "calls",
    "OFF_LOOP_BODY_BYTES": "clients",
    "AsyncTransport": "clients",
    "SyncTransport": "clients",
    "RetryPolicy": "retry",
    "ClientSettings": "settings",
}


def __getattr__(name: str) -> Any:
    if name == "RETRYABLE_STATUSES":  # the old name of exceptions.TRANSIENT_STATUSES
        from airflow_openrouter.exceptions import TRANSIENT_STATUSES

        return TRANSIENT_STATUSES
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
