"""spec.transform: configuration, resize geometry and encoding, user functions, and the skip accounting."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sds_tools import exampledata
from sharded_dataset_operator.core.builders import ConverterDefaults, build_converter_job, build_planner_job
from sharded_dataset_operator.core.spec import SpecError, parse_spec
from sharded_dataset_operator.pods.common import PermanentError
from sharded_dataset_operator.pods.converter import convert
from sharded_dataset_operator.pods.planner import make_plan
from sharded_dataset_operator.pods.sources import VolumeSource
from sharded_dataset_operator.pods.transforms import DROPPED, KEY, Skip, Transformer, fit, resize_image

from .test_converter import BASE, OWNER, MemoryStore, config, members

SPEC: dict[str, Any] = {
    "source": {"ais": {"bucket": "raw"}},
    "samples": {
        "fields": [{"pattern": "images/*.jpg", "name": "image.jpg"}, {"pattern": "t/*.png", "name": "trimap.png"}],
        "labels": {"path": "list.txt"},
    },
    "output": {"bucket": "out", "maxSamplesPerShard": 10},
}


def spec_with(transform: dict[str, Any]) -> Any:
    return parse_spec({**SPEC, "transform": transform}, name="pets", default_endpoint="http://ais:1")


def image(width: int, height: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    img = Image.new(mode, (width, height))
    for x in range(0, width, 7):  # some structure, so encoders have work to do
        for y in range(0, height, 5):
            img.putpixel((x, y), (x * 3 % 256, y * 5 % 256, 90) if mode == "RGB" else (x + y) % 200)
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ configuration


def test_transform_configuration_defaults_and_errors_name_the_field() -> None:
    t = spec_with({"resize": {"member": "image.jpg", "maxSide": 256}}).transform
    assert t.resize.format == "jpeg" and t.resize.quality == 90 and t.resize.output_member == "image.jpg"
    assert t.to_config() == {"resize": {"member": "image.jpg", "maxSide": 256, "format": "jpeg", "quality": 90}}
    t = spec_with(
        {"resize": {"member": "image.jpg", "maxSide": 64, "format": "webp"}, "function": {"name": "m:f"}}
    ).transform
    assert t.resize.output_member == "image.webp" and t.to_config()["function"] == {"name": "m:f"}
    assert spec_with({}).transform is None
    for bad, field in [
        ({"resize": {"member": "nope.jpg", "maxSide": 9}}, "spec.transform.resize.member"),
        ({"resize": {"member": "image.jpg", "maxSide": 0}}, "spec.transform.resize.maxSide"),
        ({"resize": {"member": "image.jpg", "maxSide": 9, "format": "gif"}}, "spec.transform.resize.format"),
        ({"resize": {"member": "image.jpg", "maxSide": 9, "quality": 101}}, "spec.transform.resize.quality"),
        ({"function": {"name": "no_colon"}}, "spec.transform.function.name"),
    ]:
        with pytest.raises(SpecError, match=field.replace(".", r"\.")):
            spec_with(bad)


def test_the_function_image_runs_the_converters_not_the_planner() -> None:
    spec = spec_with({"function": {"name": "my_transforms:crop", "image": "registry/my-transforms:1.0"}})
    defaults = ConverterDefaults(image="localhost/sds:dev")
    conv = build_converter_job(spec, OWNER, defaults)["spec"]["template"]["spec"]["containers"][0]
    plan = build_planner_job(spec, OWNER, defaults)["spec"]["template"]["spec"]["containers"][0]
    assert conv["image"] == "registry/my-transforms:1.0" and plan["image"] == "localhost/sds:dev"
    cfg = json.loads(next(e["value"] for e in conv["env"] if e["name"] == "SDS_CONVERTER_CONFIG"))
    assert cfg["transform"] == {"function": {"name": "my_transforms:crop"}}


def test_the_operator_never_imports_pillow() -> None:
    code = "import sys, sharded_dataset_operator.main; print('PIL' in sys.modules)"  # main imports the handlers
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------------ resize


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [
        ((1000, 500), 256, (256, 128)),
        ((500, 1000), 256, (128, 256)),
        ((300, 300), 256, (256, 256)),
        ((100, 50), 256, (100, 50)),  # never upscaled
        ((256, 10), 256, (256, 10)),
        ((3, 1000), 256, (1, 256)),  # at least one pixel
        ((1001, 667), 500, (500, 333)),
    ],
)
def test_fit_keeps_the_aspect_and_the_longest_side_at_the_limit(
    size: tuple[int, int], limit: int, expected: tuple[int, int]
) -> None:
    assert fit(*size, limit) == expected


def test_resize_encodes_deterministically_and_keeps_what_already_fits() -> None:
    big = image(640, 360)
    small = resize_image(big, 256, "jpeg", 90)
    with Image.open(io.BytesIO(small)) as im:
        assert im.format == "JPEG" and im.size == (256, 144)
    assert resize_image(big, 256, "jpeg", 90) == small  # same input, same bytes
    assert resize_image(small, 256, "jpeg", 90) is small  # fits and is JPEG already: untouched
    as_webp = resize_image(image(100, 80, "PNG", "P"), 256, "webp", 80)  # fits, but another format
    with Image.open(io.BytesIO(as_webp)) as im:
        assert im.format == "WEBP" and im.size == (100, 80)
    as_png = resize_image(big, 64, "png", 90)
    with Image.open(io.BytesIO(as_png)) as im:
        assert im.format == "PNG" and im.size == (64, 36)


# ------------------------------------------------------------------------------------------ the transformer


def drop_odd(sample: dict[str, Any]) -> dict[str, Any] | None:
    if int(sample[KEY][-1]) % 2:
        return None
    return {**sample, "note.txt": sample[KEY].encode()}


def test_function_then_resize_and_every_outcome_is_counted() -> None:
    t = Transformer(
        {"function": {"name": "x:drop_odd"}, "resize": {"member": "image.jpg", "maxSide": 32, "format": "webp",
                                                          "quality": 80}},
        drop_odd,
    )  # fmt: skip
    out = t.apply("k2", [("image.jpg", image(64, 48)), ("cls", b"3")])
    assert not isinstance(out, Skip)
    names = [n for n, _ in out]
    assert names == ["image.webp", "cls", "note.txt"] and dict(out)["note.txt"] == b"k2"
    assert t.apply("k1", [("image.jpg", image(8, 8))]) == Skip(DROPPED)
    broken = t.apply("k4", [("image.jpg", b"not an image")])
    assert isinstance(broken, Skip) and broken.reason == "transform-error:UnidentifiedImageError"
    assert t.apply("k6", [("cls", b"1")]) == [("cls", b"1"), ("note.txt", b"k6")]  # no image: nothing to resize


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ("text", "transform-error:TypeError"),
        ({"a.txt": "not bytes"}, "transform-error:TypeError"),
        ({"../up": b"x"}, "transform-error:ValueError"),
        ({"__order__": b"1"}, "transform-error:ValueError"),
        ({KEY: "k"}, "transform-error:ValueError"),
    ],
)
def test_what_a_function_returns_is_checked(result: Any, reason: str) -> None:
    t = Transformer({"function": {"name": "x:f"}}, lambda s: result)
    skip = t.apply("k", [("a.txt", b"x")])
    assert isinstance(skip, Skip) and skip.reason == reason and skip.detail


# ------------------------------------------------------------------------------------------ in the converter


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, exampledata.Manifest]:
    root = tmp_path_factory.mktemp("pets-t")
    return root, exampledata.write_dir(root, n_samples=60, seed=11, sample_kib=6)


def every_third(sample: dict[str, Any]) -> dict[str, Any] | None:
    """Drops keys starting with B, raises on S, and adds a member to the rest."""
    first = sample[KEY][0]
    if first == "B":
        return None
    if first == "S":
        raise KeyError("S")
    return {**sample, "len.txt": str(len(sample["image.jpg"])).encode()}


def run_with(root: Path, function: Any, **transform: Any) -> tuple[MemoryStore, list[Any]]:
    cfg = config(workers=2, maxSamplesPerShard=7)
    cfg["transform"] = {"function": {"name": "t:f"}, **transform}
    store = MemoryStore()
    make_plan(cfg, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    reports = []
    with pytest.MonkeyPatch.context() as mp:  # each worker loads its own transformer, as a pod would
        mp.setattr(Transformer, "from_config", classmethod(lambda cls, c: Transformer(c, function)))
        for i in range(2):
            reports.append(convert(cfg, i, store, VolumeSource(str(root)), progress_interval=0))  # type: ignore[arg-type]
    return store, reports


def test_skips_are_counted_by_reason_with_examples_and_the_rest_is_written(
    pets: tuple[Path, exampledata.Manifest],
) -> None:
    root, manifest = pets
    store, reports = run_with(root, every_third)
    complete = sorted(manifest["complete"])
    dropped = [k for k in complete if k.startswith("B")]
    failed = [k for k in complete if k.startswith("S")]
    kept = [k for k in complete if k[0] not in "BS"]
    assert dropped and failed and kept
    written: dict[str, dict[str, bytes]] = {}
    for name, data in store.objects.items():
        if name.endswith(".tar"):
            written.update(members(data))
    assert sorted(written) == kept
    assert all(v["len.txt"] == str(len(v["image.jpg"])).encode() for v in written.values())
    counts: dict[str, int] = {}
    for r in reports:
        for reason, n in r.skipped.items():
            counts[reason] = counts.get(reason, 0) + n
    assert counts == {DROPPED: len(dropped), "transform-error:KeyError": len(failed)}
    report = json.loads(store.objects[f"{BASE}report-w0000.json"])
    assert report["consumed"] == report["partitionSamples"]
    assert set(report["skipExamples"]) <= {DROPPED, "transform-error:KeyError"}
    assert all(k in complete for keys in report["skipExamples"].values() for k in keys)
    assert sum(r.written for r in reports) == len(kept)


def test_a_transform_that_fails_on_every_sample_stops_the_worker_with_the_first_error(
    pets: tuple[Path, exampledata.Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sharded_dataset_operator.pods.converter as main

    monkeypatch.setattr(main, "FAIL_FAST_SAMPLES", 5)

    def broken(sample: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero")

    with pytest.raises(PermanentError, match=r"first 5 samples; first error .*ZeroDivisionError: division by zero"):
        run_with(pets[0], broken)


def test_a_resumed_worker_continues_at_the_right_plan_sample_and_keeps_its_skip_counts(
    pets: tuple[Path, exampledata.Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_converter import Crashing

    root, _ = pets
    cfg = config(workers=1, maxSamplesPerShard=4)
    cfg["reads"]["batchObjects"] = 4
    cfg["transform"] = {"function": {"name": "t:f"}}
    monkeypatch.setattr(Transformer, "from_config", classmethod(lambda cls, c: Transformer(c, every_third)))
    clean = MemoryStore()
    make_plan(cfg, clean, VolumeSource(str(root)))  # type: ignore[arg-type]
    expected = convert(cfg, 0, clean, VolumeSource(str(root)))  # type: ignore[arg-type]
    store = MemoryStore()
    make_plan(cfg, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="killed"):
        convert(cfg, 0, store, Crashing(str(root), budget=70))  # type: ignore[arg-type]
    again = convert(cfg, 0, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    assert again.resumed_shards >= 2
    assert again.skipped == expected.skipped and again.consumed == expected.consumed == again.partition
    assert again.written == expected.written and again.shards == expected.shards
    tars = {k: v for k, v in store.objects.items() if k.endswith(".tar")}
    assert tars == {k: v for k, v in clean.objects.items() if k.endswith(".tar")}
