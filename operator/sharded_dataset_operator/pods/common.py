"""What the planner and the converter workers share: configuration, the source, exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from sharded_dataset_operator.clients.ais import AccessDenied, Ais, BackendUnavailable, Membership
from sharded_dataset_operator.core.builders import CONFIG_ENV, EXIT_PERMANENT, EXIT_UNAVAILABLE
from sharded_dataset_operator.core.failures import pod_reason_tag
from sharded_dataset_operator.core.times import now_iso
from sharded_dataset_operator.pods.progress import mark_waiting
from sharded_dataset_operator.pods.reads import Vanished
from sharded_dataset_operator.pods.sources import READS_BATCH, AisSource, Source, VolumeSource

log = logging.getLogger("sds.converter")
TERMINATION_LOG = "/dev/termination-log"
AIS_WAIT_SECONDS = 120.0  # how long a worker that lost AIS waits for it before handing over to a fresh pod


EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process stopped by SIGTERM


class Terminated(BaseException):
    """SIGTERM (pod deleted, node drained): stop now; what was uploaded is already recorded for the next pod.

    A BaseException, so that best-effort `except Exception` blocks on the way out do not swallow it.
    """


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


class PermanentError(Exception):
    """A problem a retry cannot fix (bad source, bad labels file, a plan that no longer matches the source).
    `reason`: what the operator shows it as (`core.failures.POD_REASONS`), when not the step's generic failure."""

    reason: str | None = None


class SourceChanged(PermanentError):
    """The source is not what was listed any more: an object vanished, or has another size, since planning."""

    reason = "SourceChanged"


class SourceMissing(PermanentError):
    reason = "SourceNotFound"


def make_source(config: dict[str, Any], ais: Ais) -> Source:
    src = config["source"]
    if src["kind"] == "ais":
        reads = str((config.get("reads") or {}).get("mode") or READS_BATCH)
        return AisSource(ais, src["bucket"], src["provider"], src.get("prefix", ""), reads, bool(src.get("warm")))
    return VolumeSource(src["root"])


def terminate(message: str) -> None:
    """Leave `message` where Kubernetes shows it as the container's termination message."""
    try:
        with open(TERMINATION_LOG, "w") as f:
            f.write(message[:4000])
    except OSError:
        pass


def run_main(run: Callable[[dict[str, Any], int, Ais], str], *, progress: bool = False) -> int:
    """Read the pod's environment, call `run(config, index, ais)`, map the outcome to an exit code.
    `progress`: the worker has a progress object (a converter), where a wait for the source is said."""
    logging.basicConfig(level=os.environ.get("SDS_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = json.loads(os.environ[CONFIG_ENV])
        index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
        endpoint = os.environ["AIS_ENDPOINT"]
    except (KeyError, ValueError) as e:
        terminate(f"misconfigured: {e}")
        return EXIT_PERMANENT
    ais = Ais(endpoint, os.environ.get("AIS_AUTHN_TOKEN") or None, attempts=5, pool=32)
    start = ais.membership()
    # The worker runs as PID 1 of its container, where SIGTERM is ignored unless handled: without this a
    # deleted pod would keep converting until the grace period ends and SIGKILL arrives.
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary = run(config, index, ais)
    except Terminated:
        log.warning("terminated (SIGTERM): the next pod resumes after the last uploaded shard")
        terminate("terminated by SIGTERM (pod deleted or node drained)")
        return EXIT_TERMINATED
    except PermanentError as e:
        log.error("permanent failure: %s", e)
        terminate(pod_reason_tag(e.reason, str(e)) if e.reason else str(e))
        return EXIT_PERMANENT
    except AccessDenied as e:  # the token (or AIS's credentials for a remote bucket) may not: a retry cannot help
        log.error("access denied: %s", e)
        terminate(pod_reason_tag("AccessDenied", str(e)))
        return EXIT_PERMANENT
    except BackendUnavailable as e:  # AIS is fine, the remote store behind the source is not: wait, hand over
        log.warning("the source's backend does not answer: %s", e)
        if progress:
            why = f"{e} (the converters wait for it and resume by themselves)"
            mark_waiting(ais, config["output"], index, int(config.get("generation") or 0), "SourceUnavailable", why,
                         now_iso())  # fmt: skip
        return unreachable_exit(e, lambda: source_answers(ais, config), what="the source's backend")
    except Exception as e:
        log.exception("failed")
        now = ais.membership()
        if cluster_disturbed(start, now):
            log.warning("the cluster changed under the worker: was %s, now %s", start, now)
            return unreachable_exit(e, lambda: cluster_whole(start, ais.membership()))
        if isinstance(e, Vanished):  # with the cluster whole, a 404 is the source's own: it changed since planning
            why = f"{e}; the source changed since it was listed: refresh (or let the schedule) build it as it is now"
            terminate(pod_reason_tag("SourceChanged", why))
            return EXIT_PERMANENT
        terminate(f"{type(e).__name__}: {e}")
        return 1
    log.info(summary)
    terminate(summary)
    return 0


def cluster_whole(start: Membership | None, now: Membership | None) -> bool:
    """AIS answers, every active target answers, and none of the targets the worker started with is missing."""
    if now is None or now.answering < now.targets:
        return False
    return start is None or now.targets >= start.targets


RESTART_SLACK = 5.0  # seconds a target's start time, derived from its uptime, may move without a restart


def restarted(start: Membership, now: Membership, slack: float = RESTART_SLACK) -> list[str]:
    """Targets whose process started again since `start` (their start time moved later); a target that left the
    map or did not answer then is not compared (the map's version or `answering` shows that)."""
    before = dict(start.started)
    return sorted(tid for tid, at in now.started if tid in before and before[tid] and at > before[tid] + slack)


def cluster_disturbed(start: Membership | None, now: Membership | None) -> bool:
    """Whether a failure may be the cluster's rather than the worker's: AIS or a target is away, one left and
    came back (the map's version moved), or a target's process restarted in place (a pod on the host network
    comes back at its address before the proxy notices it was gone, so the map does not move) while the worker
    ran. Such a failure hands over to a fresh pod without spending a retry; any other failure is the worker's
    and counts.
    """
    if not cluster_whole(start, now):
        return True
    if start is None or now is None:
        return False
    return now.version != start.version or bool(restarted(start, now))


def source_answers(ais: Ais, config: dict[str, Any]) -> bool:
    """Whether the source's remote store answers a listing (one page) through AIS again."""
    src = config.get("source") or {}
    if src.get("kind") != "ais":
        return True
    try:
        pages = ais.list_pages(src["bucket"], src["provider"], src.get("prefix", ""), page_size=1, remote_props=True)
        next(iter(pages), None)
        return True
    except Exception:
        return False


def unreachable_exit(
    error: Exception,
    whole: Callable[[], bool],
    wait: float = AIS_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    what: str = "AIS cluster",
) -> int:
    """AIS (or one of its targets) went away under the worker: wait (bounded) until the cluster is whole again,
    then exit for a fresh pod.

    The exit code is one the Job's podFailurePolicy ignores, so an outage never spends the per-index retry
    budget; the next pod resumes after the last finished shard. While AIS stays down this repeats, one pod
    per `wait` seconds, and the operator reports the resource Stalled (AISUnavailable).
    """
    deadline = clock() + wait
    back = whole()
    while not back and clock() < deadline:
        sleep(2.0)
        back = whole()
    state = "is back" if back else f"is still away after {wait:.0f}s"
    message = f"{what} disturbed ({type(error).__name__}: {error}); it {state}: a fresh pod resumes"
    log.warning(message)
    terminate(message)
    return EXIT_UNAVAILABLE
