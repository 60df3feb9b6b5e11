"""Deterministic example datasets in four more layouts (ImageNet-style class folders, LJSpeech, COCO, Hugging Face
imagefolder with a metadata table), each with what a correct conversion must produce (:class:`Expected`).

Generators stream ``(relative path, bytes)`` (``imagefolder(full=True)``, ImageNet-1k's count, holds no file list);
JPEGs are the Oxford generator's pooled base images made unique by a comment segment.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import struct
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sds_tools.exampledata import MANIFEST_NAME, _build_pool, _jpeg_bytes, _run_bounded

LAYOUT_NAMES = ("imagefolder", "audio-csv", "coco", "hf-metadata")
TABLE_FORMATS = ("jsonl", "csv", "parquet")
TEXT_MEMBERS = frozenset({"cls", "txt", "json"})  # members that hold a value (text); the others hold file bytes
DEFAULT_KIB = 3  # target size of a synthetic JPEG
_POOL_SIZE = 16


@dataclass
class LayoutData:
    files: Iterator[tuple[str, bytes]]  # (relative path, content), deterministic order


@dataclass
class Expected:
    samples: dict[str, dict[str, bytes]]  # sample key -> member name -> exact bytes of that member in the shards
    splits: dict[str, str]  # sample key -> split name ({} when the layout has no splits)
    skipped: dict[str, int]  # skip reason -> count
    no_file_rows: int  # table/annotation rows that name no existing file
    classes: dict[str, int]  # class name -> index ({} when not a class layout)


def _jpeg(seed: int, kib: int, i: int, rel: str) -> bytes:
    """The ``i``-th pool image made unique by a comment naming ``rel``."""
    return _jpeg_bytes(_build_pool(seed, kib, _POOL_SIZE)[i % _POOL_SIZE], f"sds-layout {rel} seed={seed}".encode())


def _dumps(value: object) -> bytes:  # a JSON member as the converter writes it
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"{name} must be >= 1")


# ----------------------------------------------------------------------------------------------- imagefolder

IMAGENET_TRAIN, IMAGENET_VAL, IMAGENET_CLASSES = 1_281_167, 50_000, 1000
_IMAGENET_MIN, _IMAGENET_MAX = 732, 1300
_DESKTOP_INI = b"[.ShellClassInfo]\r\nIconResource=C:\\Windows\\System32\\imageres.dll,-3\r\n"


@lru_cache(maxsize=1)
def imagenet_train_counts() -> tuple[int, ...]:
    """Train images per class (generation order) summing to ImageNet's 1,281,167; 732 to 1,300 per class."""
    rng = random.Random("imagenet-train-counts")
    counts = [_IMAGENET_MAX] * IMAGENET_CLASSES
    counts[rng.randrange(IMAGENET_CLASSES)] = _IMAGENET_MIN
    deficit = sum(counts) - IMAGENET_TRAIN
    while deficit:
        i = rng.randrange(IMAGENET_CLASSES)
        cut = min(deficit, rng.randint(1, 400), counts[i] - _IMAGENET_MIN - 1)
        if cut > 0:
            counts[i] -= cut
            deficit -= cut
    return tuple(counts)


