"""Reading an ``openrouter`` connection into :class:`ClientSettings`, and the errors of a bad one.

The rules for the API key:

* surrounding whitespace is stripped (a key read from a secret file usually ends with a newline);
* any other control, space or non-ASCII character is an :class:`OpenRouterConfigError` that names the
  connection and the character's position, never the key;
* the password of the connection comes first. ``OPENROUTER_API_KEY`` is used when that password is
  empty, or when the *default* connection does not exist; a connection id that does not exist is an
  error, whatever the environment holds (a typo must not send billed traffic with another key).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from airflow_openrouter import DEFAULT_BASE_URL
from airflow_openrouter._transport.settings import API_KEY_ENV_VAR, EXTRA_TYPES, ClientSettings
from airflow_openrouter.exceptions import (
    OpenRouterConfigError,
    OpenRouterConnectionLookupError,
    OpenRouterMissingKeyError,
)

__all__ = ["build_settings", "checked_key", "connection_not_found", "connection_outside_task"]

# Extras that must be positive (0 retries is fine; a 0 s timeout is not).
_POSITIVE = frozenset({"timeout", "connect_timeout", "request_deadline"})


# An airflow.sdk Connection, or (outside a task) the metadata database's airflow.models.Connection.
_Connection = Any


def build_settings(
    conn_id: str,
    conn: _Connection | None,
    extra: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any],
    log: logging.Logger | Any,
) -> ClientSettings:
    """The settings of connection ``conn_id``. ``conn`` is ``None`` when it does not exist, which the
    caller allows only for the default connection id (any other id that does not exist is an error).

    ``overrides`` are the hook's own arguments (``timeout=``, ``max_retries=``), applied when not None.
    """
    values = {name: _extra(extra, name, kind, conn_id) for name, kind in EXTRA_TYPES.items()}
    values = {name: value for name, value in values.items() if value is not None}
    values.update({name: value for name, value in overrides.items() if value is not None})
    return ClientSettings(
        conn_id=conn_id,
        base_url=_base_url(conn),
        api_key=_api_key(conn_id, conn, log=log),
        **values,
    )


def _api_key(conn_id: str, conn: _Connection | None, *, log: Any) -> str:
    if conn is not None:
        key = checked_key(conn.password, conn_id=conn_id, where="the password (API Key)")
        if key:
            log.info("Using the API key of connection %r.", conn_id)
            return key
    env_key = checked_key(
        os.environ.get(API_KEY_ENV_VAR), conn_id=conn_id, where=f"the {API_KEY_ENV_VAR} environment variable"
    )
    why = "has no API key" if conn is not None else "does not exist"
    if env_key:
        log.info("Connection %r %s; using %s from the environment.", conn_id, why, API_KEY_ENV_VAR)
        return env_key
    raise OpenRouterMissingKeyError(
        f"No OpenRouter API key: connection {conn_id!r} {why} and {API_KEY_ENV_VAR} is not set. Set the "
        f"password (API Key) of connection {conn_id!r}, or the {API_KEY_ENV_VAR} environment variable.",
        status=None,
    )


def connection_outside_task(conn_id: str, default_conn_id: str, log: Any) -> _Connection | None:
    """After Airflow's lookup found nothing: the connection from the metadata database when this is not
    a task (Airflow's lookup skips the database there); else ``None`` for the default connection
    (``OPENROUTER_API_KEY`` may stand in), or the not-found error for any other id."""
    from airflow_openrouter._compat import in_task_process, metadata_db_connection

    outside, db_error = not in_task_process(), None
    if outside:
        try:
            conn = metadata_db_connection(conn_id)
        except Exception as exc:  # no metadata database here: say so in the not-found error
            conn, db_error = None, exc
        if conn is not None:
            log.info("Outside a task: read connection %r from the metadata database.", conn_id)
            return conn
    if conn_id == default_conn_id:
        return None
    raise connection_not_found(conn_id, read_db_directly=outside, db_error=db_error)


def connection_not_found(
    conn_id: str, *, read_db_directly: bool, db_error: Exception | None
) -> OpenRouterConfigError | OpenRouterConnectionLookupError:
    """The error for a connection id that does not exist (never replaced by ``OPENROUTER_API_KEY``):
    permanent, unless a secrets backend is configured, since Airflow reports a backend that could not
    answer as "not found" too (then a retry looks again)."""
    from airflow_openrouter._compat import secrets_backend_name

    places = [f"the environment variable AIRFLOW_CONN_{conn_id.upper()}"]
    if backend := secrets_backend_name():
        places.append(f"the secrets backend {backend}")
    if db_error is not None:
        places.append(f"the metadata database, which could not be read here ({type(db_error).__name__})")
    elif read_db_directly:
        places.append("the metadata database (read by the hook: this is not a task)")
    else:
        places.append("the metadata database (through the API server)")
    env = (
        f" {API_KEY_ENV_VAR} stands in only for the default connection, never for a connection id that "
        "does not exist."
        if os.environ.get(API_KEY_ENV_VAR)
        else ""
    )
    message = (
        f"Connection {conn_id!r} does not exist. Airflow looked in {', '.join(places[:-1])} and "
        f"{places[-1]}. Create it (Admin > Connections, or: airflow connections add {conn_id} "
        f"--conn-type openrouter --conn-password <API key>), or correct openrouter_conn_id.{env}"
    )
    if backend:
        return OpenRouterConnectionLookupError(
            f"{message} Airflow reports a secrets backend that could not answer the same way, so the "
            "task may be retried: a retry looks again."
        )
    return OpenRouterConfigError(message)


def checked_key(raw: str | None, *, conn_id: str, where: str) -> str | None:
    """``raw`` without surrounding whitespace (``None`` when nothing is left); a key with any other
    character a header cannot carry, or a real key never has, is an error that never shows the key."""
    key = (raw or "").strip()
    if not key:
        return None
    for position, char in enumerate(key, start=1):
        if "!" <= char <= "~":  # printable ASCII, no space
            continue
        what = "a space" if char == " " else f"the character U+{ord(char):04X}"
        hint = (
            " Paste the key alone, without the 'Bearer ' prefix."
            if key[:7].lower() == "bearer "
            else " API keys are plain ASCII: copy the key again from https://openrouter.ai/settings/keys."
        )
        raise OpenRouterConfigError(
            f"Connection {conn_id!r}: {where} holds an API key with {what} at position {position} of "
            f"{len(key)}.{hint}"
        )
    return key


def _extra(extra: Mapping[str, Any], name: str, kind: type, conn_id: str) -> Any:
    value = extra.get(name, extra.get(f"extra__openrouter__{name}"))
    if value is None or value == "":
        return None
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        converted = None
    if converted is None or (name in _POSITIVE and not converted > 0):  # not > 0: also NaN
        wanted = f"a positive {kind.__name__}" if name in _POSITIVE else f"a {kind.__name__}"
        raise OpenRouterConfigError(
            f"Connection {conn_id!r}: extra field {name!r} must be {wanted}, got {value!r}."
        )
    if name == "max_retries" and converted < 0:
        raise OpenRouterConfigError(
            f"Connection {conn_id!r}: extra field 'max_retries' must be 0 or more, got {value!r}."
        )
    return converted


def _base_url(conn: _Connection | None) -> str:
    """The API base URL: the connection's host as typed in the UI (a full URL), or built from the parts a
    URI-style connection (``openrouter://:KEY@host:port/api%2Fv1``) splits it into."""
    if conn is None or not conn.host:
        return DEFAULT_BASE_URL
    if "://" in conn.host:
        return conn.host.rstrip("/")
    local = conn.host in ("localhost", "127.0.0.1", "::1")
    url = f"{'http' if local else 'https'}://{conn.host}"
    if conn.port:
        url += f":{conn.port}"
    if conn.schema:
        url += "/" + conn.schema.strip("/")
    return url
