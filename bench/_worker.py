"""``python -m bench._worker module:function '<json kwargs>'``: one measurement in a fresh process.

The result is printed as one marked JSON line, so whatever else the measured code prints (Airflow's
logging goes to stdout) cannot be mistaken for it.
"""

from __future__ import annotations

import importlib
import json
import sys

from bench._common import RESULT_MARKER


def main(argv: list[str]) -> int:
    spec, kwargs = argv[0], json.loads(argv[1])
    module_name, _, function_name = spec.partition(":")
    result = getattr(importlib.import_module(module_name), function_name)(**kwargs)
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