@dataclass(frozen=True)
class _Folder:
    seed: int
    kib: int
    wnids: tuple[str, ...]  # generation order (not sorted)
    train: tuple[int, ...]  # train images per class, generation order
    val: int  # val images per class
    val_perm: tuple[int, int]  # val number of the i-th val image: (a * i + b) % n_val + 1
    empty: tuple[int, int] | None  # (class, n) of the 0-byte train image
    junk: int | None  # class whose train folder gets a desktop.ini

    def class_index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(sorted(self.wnids))}

    def paths(self) -> Iterator[tuple[str, str]]:
        """(relative path, "jpg" | "empty" | "junk") of every file."""
        for c, wnid in enumerate(self.wnids):
            for n in range(1, self.train[c] + 1):
                yield f"train/{wnid}/{wnid}_{n}.JPEG", "empty" if (c, n) == self.empty else "jpg"
            if c == self.junk:
                yield f"train/{wnid}/desktop.ini", "junk"
        n_val, (a, b) = max(1, len(self.wnids) * self.val), self.val_perm
        for c, wnid in enumerate(self.wnids):
            for j in range(self.val):
                yield f"val/{wnid}/ILSVRC2012_val_{(a * (c * self.val + j) + b) % n_val + 1:08d}.JPEG", "jpg"

    def files(self) -> Iterator[tuple[str, bytes]]:
        for i, (rel, kind) in enumerate(self.paths()):  # streamed: no file list
            data = _jpeg(self.seed, self.kib, i, rel) if kind == "jpg" else b"" if kind == "empty" else _DESKTOP_INI
            yield rel, data

    def expected(self) -> Expected:
        out = Expected({}, {}, {"empty:jpg": 1} if self.empty else {}, 0, self.class_index())
        for i, (rel, kind) in enumerate(self.paths()):
            if kind == "jpg":
                split, wnid, base = rel.split("/")
                key = base.removesuffix(".JPEG")
                out.samples[key] = {"jpg": _jpeg(self.seed, self.kib, i, rel), "cls": str(out.classes[wnid]).encode()}
                out.splits[key] = split
        return out


def _folder(
    seed: int, *, classes: int = 6, train_per_class: int = 5, val_per_class: int = 2, full: bool = False,
    kib: int = DEFAULT_KIB, shrink: int = 1,
) -> _Folder:  # fmt: skip
    _positive(kib=kib, shrink=shrink)
    if shrink > 1 and not full:
        raise ValueError("shrink divides ImageNet-1k's counts: it needs full")
    if full:
        classes, val_per_class = IMAGENET_CLASSES, max(1, round(IMAGENET_VAL / IMAGENET_CLASSES / shrink))
        train = tuple(max(1, round(n / shrink)) for n in imagenet_train_counts())
    else:
        _positive(classes=classes, train_per_class=train_per_class)
        if val_per_class < 0:
            raise ValueError("val_per_class must be >= 0")
        train = (train_per_class,) * classes
    rng = random.Random(f"{seed}:imagefolder")
    wnids = tuple(f"n{v:08d}" for v in rng.sample(range(1_000_000, 15_000_000), classes))
    n_val = max(1, classes * val_per_class)
    a = rng.randrange(1, max(2, n_val))
    while math.gcd(a, n_val) != 1:
        a += 1
    perm = (a, rng.randrange(n_val))
    empty = None if full or sum(train) < 2 else (rng.randrange(classes), rng.randint(1, train_per_class))
    junk = None if full else rng.randrange(classes)
    return _Folder(seed, kib, wnids, train, val_per_class, perm, empty, junk)


def imagefolder(seed: int = 0, **size: Any) -> LayoutData:
    """ImageNet-shaped class folders. Size: ``classes=6, train_per_class=5, val_per_class=2, kib=3``, or
    ``full=True``: ImageNet-1k's counts (1000 classes, 1,281,167 + 50,000 images), streamed, without defects;
    with ``shrink=N`` each class's counts divided by N (rounded, at least 1: 1000 classes at 1/N of the images).
    Otherwise one train image is empty (skipped as ``empty:jpg``) and one class folder has a ``desktop.ini``."""
    return LayoutData(_folder(seed, **size).files())


def expected_imagefolder(seed: int = 0, **size: Any) -> Expected:
    return _folder(seed, **size).expected()


def imagefolder_counts(full: bool = False, shrink: int = 1, **size: int) -> dict[str, int]:
    """Image files per split (the 0-byte one included) and classes of ``imagefolder(**size)``, without its files."""
    f = _folder(0, full=full, shrink=shrink, **size)
    return {"train": sum(f.train), "val": f.val * len(f.wnids), "classes": len(f.wnids)}


