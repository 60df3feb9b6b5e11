"""What the planner and the converter workers share: configuration, the source, exit codes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from ..builders import CONFIG_ENV, EXIT_PERMANENT
from ..clients.ais import Ais
from .sources import READS_BATCH, AisSource, Source, VolumeSource

log = logging.getLogger("sds.converter")
TERMINATION_LOG = "/dev/termination-log"


class PermanentError(Exception):
    """A problem a retry cannot fix (bad source, bad labels file, a plan that no longer matches the source)."""


def make_source(config: dict[str, Any], ais: Ais) -> Source:
    src = config["source"]
    if src["kind"] == "ais":
        reads = str((config.get("reads") or {}).get("mode") or READS_BATCH)
        return AisSource(ais, src["bucket"], src["provider"], src.get("prefix", ""), reads)
    return VolumeSource(src["root"])


def terminate(message: str) -> None:
    """Leave `message` where Kubernetes shows it as the container's termination message."""
    try:
        with open(TERMINATION_LOG, "w") as f:
            f.write(message[:4000])
    except OSError:
        pass


def run_main(run: Callable[[dict[str, Any], int, Ais], str]) -> int:
    """Read the pod's environment, call `run(config, index, ais)`, map the outcome to an exit code."""
    logging.basicConfig(level=os.environ.get("SDS_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = json.loads(os.environ[CONFIG_ENV])
        index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
        endpoint = os.environ["AIS_ENDPOINT"]
    except (KeyError, ValueError) as e:
        terminate(f"misconfigured: {e}")
        return EXIT_PERMANENT
    ais = Ais(endpoint, os.environ.get("AIS_AUTHN_TOKEN") or None, attempts=5, pool=32)
    try:
        summary = run(config, index, ais)
    except PermanentError as e:
        log.error("permanent failure: %s", e)
        terminate(str(e))
        return EXIT_PERMANENT
    except Exception as e:
        log.exception("failed")
        terminate(f"{type(e).__name__}: {e}")
        return 1
    log.info(summary)
    terminate(summary)
    return 0
