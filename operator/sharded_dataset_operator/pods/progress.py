"""A converter worker's progress object: what it publishes while it runs, and where a retried worker resumes."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sharded_dataset_operator.clients.ais import Ais, AisUnavailable
from sharded_dataset_operator.core import naming

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 3.0


class Progress:
    """Publishes `progress-wNNNN.json` at most every `interval` seconds (and once at the end)."""

    def __init__(
        self,
        ais: Ais,
        out: dict[str, Any],
        worker: int,
        generation: int,
        partition: int,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.ais, self.out, self.worker, self.generation = ais, out, worker, generation
        self.partition, self.interval = partition, interval
        self.name = naming.progress_name(str(out["base"]), worker)
        self.last = time.monotonic()

    def tick(self, samples: int, nbytes: int, durable: list[dict[str, Any]], force: bool = False) -> None:
        """`durable`: the shards uploaded so far (what a retried worker resumes after)."""
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        body = {
            "worker": self.worker,
            "generation": self.generation,
            "partitionSamples": self.partition,
            "samples": samples,
            "bytes": nbytes,
            "shards": durable,
        }
        try:
            self.ais.put(self.out["bucket"], self.name, json.dumps(body, sort_keys=True).encode(), self.out["provider"])
        except Exception as e:  # progress is best effort; the report is what counts
            log.warning("could not publish progress: %s", e)


def resume_point(ais: Ais, out: dict[str, Any], worker: int, generation: int) -> list[dict[str, Any]]:
    """The shards an earlier attempt of this worker finished, as recorded in its progress object, that are
    present in AIS with the recorded size, whole units only (a unit's last part says `last`). Unit
    boundaries come from the plan, so the rerun skips those units and writes the same remaining shards.

    Progress is only a shortcut: a progress object AIS cannot serve (a target killed while writing it loses its
    metadata: `ErrLmetaNotFound`) or that does not parse means starting the worker's share over, which writes
    the same bytes again. Any failure of AIS itself shows on the next read of the plan or the source."""
    name = naming.progress_name(str(out["base"]), worker)
    try:
        data = ais.get(out["bucket"], name, out["provider"])
        body = json.loads(data) if data else None
    except (AisUnavailable, ValueError) as e:
        log.warning("progress %s unreadable (%s): this worker's share starts over", name, e)
        return []
    if not isinstance(body, dict):
        return []
    if int(body.get("generation", -1)) != generation:
        return []
    sizes = {e.name: e.size for e in ais.list_objects(out["bucket"], out["provider"], str(out["pool"]))}
    done: list[dict[str, Any]] = []
    unit: list[dict[str, Any]] = []
    for shard in body.get("shards") or []:
        if not shard.get("unit") or sizes.get(shard.get("name")) != shard.get("bytes"):
            break
        if int(shard.get("part") or 0) != len(unit) or (unit and unit[0]["unit"] != shard["unit"]):
            break
        unit.append(shard)
        if shard.get("last"):
            done.extend(unit)
            unit = []
    return done


def mark_waiting(
    ais: Ais, out: dict[str, Any], worker: int, generation: int, reason: str, message: str, now: str
) -> None:
    """Say in the worker's progress object why it waits (the operator shows it; the next tick of a worker that
    makes progress drops it). The shards recorded there stay: they are where the next pod resumes."""
    name = naming.progress_name(str(out["base"]), worker)
    try:
        data = ais.get(out["bucket"], name, out["provider"])
        body = json.loads(data) if data else {}
        if not isinstance(body, dict):
            return  # torn: left alone (`resume_point` starts over on it)
        body.setdefault("worker", worker)
        body.setdefault("generation", generation)
        since = (body.get("waiting") or {}).get("since") or now
        body["waiting"] = {"reason": reason, "message": message[:1000], "since": since}
        ais.put(out["bucket"], name, json.dumps(body, sort_keys=True).encode(), out["provider"])
    except Exception as e:  # best effort, like every progress write
        log.warning("could not record the wait in %s: %s", name, e)
