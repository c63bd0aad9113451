"""Apache Airflow provider for OpenRouter."""

from __future__ import annotations

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_CONN_ID", "__version__", "get_provider_info"]

__version__ = "0.1.0"

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
#: The connection every hook, operator, sensor and trigger uses unless told otherwise.
DEFAULT_CONN_ID = "openrouter_default"


def get_provider_info() -> dict:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    # The connection's defaults are written once, in ClientSettings (a light import: no httpx).
    from airflow_openrouter._transport.settings import DEADLINE_FACTOR, connection_defaults

    defaults = connection_defaults()
    return {
        "package-name": "airflow-openrouter",
        "name": "OpenRouter",
        "description": "OpenRouter (one OpenAI-compatible API in front of 400+ models) as a pipeline step: "
        "templated prompts, validated structured outputs, and bulk runs through the Batch API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "OpenRouter",
                "external-doc-url": "https://openrouter.ai/docs",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {"integration-name": "OpenRouter", "python-modules": ["airflow_openrouter.hooks.openrouter"]}
        ],
        "operators": [
            {
                "integration-name": "OpenRouter",
                "python-modules": [
                    "airflow_openrouter.operators.chat",
                    "airflow_openrouter.operators.batch",
                    "airflow_openrouter.operators.embedding",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "OpenRouter", "python-modules": ["airflow_openrouter.sensors.batch"]}
        ],
        "triggers": [
            {"integration-name": "OpenRouter", "python-modules": ["airflow_openrouter.triggers.batch"]}
        ],
        "extra-links": [
            "airflow_openrouter.links.OpenRouterGenerationLink",
            "airflow_openrouter.links.OpenRouterBatchLink",
        ],
        "task-decorators": [
            {"name": "openrouter", "class-name": "airflow_openrouter.decorators.openrouter.openrouter_task"}
        ],
        "connection-types": [
            {
                "connection-type": "openrouter",
                "hook-class-name": "airflow_openrouter.hooks.openrouter.OpenRouterHook",
                "hook-name": "OpenRouter",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {
                        "host": DEFAULT_BASE_URL,
                        "password": "sk-or-v1-... (empty: use the OPENROUTER_API_KEY environment variable)",
                    },
                },
                "conn-fields": {
                    "default_model": {
                        "label": "Default model",
                        "description": "Model used when a task does not name one, e.g. openai/gpt-4o-mini.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "site_url": {
                        "label": "Site URL",
                        "description": "Sent as HTTP-Referer for app attribution on openrouter.ai.",
                        "schema": {"type": ["string", "null"], "format": "url"},
                    },
                    "app_name": {
                        "label": "App name",
                        "description": "Sent as X-OpenRouter-Title (and the legacy X-Title).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Read timeout: the longest wait for the next bytes of an answer "
                        "(for a stream, between two chunks).",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": defaults["timeout"]},
                    },
                    "request_deadline": {
                        "label": "Request deadline (s)",
                        "description": "The most one attempt may take in all, first byte sent to last byte "
                        f"received (for a stream, its end). Empty: {DEADLINE_FACTOR} times the timeout.",
                        "schema": {"type": ["number", "null"], "minimum": 1},
                    },
                    "connect_timeout": {
                        "label": "Connect timeout (s)",
                        "schema": {
                            "type": ["number", "null"],
                            "minimum": 0.1,
                            "default": defaults["connect_timeout"],
                        },
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries of a retryable failure (429, 5xx, connection errors), after "
                        "the first try. A chat completion that was sent but got no answer is not retried.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "default": defaults["max_retries"],
                        },
                    },
                },
            }
        ],
        "config": {
            "openrouter": {
                "description": "Defaults of the OpenRouter provider.",
                "options": {
                    "results_path": {
                        "description": "Where batch results (JSONL) and batch state records are written, as an "
                        "ObjectStoragePath URI. Use shared storage (s3://, gs://) on distributed deployments.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://aws_default@my-bucket/openrouter",
                        "default": "file:///tmp/airflow-openrouter",
                    },
                    "poll_interval": {
                        "description": "Seconds between two polls of a running batch.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "30",
                        "default": "30",
                    },
                    "generation_link_template": {
                        "description": "The URL of a chat task's link to its generation on openrouter.ai; "
                        "{generation_id} is replaced by the id. OpenRouter documents its Logs page and its "
                        "generation-id filter, not the name of the URL parameter: change it here if it moves.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://openrouter.ai/logs?generation_id={generation_id}",
                        "default": "https://openrouter.ai/logs?generation_id={generation_id}",
                        "is_template": True,  # {generation_id} is ours: Airflow must not expand it
                    },
                    "batch_link_template": {
                        "description": "The URL of a batch task's (and a batch sensor's) link to openrouter.ai; "
                        "{batch_id}, if present, is replaced by the first batch id. OpenRouter documents no "
                        "page per batch: the default is the Logs page.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://openrouter.ai/logs",
                        "default": "https://openrouter.ai/logs",
                        "is_template": True,
                    },
                    "result_cache": {
                        "description": "Where answers are cached by request, as an ObjectStoragePath URI, for "
                        "every batch and chat task that does not set result_cache itself (result_cache=False "
                        "turns it off for one task). Empty: no cache. Unchanged requests are then never paid "
                        "for twice; use shared storage on distributed deployments.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://aws_default@my-bucket/openrouter-cache",
                        "default": "",
                    },
                },
            }
        },
    }
