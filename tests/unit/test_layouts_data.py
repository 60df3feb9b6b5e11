"""Unit tests for the layout generators (ImageFolder, LJSpeech CSV, COCO, Hugging Face metadata): no network."""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import itertools
import json
import re
import time
import types
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from sds_tools import exampledata as ed
from sds_tools import layouts as lt

GENERATORS: dict[str, tuple[Callable[..., lt.LayoutData], Callable[..., lt.Expected]]] = {
    "imagefolder": (lt.imagefolder, lt.expected_imagefolder),
    "audio-csv": (lt.audio_csv, lt.expected_audio_csv),
    "coco": (lt.coco, lt.expected_coco),
    "hf-metadata": (lt.hf_metadata, lt.expected_hf_metadata),
}
PATTERNS = {  # the field patterns a resource would use for each layout
    "imagefolder": ["train/*/*.JPEG", "val/*/*.JPEG", "*.JPEG"],
    "audio-csv": ["wavs/*.wav", "*.wav", "metadata.csv"],
    "coco": ["train2017/*.jpg", "*.jpg", "annotations/*.json"],
    "hf-metadata": ["images/*.jpg", "*.jpg", "images/metadata.*"],
}


def _files(name: str, seed: int = 0, **size: Any) -> dict[str, bytes]:
    return dict(GENERATORS[name][0](seed, **size).files)


