"""Operator entry point: `python -m sharded_dataset_operator.main` (the image's default command)."""

from __future__ import annotations

import logging
import sys

import kopf

from sharded_dataset_operator.clients.ais import redact
from sharded_dataset_operator.runner import handlers  # noqa: F401  (registers the handlers)
from sharded_dataset_operator.runner.settings import SETTINGS


class RedactTokens(logging.Filter):
    """No bearer token in the operator's log, tracebacks included (AIS quotes a revoked token in its errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None if record.exc_text else record.exc_info
        return True


def run() -> None:
    logging.basicConfig(
        level=getattr(logging, SETTINGS.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
    kopf.run(
        standalone=True,  # one replica; kopf peering is not used
        clusterwide=not SETTINGS.watch_namespaces,
        namespaces=SETTINGS.watch_namespaces,
        liveness_endpoint=SETTINGS.liveness_endpoint or None,
    )


if __name__ == "__main__":
    run()
    sys.exit(0)
