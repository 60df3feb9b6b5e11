"""Test-only crash points: the operator exits at once (no cleanup, as if SIGKILLed) right after an AIS side
effect, before the status write that records it, to prove that a crash in that window loses and duplicates
nothing.

Armed only when the operator runs with `SDS_FAILPOINTS=1` (the fault-injection e2e suite sets it; the chart
never does) and a dataset carries `shardeddataset.dev/failpoint: <point>`. Each point fires once per dataset:
before dying the operator records it in `shardeddataset.dev/failpoint-fired`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

ANNOTATION = "shardeddataset.dev/failpoint"
FIRED_ANNOTATION = "shardeddataset.dev/failpoint-fired"
AFTER_DSORT_START = "after-dsort-start"
AFTER_INDEX_WRITE = "after-index-write"  # the version's own index written, the stable one not yet
AFTER_PUBLISH = "after-publish"  # the stable index switched, the replaced version not yet deleted
POINTS = (AFTER_DSORT_START, AFTER_INDEX_WRITE, AFTER_PUBLISH)

log = logging.getLogger(__name__)

Failpoint = Callable[[str], None]


def armed(enabled: bool, annotations: Mapping[str, str], point: str) -> bool:
    """Whether `point` should fire now for a dataset with these annotations."""
    return enabled and annotations.get(ANNOTATION) == point and annotations.get(FIRED_ANNOTATION) != point


def none(point: str) -> None:
    """The production failpoint: nothing happens."""


def for_dataset(enabled: bool, annotations: Mapping[str, str], mark_fired: Callable[[str], None]) -> Failpoint:
    """The failpoint hook for one reconcile pass of one dataset."""
    if not enabled or ANNOTATION not in annotations:
        return none

    def fire(point: str) -> None:
        if armed(enabled, annotations, point):
            mark_fired(point)
            log.warning("failpoint %s: the operator exits now", point)
            # os._exit, not SIGKILL: the operator is PID 1 of its container, which SIGKILL from inside
            # the container's own PID namespace does not reach
            os._exit(137)

    return fire