def _decode_jpeg(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "JPEG"
    return img


@pytest.mark.parametrize("name", list(GENERATORS))
def test_deterministic(name: str) -> None:
    first = list(GENERATORS[name][0](3).files)
    ed._build_pool.cache_clear()
    assert list(GENERATORS[name][0](3).files) == first
    assert GENERATORS[name][1](3) == GENERATORS[name][1](3)
    assert dict(GENERATORS[name][0](4).files) != dict(first)
    assert len({path for path, _ in first}) == len(first)  # no path twice


# ------------------------------------------------------------------------------------------------ imagefolder


def test_imagefolder_files_match_expected() -> None:
    files, e = _files("imagefolder"), lt.expected_imagefolder()
    wnids = sorted({p.split("/")[1] for p in files})
    assert len(wnids) == 6 and all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert e.classes == {w: i for i, w in enumerate(wnids)}
    images = {p: b for p, b in files.items() if p.endswith(".JPEG")}
    counts = lt.imagefolder_counts()
    assert sum(p.startswith("train/") for p in images) == counts["train"] == 30
    assert sum(p.startswith("val/") for p in images) == counts["val"] == 12
    for path, data in images.items():
        split, wnid, base = path.split("/")
        assert base.startswith(f"{wnid}_" if split == "train" else "ILSVRC2012_val_")
        key = base.removesuffix(".JPEG")
        if not data:
            assert key not in e.samples
            continue
        assert e.samples[key] == {"jpg": data, "cls": str(wnids.index(wnid)).encode()}
        assert e.splits[key] == split
        _decode_jpeg(data)
    val_numbers = sorted(int(p[-13:-5]) for p in images if p.startswith("val/"))
    assert val_numbers == list(range(1, 13))  # unique across classes
    assert len(e.samples) == len(e.splits) == len(images) - 1


def test_imagefolder_defects() -> None:
    files, e = _files("imagefolder"), lt.expected_imagefolder()
    empty = [p for p, b in files.items() if not b]
    assert len(empty) == 1 and re.fullmatch(r"train/(n\d{8})/\1_\d+\.JPEG", empty[0])
    junk = [p for p in files if not p.endswith(".JPEG")]
    assert len(junk) == 1 and re.fullmatch(r"train/n\d{8}/desktop\.ini", junk[0])
    assert e.skipped == {"empty:jpg": 1} and e.no_file_rows == 0


def test_imagefolder_val_numbers_are_a_permutation() -> None:
    paths = [
        p for p, _ in lt._folder(5, classes=50, train_per_class=1, val_per_class=50).paths() if p.startswith("val/")
    ]
    assert sorted(int(p[-13:-5]) for p in paths) == list(range(1, 2501))


def test_add_class_files_sorts_first() -> None:
    added = lt.add_class_files("aaa", 0, 3)
    assert [p for p, _ in added] == ["train/aaa/aaa_1.JPEG", "train/aaa/aaa_2.JPEG", "train/aaa/aaa_3.JPEG"]
    assert len({b for _, b in added}) == 3
    for _, data in added:
        _decode_jpeg(data)
    assert sorted([*lt.expected_imagefolder().classes, "aaa"])[0] == "aaa"


def test_imagefolder_full_counts_without_files() -> None:
    assert lt.imagefolder_counts(full=True) == {"train": 1281167, "val": 50000, "classes": 1000}
    counts = lt.imagenet_train_counts()
    assert len(counts) == 1000 and sum(counts) == 1281167
    assert min(counts) == 732 and max(counts) == 1300
    start = time.perf_counter()
    files = lt.imagefolder(full=True).files
    assert isinstance(files, types.GeneratorType)
    path, data = next(files)
    assert time.perf_counter() - start < 2  # streamed: nothing listed up front
    assert re.fullmatch(r"train/(n\d{8})/\1_1\.JPEG", path)
    assert 1024 < len(data) < 8 * 1024
    _decode_jpeg(data)


# ---------------------------------------------------------------------------------------------------- audio-csv


def test_audio_csv_files_match_expected() -> None:
    files, e = _files("audio-csv"), lt.expected_audio_csv()
    lines = files["metadata.csv"].decode().splitlines()
    rows = [line.split("|") for line in lines]
    assert all(len(r) in (1, 3) for r in rows)
    good = {r[0]: r for r in rows if len(r) == 3}
    texts = [t for r in good.values() for t in r[1:]]
    assert any('"' in t for t in texts) and any("," in t for t in texts) and any("'" in t for t in texts)
    assert any(not t.isascii() for t in texts)
    assert any(t.startswith('"') for t in texts)  # a leading quote is still a plain character
    wavs = {p.removeprefix("wavs/").removesuffix(".wav"): b for p, b in files.items() if p.startswith("wavs/")}
    assert len(wavs) == 20 and all(re.fullmatch(r"LJ001-\d{4}", k) for k in wavs)
    assert set(e.samples) == set(wavs) & set(good)
    for key, members in e.samples.items():
        assert members == {"wav": wavs[key], "txt": good[key][2].encode()}
        with wave.open(io.BytesIO(members["wav"])) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
            assert w.getnframes() > 0 and len(w.readframes(w.getnframes())) == 2 * w.getnframes()
    assert e.splits == {} and e.classes == {}


def test_audio_csv_defects() -> None:
    files, e = _files("audio-csv"), lt.expected_audio_csv()
    rows = [line.split("|") for line in files["metadata.csv"].decode().splitlines()]
    ids = {r[0] for r in rows if len(r) == 3}
    wavs = {p[5:-4] for p in files if p.startswith("wavs/")}
    assert len(ids - wavs) == 1 == e.no_file_rows  # a row without a wav
    assert len(wavs - ids) == 1 and e.skipped == {"missing:txt": 1}  # a wav without a row
    assert sum(len(r) == 1 for r in rows) == 1  # a malformed row


# --------------------------------------------------------------------------------------------------------- coco


def test_coco_document() -> None:
    files = _files("coco")
    raw = files[lt.COCO_ANNOTATIONS]
    doc = json.loads(raw)
    assert list(doc) == ["info", "licenses", "images", "annotations", "categories"]
    positions = [raw.index(f'"{k}":'.encode()) for k in doc]
    assert positions == sorted(positions)
    assert all(set(i) == {"id", "file_name", "width", "height"} for i in doc["images"])
    assert all(set(c) == {"id", "name", "supercategory"} for c in doc["categories"])
    keys = {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
    assert all(set(a) == keys and a["iscrowd"] == 0 and len(a["bbox"]) == 4 for a in doc["annotations"])
    order = [a["image_id"] for a in doc["annotations"]]
    runs = [i for j, i in enumerate(order) if j == 0 or order[j - 1] != i]
    assert len(runs) > len(set(order))  # not grouped by image
    per_image = {i["id"]: sum(a["image_id"] == i["id"] for a in doc["annotations"]) for i in doc["images"]}
    assert max(per_image.values()) <= 4


def test_coco_files_match_expected() -> None:
    files, e = _files("coco"), lt.expected_coco()
    doc = json.loads(files[lt.COCO_ANNOTATIONS])
    missing = [i for i in doc["images"] if f"train2017/{i['file_name']}" not in files]
    assert len(missing) == 1 == e.no_file_rows and e.skipped == {}
    assert len(e.samples) == len(doc["images"]) - 1 == 12
    bare = 0
    for image in doc["images"]:
        key = image["file_name"].removesuffix(".jpg")
        if image in missing:
            assert key not in e.samples
            continue
        data = files[f"train2017/{image['file_name']}"]
        assert re.fullmatch(r"\d{12}", key) and int(key) == image["id"]
        assert _decode_jpeg(data).size == (image["width"], image["height"])
        anns = sorted((a for a in doc["annotations"] if a["image_id"] == image["id"]), key=lambda a: a["id"])
        bare += not anns
        member = json.dumps(
            {"image": image, "annotations": anns}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
        assert e.samples[key] == {"jpg": data, "json": member.encode()}
    assert bare >= 1  # an image without annotations is still a sample


# -------------------------------------------------------------------------------------------------- hf-metadata


def _table_rows(table: str, data: bytes) -> list[dict[str, Any]]:
    if table == "jsonl":
        return [json.loads(line) for line in data.decode().splitlines()]
    if table == "csv":
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


@pytest.mark.parametrize("table", lt.TABLE_FORMATS)
def test_hf_metadata_files_match_expected(table: str) -> None:
    files, e = _files("hf-metadata", table=table), lt.expected_hf_metadata(table=table)
    assert not any(p.startswith("images/metadata.") and not p.endswith(table) for p in files)
    rows = _table_rows(table, files[f"images/metadata.{table}"])
    columns = ["file_name", "text", "score"] + ([] if table == "csv" else ["tags"])
    assert all(list(r) == columns for r in rows)
    images = {p.removeprefix("images/"): b for p, b in files.items() if p.endswith(".jpg")}
    assert len(images) == 16 and all(re.fullmatch(r"\d{4}\.jpg", n) for n in images)
    named = {r["file_name"] for r in rows}
    assert len(named - set(images)) == 1 == e.no_file_rows  # a row without a file
    assert len(set(images) - named) == 1 and e.skipped == {"missing:txt": 1}  # an image without a row
    for row in rows:
        key = row["file_name"].removesuffix(".jpg")
        if row["file_name"] not in images:
            assert key not in e.samples
            continue
        _decode_jpeg(images[row["file_name"]])
        value = {"score": row["score"]} if table == "csv" else {"score": row["score"], "tags": row["tags"]}
        assert isinstance(row["score"], str if table == "csv" else float)
        json_member = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        assert e.samples[key] == {"jpg": images[row["file_name"]], "txt": row["text"].encode(), "json": json_member}
    assert len(e.samples) == 15 and e.splits == {} and e.classes == {}


def test_hf_metadata_csv_quoting() -> None:
    raw = _files("hf-metadata", table="csv")["images/metadata.csv"]
    rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert rows[0] == ["file_name", "text", "score"]
    texts = [r[1] for r in rows[1:]]
    assert sum("\n" in t for t in texts) >= 2 and any('"' in t for t in texts) and any("," in t for t in texts)
    assert len(raw.decode().splitlines()) > len(rows)  # the embedded newlines are inside quoted fields
    for text in texts:
        if "\n" in text or '"' in text or "," in text:
            assert '"' + text.replace('"', '""') + '"' in raw.decode()


# ------------------------------------------------------------------------------------------------------ writers


@pytest.mark.parametrize("name", list(GENERATORS))
def test_write_layout_dir(name: str, tmp_path: Path) -> None:
    stats = lt.write_layout_dir(name, tmp_path, seed=2)
    on_disk = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    manifest = json.loads(on_disk.pop(ed.MANIFEST_NAME))
    generated = _files(name, 2)
    assert on_disk == generated
    assert stats == {
        "files": len(generated),
        "bytes": sum(map(len, generated.values())),
        "samples": len(manifest["samples"]),
    }
    e = GENERATORS[name][1](2)
    assert json.loads(lt.expected_json(e)) == manifest
    assert manifest["skipped"] == e.skipped and manifest["no_file_rows"] == e.no_file_rows
    for key, members in e.samples.items():
        for member, data in members.items():
            if member in lt.TEXT_MEMBERS:
                assert manifest["samples"][key][member] == {"text": data.decode()}
            else:
                assert manifest["samples"][key][member] == {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                }
    assert not any(fnmatch.fnmatch(ed.MANIFEST_NAME, p) for p in PATTERNS[name])


def test_cli_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ed.main(["--layout", "hf-metadata", "--table", "csv", "--samples", "8", "--out", str(tmp_path / "h")]) == 0
    assert (tmp_path / "h" / "images" / "metadata.csv").is_file()
    assert len(list((tmp_path / "h" / "images").glob("*.jpg"))) == 8
    assert ed.main(["--layout", "imagefolder", "--classes", "2", "--per-class", "3", "--out", str(tmp_path / "i")]) == 0
    manifest = json.loads((tmp_path / "i" / ed.MANIFEST_NAME).read_bytes())
    assert manifest == json.loads(lt.expected_json(lt.expected_imagefolder(0, classes=2, train_per_class=3)))
    assert "imagefolder" in capsys.readouterr().out
    for bad in (["--layout", "coco", "--table", "csv"], ["--table", "csv"], ["--layout", "audio-csv", "--full"]):
        with pytest.raises(SystemExit):
            ed.main([*bad, "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_imagefolder_full_shrunk_keeps_every_class_at_a_fraction_of_the_images() -> None:
    full = lt.imagefolder_counts(full=True)
    for shrink in (4, 16, 256):
        counts = lt.imagefolder_counts(full=True, shrink=shrink)
        assert counts["classes"] == 1000
        assert abs(counts["train"] - full["train"] / shrink) <= 500  # each class rounded
        assert counts["val"] == 1000 * max(1, round(50 / shrink))
    first = [p for p, _ in itertools.islice(lt.imagefolder(full=True, shrink=16).files, 200)]
    assert len({p.split("/")[1] for p in first}) > 1  # a class folder holds ~80 images, then the next begins
    with pytest.raises(ValueError, match="needs full"):
        lt.imagefolder_counts(shrink=4)