def imagefolder_classes(**size: Any) -> list[str]:
    """The class folder names of ``imagefolder(**size)``, sorted."""
    return sorted(_folder(0, **size).wnids)


def add_class_files(name: str, seed: int, count: int, kib: int = DEFAULT_KIB) -> list[tuple[str, bytes]]:
    """``count`` train images of a new class folder ``name`` (members: jpg, cls)."""
    rels = [f"train/{name}/{name}_{n}.JPEG" for n in range(1, count + 1)]
    return [(rel, _jpeg(seed, kib, i, rel)) for i, rel in enumerate(rels)]


# ------------------------------------------------------------------------------------------------- audio-csv

_RATE = 22050
_SENTENCES = (  # (text, normalized text): quotes as plain characters, commas, apostrophes, non-ASCII; never "|"
    ('He said "no" twice.', 'He said "no" twice.'),
    ("Mr. Smith's report, dated 1832, was lost.", "Mister Smith's report, dated eighteen thirty-two, was lost."),
    ('"Stop," cried the café owner.', '"Stop," cried the café owner.'),
    ("The naïve clerk didn't count the £5.", "The naïve clerk didn't count the five pounds."),
    ("Dr. O'Brien wrote: \"the press is free\".", "Doctor O'Brien wrote: \"the press is free\"."),
    ("On Jan. 5 the court sat again, at 10 o'clock.", "On January fifth the court sat again, at ten o'clock."),
    ("Printing, in the only sense we care about,", "Printing, in the only sense we care about,"),
)  # fmt: skip


def _wav(seed: int, i: int) -> bytes:
    """A short tone with a little noise: 16-bit mono PCM at 22050 Hz."""
    rng = random.Random(f"{seed}:wav:{i}")
    n, freq, amp = int(_RATE * rng.uniform(0.04, 0.1)), rng.uniform(180.0, 900.0), rng.uniform(2000.0, 9000.0)
    step, buf = 2 * math.pi * freq / _RATE, io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setparams((1, 2, _RATE, n, "NONE", "not compressed"))
        frames = (int(amp * math.sin(step * t)) + rng.randint(-300, 300) for t in range(n))
        w.writeframes(struct.pack(f"<{n}h", *frames))
    return buf.getvalue()


@dataclass(frozen=True)
class _Audio:
    seed: int
    clips: int
    offset: int
    no_row: int  # clip without a metadata row

    def sentence(self, i: int) -> tuple[str, str]:
        return _SENTENCES[(i + self.offset) % len(_SENTENCES)]

    def files(self) -> Iterator[tuple[str, bytes]]:
        lines = [f"LJ001-{i:04d}|{'|'.join(self.sentence(i))}" for i in range(1, self.clips + 2) if i != self.no_row]
        lines.append(f"LJ001-{self.clips + 2:04d} this line lost its separators")  # malformed: one field
        yield "metadata.csv", ("\n".join(lines) + "\n").encode()  # the row of clips + 1 names no wav
        for i in range(1, self.clips + 1):
            yield f"wavs/LJ001-{i:04d}.wav", _wav(self.seed, i)

    def expected(self) -> Expected:
        ids = (i for i in range(1, self.clips + 1) if i != self.no_row)
        samples = {f"LJ001-{i:04d}": {"wav": _wav(self.seed, i), "txt": self.sentence(i)[1].encode()} for i in ids}
        return Expected(samples, {}, {"missing:txt": 1}, 1, {})


def _audio(seed: int, *, clips: int = 20) -> _Audio:
    _positive(clips=clips)
    rng = random.Random(f"{seed}:audio-csv")
    return _Audio(seed, clips, rng.randrange(len(_SENTENCES)), rng.randint(1, clips))


def audio_csv(seed: int = 0, **size: Any) -> LayoutData:
    """LJSpeech-shaped (size: ``clips=20``): one metadata row without a wav, one wav without a row (skipped as
    ``missing:txt``) and one malformed row (a single field)."""
    return LayoutData(_audio(seed, **size).files())


