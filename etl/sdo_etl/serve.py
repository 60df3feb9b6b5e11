"""Run the AIS ETL webserver class named by `SDO_ETL_CLASS` ("module:Class") on port `PORT` (8000).

The class extends one of aistore.sdk.etl.webserver's servers (FastAPIServer, FlaskServer,
HTTPMultiThreadedServer) and overrides `transform(data, path, etl_args)`; AIS calls it for each object.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def load_class(ref: str) -> Any:
    """`module:Class` imported from PYTHONPATH; a clear error when the name is malformed or missing."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"SDO_ETL_CLASS must be 'module:Class', got {ref!r}")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(cls, type):
        raise SystemExit(f"{module_name} has no class {attr!r}")
    return cls


def main(argv: list[str]) -> None:
    ref = argv[1] if len(argv) > 1 else os.environ.get("SDO_ETL_CLASS", "")
    server = load_class(ref)(port=int(os.environ.get("PORT", "8000")))
    server.start()


if __name__ == "__main__":
    main(sys.argv)
