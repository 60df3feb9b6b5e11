"""The planner's forked sample producer (`pods/forked.py`): the plan, units and membership written with it are
byte for byte those of one process, and the producer's failures are the planner's."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sds_tools import exampledata, layouts
from sharded_dataset_operator.core.units import Planned
from sharded_dataset_operator.pods.common import PermanentError
from sharded_dataset_operator.pods.converter import convert
from sharded_dataset_operator.pods.forked import BATCH, Forked, ProducerFailed
from sharded_dataset_operator.pods.planner import make_plan
from sharded_dataset_operator.pods.sources import VolumeSource

from ..layout_cases import CASES
from .test_converter import MemoryStore, _change_source, _fraction_config, _version_config, dataset
from .test_layout_conversion import example_config

__all__ = ["dataset"]  # the fixture, used below


def _comparable(store: MemoryStore) -> dict[str, Any]:
    """Every object; the plan manifests and workers' reports without their timing."""
    out: dict[str, Any] = {}
    for name, data in store.objects.items():
        if name.endswith(".json"):
            document = json.loads(data)
            document.pop("seconds", None)
            out[name] = document
        else:
            out[name] = data
    return out


def _reader(store: MemoryStore, marks: Path) -> Any:
    """The producer's client: the (forked) store, leaving a file named by the pid of the process that asked."""

    def reader() -> MemoryStore:
        (marks / f"pid-{os.getpid()}").touch()
        return store

    return reader


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_forked_producer_writes_what_one_process_writes_for_every_layout(tmp_path: Path, name: str) -> None:
    _, layout, size = CASES[name]
    root, marks = tmp_path / "src", tmp_path / "marks"
    root.mkdir()
    marks.mkdir()
    layouts.write_layout_dir(layout, root, seed=5, **size)
    cfg = example_config(name)
    one, two = MemoryStore(), MemoryStore()
    make_plan(cfg, one, VolumeSource(str(root)), sort_buffer_bytes=4096)  # type: ignore[arg-type]
    make_plan(cfg, two, VolumeSource(str(root)), sort_buffer_bytes=4096, reader=_reader(two, marks))  # type: ignore[arg-type]
    assert [p.name for p in marks.iterdir()] != [f"pid-{os.getpid()}"]  # another process produced
    assert len(list(marks.iterdir())) == 1
    assert _comparable(two) == _comparable(one)
    assert not [k for k in two.objects if "plan-run-" in k]  # the sort runs are gone


def _plan_and_convert(cfg: dict[str, Any], store: MemoryStore, root: Path, reader: Any = None) -> dict[str, Any]:
    manifest = make_plan(cfg, store, VolumeSource(str(root)), sort_buffer_bytes=2048, reader=reader)  # type: ignore[arg-type]
    workers = min(cfg["workers"], manifest["units"]["convert"])
    for i in range(workers):
        convert({**cfg, "workers": workers}, i, store, VolumeSource(str(root)), progress_interval=0)  # type: ignore[arg-type]
    return manifest


def test_a_forked_producer_writes_the_same_fraction_splits_and_takes_over_the_same_units(
    dataset: tuple[Path, exampledata.Manifest], tmp_path: Path
) -> None:
    root, marks = tmp_path / "src", tmp_path / "marks"
    shutil.copytree(dataset[0], root)
    marks.mkdir()
    one, two = MemoryStore(), MemoryStore()
    for cfg in (_fraction_config(1), _version_config(3)):
        _plan_and_convert(cfg, one, root)
        _plan_and_convert(cfg, two, root, _reader(two, marks))
    complete = sorted(dataset[1]["complete"])
    _change_source(root, complete, [f"{complete[i]}a" for i in (3, 30, 60)], complete[0])
    for cfg in (_fraction_config(2, previous=1), _version_config(4, previous=3)):  # the previous version's units
        first = _plan_and_convert(cfg, one, root)
        _plan_and_convert(cfg, two, root, _reader(two, marks))
        assert first["units"]["takenOver"] > 0
    assert _comparable(two) == _comparable(one)
    assert len(list(marks.iterdir())) == 4 and f"pid-{os.getpid()}" not in {p.name for p in marks.iterdir()}