def expected_audio_csv(seed: int = 0, **size: Any) -> Expected:
    return _audio(seed, **size).expected()


# ------------------------------------------------------------------------------------------------------ coco

COCO_ANNOTATIONS = "annotations/instances_train2017.json"
_CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"}, {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"}, {"id": 44, "name": "bottle", "supercategory": "kitchen"},
)  # fmt: skip
_COCO_HEAD = {
    "info": {"description": "sds synthetic COCO-shaped data", "version": "1.0", "year": 2017},
    "licenses": [{"id": 1, "name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}],
}


@dataclass(frozen=True)
class _Coco:
    seed: int
    kib: int
    images: list[dict[str, Any]]  # every image entry, by id
    annotations: list[dict[str, Any]]  # shuffled
    bases: dict[int, int]  # image id -> pool index of its JPEG (absent: the image entry without a file)

    def jpegs(self) -> Iterator[tuple[str, dict[str, Any], bytes]]:
        for entry in self.images:
            if entry["id"] in self.bases:
                rel = f"train2017/{entry['file_name']}"
                yield rel, entry, _jpeg(self.seed, self.kib, self.bases[entry["id"]], rel)

    def files(self) -> Iterator[tuple[str, bytes]]:
        doc = _COCO_HEAD | {"images": self.images, "annotations": self.annotations, "categories": list(_CATEGORIES)}
        yield COCO_ANNOTATIONS, json.dumps(doc, ensure_ascii=False).encode()
        for rel, _, data in self.jpegs():
            yield rel, data

    def expected(self) -> Expected:
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in sorted(self.annotations, key=lambda a: int(a["id"])):
            by_image.setdefault(ann["image_id"], []).append(ann)
        samples: dict[str, dict[str, bytes]] = {}
        for _, entry, data in self.jpegs():
            member = _dumps({"image": entry, "annotations": by_image.get(entry["id"], [])})
            samples[entry["file_name"].removesuffix(".jpg")] = {"jpg": data, "json": member}
        return Expected(samples, {}, {}, 1, {})


def _coco(seed: int, *, images: int = 12, kib: int = DEFAULT_KIB) -> _Coco:
    _positive(images=images, kib=kib)
    rng, pool = random.Random(f"{seed}:coco"), _build_pool(seed, kib, _POOL_SIZE)
    ids = sorted(rng.sample(range(1, 600_000), images + 1))
    missing = ids[rng.randrange(len(ids))]  # an image entry without a file
    bare = rng.choice([i for i in ids if i != missing])  # an image without annotations
    entries: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for k, image_id in enumerate(ids):
        w, h = pool[k % len(pool)].size
        entries.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": w, "height": h})
        for _ in range(0 if image_id == bare else rng.randint(0, 4)):
            x, y = round(rng.uniform(0, w * 0.6), 2), round(rng.uniform(0, h * 0.6), 2)
            bw, bh = round(rng.uniform(1, w - x), 2), round(rng.uniform(1, h - y), 2)
            x1, y1 = round(x + bw, 2), round(y + bh, 2)
            cat = rng.choice(_CATEGORIES)["id"]
            anns.append(
                {"id": 0, "image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh], "area": round(bw * bh, 2),
                 "iscrowd": 0, "segmentation": [[x, y, x1, y, x1, y1, x, y1]]}
            )  # fmt: skip
    for ann, ann_id in zip(anns, rng.sample(range(1, 2_000_000), len(anns)), strict=True):
        ann["id"] = ann_id
    rng.shuffle(anns)
    return _Coco(seed, kib, entries, anns, {image_id: k for k, image_id in enumerate(ids) if image_id != missing})


def coco(seed: int = 0, **size: Any) -> LayoutData:
    """COCO-shaped (size: ``images=12, kib=3``): annotations shuffled (not grouped by image), one image without
    annotations, one image entry without a file."""
    return LayoutData(_coco(seed, **size).files())


def expected_coco(seed: int = 0, **size: Any) -> Expected:
    return _coco(seed, **size).expected()


# ----------------------------------------------------------------------------------------------- hf-metadata

_CAPTIONS = (  # commas, double quotes, embedded newlines (quoted in CSV), non-ASCII
    "A dog, a cat and a bird.", 'The sign reads "OPEN", in red.', "Two lines:\nfirst, then second.",
    "Café au lait, served hot.", 'She wrote "bye",\nand left.', "plain caption",
)  # fmt: skip
_TAGS = ("animal", "outdoor", "indoor", "text", "food", "night", "portrait")


@dataclass(frozen=True)
class _Hf:
    seed: int
    images: int
    table: str
    kib: int
    rows: list[dict[str, Any]]  # file_name, text, score, tags; in table order

    def table_bytes(self) -> bytes:
        if self.table == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows).encode()
        if self.table == "csv":
            buf = io.StringIO(newline="")
            w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            w.writerow(["file_name", "text", "score"])
            w.writerows([r["file_name"], r["text"], str(r["score"])] for r in self.rows)
            return buf.getvalue().encode()
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            {"file_name": pa.string(), "text": pa.string(), "score": pa.float64(), "tags": pa.list_(pa.string())}
        )
        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(self.rows, schema=schema), out)
        return out.getvalue()

    def jpeg(self, n: int) -> bytes:
        return _jpeg(self.seed, self.kib, n, f"images/{n:04d}.jpg")

    def files(self) -> Iterator[tuple[str, bytes]]:
        yield f"images/metadata.{self.table}", self.table_bytes()
        for n in range(self.images):
            yield f"images/{n:04d}.jpg", self.jpeg(n)

    def expected(self) -> Expected:
        samples: dict[str, dict[str, bytes]] = {}
        for row in sorted(self.rows, key=lambda r: str(r["file_name"])):
            n = int(row["file_name"].removesuffix(".jpg"))
            if n < self.images:
                csv_json = {"score": str(row["score"])}  # CSV has no types: the score as written
                value = csv_json if self.table == "csv" else {"score": row["score"], "tags": row["tags"]}
                samples[f"{n:04d}"] = {"jpg": self.jpeg(n), "txt": row["text"].encode(), "json": _dumps(value)}
        return Expected(samples, {}, {"missing:txt": 1}, 1, {})


