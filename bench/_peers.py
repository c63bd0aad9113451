"""The peers' virtualenv (``.venv-peers``) for ``--peers``: the other Airflow LLM providers and the
``openai`` and ``openrouter`` SDKs, next to the same Airflow version as ours, kept apart from our venv.

Best effort: when it cannot be built (offline, a resolver conflict), the peers' rows say why.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from bench._common import REPO

VENV = REPO / ".venv-peers"
PEERS = (
    "apache-airflow-providers-common-ai",
    "apache-airflow-providers-openai",
    "apache-airflow-providers-anthropic",
    "openai",
    "openrouter",
)


def peers_python() -> Path:
    """The peers' interpreter, creating and filling the venv on first use.

    :raises RuntimeError: with the installer's last words when the venv cannot be built.
    """
    python = VENV / "bin" / "python"
    requirements = (f"apache-airflow=={version('apache-airflow')}", *PEERS)
    stamp = VENV / (".installed-" + "-".join(requirements).replace("/", "_").replace("=", ""))
    if stamp.exists():
        return python
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(VENV)],
        [uv, "pip", "install", "--quiet", "--python", str(python), *requirements],
    ):
        process = subprocess.run(command, capture_output=True, text=True)
        if process.returncode != 0:
            last = (process.stderr or process.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"could not build {VENV.name}: " + " | ".join(last))
    stamp.touch()
    return python