def _planned(n: int) -> Iterator[Planned]:
    for i in range(n):
        yield Planned(f"k{i:06d}", None if i % 2 else "train", f'["k{i:06d}"]', 1, i, 1024 + i)


def _tuples(produce: Callable[[], Iterator[Planned]]) -> Callable[[], Iterator[tuple[Any, ...]]]:
    """The producer's items as they cross: plain tuples (made `Planned` again on the planner's side)."""
    return lambda: (tuple(p) for p in produce())


def test_every_sample_arrives_in_order_then_the_producers_result() -> None:
    forked = Forked(_tuples(lambda: _planned(3 * BATCH + 5)), Planned._make, lambda: {"judged": 3 * BATCH + 5})
    assert list(forked) == list(_planned(3 * BATCH + 5))
    assert forked.result == {"judged": 3 * BATCH + 5}


def test_the_producers_exception_is_raised_again_with_its_type_and_message() -> None:
    def produce() -> Iterator[Planned]:
        yield from _planned(BATCH + 1)
        raise PermanentError("metadata table t.csv: no column 'score'")

    got: list[Planned] = []
    with pytest.raises(PermanentError, match="no column 'score'"):
        for p in Forked(_tuples(produce), Planned._make, lambda: None):
            got.append(p)
    assert len(got) == BATCH  # the full batch before the failure; the one in progress is lost with the plan


class _Odd(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"odd {a} {b}")


def test_an_exception_that_does_not_survive_pickling_is_raised_as_its_text() -> None:
    def produce() -> Iterator[Planned]:
        raise _Odd(1, 2)
        yield  # pragma: no cover

    with pytest.raises(ProducerFailed, match=r"_Odd: odd 1 2"):
        list(Forked(_tuples(produce), Planned._make, lambda: None))


def test_a_producer_that_dies_fails_the_plan_with_its_exit_code() -> None:
    def produce() -> Iterator[Planned]:
        yield from _planned(3)
        os._exit(3)

    with pytest.raises(RuntimeError, match=r"ended without finishing \(exit code 3\)"):
        list(Forked(_tuples(produce), Planned._make, lambda: None))


def test_a_planner_that_stops_reading_ends_the_producer() -> None:
    forked = Forked(_tuples(lambda: _planned(100 * BATCH)), Planned._make, lambda: None)
    stream = iter(forked)
    next(stream)
    assert forked.pid is not None
    stream.close()  # what an exception in the planner's loop does
    with pytest.raises(ProcessLookupError):
        os.kill(forked.pid, 0)


class _FailingWrites(MemoryStore):
    """A store that refuses the plan's first chunk (the planner fails while its producer still runs)."""

    def put(self, bucket: str, name: str, data: bytes, provider: str = "ais") -> None:
        if "-plan-" in name and name.endswith(".jsonl"):
            raise OSError("disk full")
        super().put(bucket, name, data, provider)


def test_a_planner_that_fails_while_writing_leaves_no_producer_running(tmp_path: Path) -> None:
    _, layout, size = CASES["imagefolder"]
    root, marks = tmp_path / "src", tmp_path / "marks"
    root.mkdir()
    marks.mkdir()
    layouts.write_layout_dir(layout, root, seed=5, **size)
    store = _FailingWrites()
    with pytest.raises(OSError, match="disk full"):
        make_plan(
            example_config("imagefolder"),
            store,  # type: ignore[arg-type]
            VolumeSource(str(root)),
            sort_buffer_bytes=4096,
            chunk_samples=2,
            reader=_reader(store, marks),
        )
    (mark,) = marks.iterdir()
    with pytest.raises(ProcessLookupError):
        os.kill(int(mark.name.removeprefix("pid-")), 0)
    assert not [k for k in store.objects if "plan-run-" in k]