def _hf(seed: int, *, images: int = 16, table: str = "jsonl", kib: int = DEFAULT_KIB) -> _Hf:
    _positive(images=images, kib=kib)
    if table not in TABLE_FORMATS:
        raise ValueError(f"table must be one of {', '.join(TABLE_FORMATS)}")
    rng = random.Random(f"{seed}:hf-metadata")
    no_row = rng.randrange(images)  # an image without a row
    rows = [
        {"file_name": f"{n:04d}.jpg", "text": f"{_CAPTIONS[n % len(_CAPTIONS)]} #{n}",
         "score": round(rng.uniform(0, 10), 4), "tags": rng.sample(_TAGS, rng.randint(0, 3))}
        for n in range(images + 1)  # the row of n == images names no file
        if n != no_row
    ]  # fmt: skip
    rows.insert(rng.randrange(len(rows)), rows.pop())
    return _Hf(seed, images, table, kib, rows)


def hf_metadata(seed: int = 0, **size: Any) -> LayoutData:
    """Hugging Face imagefolder with ``images/metadata.<table>`` (size: ``images=16, table="jsonl", kib=3``):
    one row naming a missing file, one image without a row (skipped as ``missing:txt``)."""
    return LayoutData(_hf(seed, **size).files())


def expected_hf_metadata(seed: int = 0, **size: Any) -> Expected:
    return _hf(seed, **size).expected()


# --------------------------------------------------------------------------------------------------- writers

