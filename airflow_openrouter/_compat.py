"""Names that moved between Airflow 3.1 and 3.3, imported from wherever the running Airflow has them.

We do not depend on ``apache-airflow-providers-common-compat`` for these few names: the releases that
have them require Python 3.11, while Airflow 3.1 (and this provider) support Python 3.10.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import BaseHook, Connection

# name -> (module in Airflow 3.3, module in Airflow 3.1)
_MOVED: dict[str, tuple[str, str]] = {
    "AirflowNotFoundException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowFailException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowSkipException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowSensorTimeout": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "TaskDeferred": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "determine_kwargs": ("airflow.sdk.bases.decorator", "airflow.utils.operator_helpers"),
    # Airflow's configuration; airflow.sdk already imported it, so this is free at DAG parse.
    "conf": ("airflow.sdk", "airflow.configuration"),
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in _MOVED[name]:
        value = getattr(importlib.import_module(module), name, None)
        if value is not None:
            globals()[name] = value
            return value
    raise ImportError(f"{name} is in none of {_MOVED[name]}")


async def get_connection_async(hook: BaseHook, conn_id: str) -> tuple[Connection, dict[str, Any]]:
    """The connection and its extras, without blocking the event loop.

    Airflow 3.3.2 has fully async lookups (``aget_connection`` + ``aextra_dejson``). Before it, both mask
    secrets with a synchronous call to the supervisor, which can deadlock on a busy loop, so the sync
    lookup runs in a thread instead.
    """
    from airflow.sdk import Connection
    from asgiref.sync import sync_to_async

    if hasattr(Connection, "aextra_dejson"):
        conn = await hook.aget_connection(conn_id)
        return conn, await conn.aextra_dejson()

    def lookup() -> tuple[Connection, dict[str, Any]]:
        conn = hook.get_connection(conn_id)
        return conn, conn.extra_dejson

    # sync_to_async, not asyncio.to_thread: in the 3.1 triggerer the sync lookup talks to the supervisor
    # through async_to_sync, which must find the trigger loop; from a bare thread it starts a second loop
    # and the supervisor's frames arrive out of order.
    return await sync_to_async(lookup)()


async def mask_secret_async(secret: str) -> None:
    import airflow.sdk.log as sdk_log
    from asgiref.sync import sync_to_async

    if hasattr(sdk_log, "amask_secret"):
        await sdk_log.amask_secret(secret)
    else:  # the sync call may talk to the supervisor: keep it off the loop (see above)
        await sync_to_async(sdk_log.mask_secret)(secret)


def in_task_process() -> bool:
    """Whether this process runs a task (or a trigger) under an Airflow supervisor.

    There, connections come from the API server; anywhere else (a notebook, a script, pytest) Airflow's
    own lookup reads only environment variables and the configured secrets backend, on 3.1 to 3.3.
    """
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return False
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def metadata_db_connection(conn_id: str) -> Any:
    """The connection ``conn_id`` read straight from the metadata database, or ``None`` when it is not
    there. Raises whatever the database raises when it cannot be read (not configured, not migrated)."""
    from airflow.secrets.metastore import MetastoreBackend

    return MetastoreBackend().get_connection(conn_id)


def secrets_backend_name() -> str | None:
    """The ``[secrets] backend`` class configured, if any."""
    backend = __getattr__("conf").get("secrets", "backend", fallback="")
    return backend or None
