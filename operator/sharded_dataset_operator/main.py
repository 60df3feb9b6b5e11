"""Operator entry point: `python -m sharded_dataset_operator.main` (the image's default command)."""

from __future__ import annotations

import logging
import sys

import kopf

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import SETTINGS


def run() -> None:
    logging.basicConfig(
        level=getattr(logging, SETTINGS.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.run(
        standalone=True,  # one replica; kopf peering is not used
        clusterwide=not SETTINGS.watch_namespaces,
        namespaces=SETTINGS.watch_namespaces,
        liveness_endpoint=SETTINGS.liveness_endpoint or None,
    )


if __name__ == "__main__":
    run()
    sys.exit(0)