_PLANS: dict[str, Callable[..., _Folder | _Audio | _Coco | _Hf]] = {
    "imagefolder": _folder, "audio-csv": _audio, "coco": _coco, "hf-metadata": _hf,
}  # fmt: skip


def _member(name: str, data: bytes) -> dict[str, Any]:
    if name in TEXT_MEMBERS:
        return {"text": data.decode()}
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def expected_json(e: Expected) -> bytes:
    """``expected.json``: file members as {"sha256", "size"}, value members (cls, txt, json) as {"text"}."""
    samples = {k: {m: _member(m, d) for m, d in ms.items()} for k, ms in e.samples.items()}
    doc = {"samples": samples, "splits": e.splits, "skipped": e.skipped, "no_file_rows": e.no_file_rows}
    return (json.dumps(doc | {"classes": e.classes}, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()


def _written(name: str, seed: int, size: dict[str, Any]) -> tuple[Iterator[tuple[str, bytes]], bytes, dict[str, int]]:
    """Files, ``expected.json`` and stats (files, bytes: counted as the files stream by; samples).
    ImageNet's full count is too big to list in ``expected.json``: counts and classes only."""
    if name not in _PLANS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_NAMES)}")
    plan = _PLANS[name](seed, **size)
    if isinstance(plan, _Folder) and size.get("full"):
        counts = {"train": IMAGENET_TRAIN, "val": IMAGENET_VAL, "classes": IMAGENET_CLASSES}
        doc = {"counts": counts, "classes": plan.class_index(), "skipped": {}, "no_file_rows": 0}
        manifest, samples = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), counts["train"] + counts["val"]
    else:
        e = plan.expected()
        manifest, samples = expected_json(e), len(e.samples)
    stats = {"files": 0, "bytes": 0, "samples": samples}

    def counted() -> Iterator[tuple[str, bytes]]:
        for rel, data in plan.files():
            stats["files"] += 1
            stats["bytes"] += len(data)
            yield rel, data

    return counted(), manifest, stats


def expected(name: str, seed: int = 0, **size: Any) -> Expected:
    """What a correct conversion of layout ``name`` holds (small sizes only: held in memory)."""
    if name not in _PLANS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_NAMES)}")
    return _PLANS[name](seed, **size).expected()


def layout_output(name: str, seed: int = 0, **size: Any) -> tuple[Iterator[tuple[str, bytes]], bytes, dict[str, int]]:
    """Layout ``name``'s files (streamed), its ``expected.json`` and its stats (filled as the files stream by)."""
    return _written(name, seed, size)


def write_layout_dir(name: str, root: Path | str, seed: int = 0, **size: Any) -> dict[str, int]:
    """Write layout ``name`` under ``root`` plus ``root/expected.json``; return files, bytes and samples."""
    files, manifest, stats = _written(name, seed, size)
    root, made = Path(root), set()
    for rel, data in files:
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
    (root / MANIFEST_NAME).write_bytes(manifest)
    return stats


def write_layout_ais(
    name: str, endpoint: str, bucket: str, prefix: str = "", provider: str = "ais", workers: int = 8, seed: int = 0,
    token: str | None = None, **size: Any,
) -> dict[str, int]:  # fmt: skip
    """Upload layout ``name`` to ``<provider>://<bucket>/<prefix>`` (bucket created if missing) plus expected.json."""
    from aistore.sdk import Client
    from aistore.sdk.errors import AISError

    files, manifest, stats = _written(name, seed, size)
    bck = Client(endpoint, token=token).bucket(bucket, provider=provider)
    try:
        bck.head()  # creating needs a cluster-wide right (AIS with AuthN): only when the bucket is missing
    except AISError as e:
        if e.status_code != 404:
            raise
        bck.create(exist_ok=True)

    def put(rel: str, content: bytes) -> object:
        return bck.object(prefix + rel).get_writer().put_content(content)

    _run_bounded(put, files, max(1, workers))
    put(MANIFEST_NAME, manifest)
    return stats
