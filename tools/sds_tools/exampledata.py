"""Deterministic Oxford-IIIT-Pet-shaped example dataset with real JPEG/PNG bytes.

Layout (relative paths)::

    images/<Breed>_<n>.jpg                 real JPEG photos (noise texture + an ellipse "pet")
    annotations/trimaps/<Breed>_<n>.png    8-bit grayscale trimaps, 1=pet 2=background 3=border
    annotations/list.txt                   Oxford's label list: ``<key> <class> <species> <breed id>``
    annotations/trainval.txt, test.txt     Oxford's official split: the same lines, each key in one of them

plus a few deliberately broken records (see :class:`Plan`) and a manifest ``expected.json`` that
describes what a correct converter must produce. Speed comes from rendering a small pool of base
images once and making every file unique by inserting a comment segment (JPEG ``COM``/PNG ``tEXt``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypedDict

from PIL import Image, ImageDraw

FULL_SAMPLES = 7390
DEFAULT_SAMPLES = 500
DEFAULT_SEED = 2023
DEFAULT_SAMPLE_KIB = 110
DEFAULT_INCOMPLETE_FRACTION = 0.01
MANIFEST_NAME = "expected.json"
LIST_PATH = "annotations/list.txt"
SPLIT_PATHS = {"trainval": "annotations/trainval.txt", "test": "annotations/test.txt"}


def split_of(key: str) -> str:
    """Oxford's split of a key, imitated: odd image numbers of a breed are trainval, even ones test."""
    return "trainval" if int(key.rsplit("_", 1)[1]) % 2 else "test"


REASON_MISSING_TRIMAP = "missing:trimap.png"
REASON_EMPTY_TRIMAP = "empty:trimap.png"
REASON_MISSING_CLS = "missing:cls"
REASON_EMPTY_IMAGE = "empty:image.jpg"
REASONS = (REASON_MISSING_TRIMAP, REASON_EMPTY_TRIMAP, REASON_MISSING_CLS, REASON_EMPTY_IMAGE)

_CATS = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau",
    "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx",
)  # fmt: skip
_DOGS = (
    "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer", "chihuahua",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
    "japanese_chin", "keeshond", "leonberger", "miniature_pinscher", "newfoundland", "pomeranian",
    "pug", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)  # fmt: skip

LIST_HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n"
    "#ID: 1:37 Class ids\n"
    "#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-12:Cat 1-25:Dog\n"
    "#All images with 1st letter as capital are cat images\n"
    "#images with small first letter are dog images\n"
)

# Base pool: photos are 4:3 (every 4th portrait), the trimap gets ~8% of the sample bytes.
_POOL_SIZE = 64
_BASE_W, _BASE_H = 500, 375
_MIN_SIDE = 16
_JPEG_QUALITY = 90
_NOISE_ALPHA = 0.3
_TRIMAP_SHARE = 0.08
_TRIMAP_LUT = [1 + v % 3 for v in range(256)]
# AppleDouble header ("._" resource-fork files macOS leaves on foreign file systems).
_JUNK_BYTES = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x00"


@dataclass(frozen=True)
class Breed:
    """One Oxford-IIIT Pet class."""

    name: str
    class_id: int  # 1..37, by lower-cased name
    species: int  # 1=cat 2=dog
    breed_id: int  # 1-based index within the species


def _make_breeds() -> tuple[Breed, ...]:
    names = sorted(_CATS + _DOGS, key=str.lower)
    per_species = {1: 0, 2: 0}
    out: list[Breed] = []
    for class_id, name in enumerate(names, start=1):
        species = 1 if name[0].isupper() else 2
        per_species[species] += 1
        out.append(Breed(name, class_id, species, per_species[species]))
    return tuple(out)


BREEDS: tuple[Breed, ...] = _make_breeds()

ImageState = Literal["ok", "empty"]
TrimapState = Literal["ok", "empty", "missing"]


@dataclass(frozen=True)
class Sample:
    """One generated record and its (possibly broken) files."""

    index: int
    key: str
    breed: Breed
    base: int  # index into the base pool
    image: ImageState = "ok"
    trimap: TrimapState = "ok"
    labelled: bool = True
    junk: bool = False  # also emit macOS "._" junk files next to the real ones

    @property
    def image_path(self) -> str:
        return f"images/{self.key}.jpg"

    @property
    def trimap_path(self) -> str:
        return f"annotations/trimaps/{self.key}.png"

    @property
    def junk_paths(self) -> tuple[str, str]:
        return f"images/._{self.key}.jpg", f"annotations/trimaps/._{self.key}.png"

    @property
    def reason(self) -> str | None:
        """Why a converter must drop this sample, or None if it is complete."""
        if self.image == "empty":
            return REASON_EMPTY_IMAGE
        if self.trimap == "missing":
            return REASON_MISSING_TRIMAP
        if self.trimap == "empty":
            return REASON_EMPTY_TRIMAP
        if not self.labelled:
            return REASON_MISSING_CLS
        return None


class Manifest(TypedDict):
    """Contents of ``expected.json``."""

    samples: int
    complete: list[str]
    classes: dict[str, str]
    incomplete: dict[str, list[str]]
    junk_files: list[str]
    values_without_files: list[str]
    total_bytes: int
    files: int
    seed: int
    sample_kib: int
    splits: dict[str, list[str]]  # the complete keys of each official split (trainval.txt, test.txt)


@dataclass(frozen=True)
class _Base:
    jpeg: bytes
    jpeg_insert_at: int
    png: bytes
    size: tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """Everything about a dataset except the rendered bytes (cheap; see :func:`render`)."""

    n_samples: int
    seed: int
    sample_kib: int
    incomplete_fraction: float
    samples: tuple[Sample, ...]
    values_without_files: tuple[str, ...]
    pool: tuple[_Base, ...]
    list_txt: bytes
    manifest: Manifest
    split_txt: tuple[tuple[str, bytes], ...] = ()  # (path, bytes) of the split lists


def sample_key(index: int) -> str:
    """Key of the ``index``-th sample (0-based): round-robin over breeds, numbered per breed from 1."""
    return f"{BREEDS[index % len(BREEDS)].name}_{index // len(BREEDS) + 1}"


def _sort_keys(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: (k.lower(), k))


def defect_count(n_samples: int, incomplete_fraction: float) -> int:
    """Samples per incomplete kind: ~fraction/4 each, >=1 when n >= 10 and fraction > 0."""
    if incomplete_fraction <= 0:
        return 0
    k = round(n_samples * incomplete_fraction / len(REASONS))
    if n_samples >= 10:
        k = max(k, 1)
    return min(k, n_samples // len(REASONS))


# --------------------------------------------------------------------------------------------- rendering


def _ellipse_box(rng: random.Random, width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0 = width * rng.uniform(0.06, 0.2), height * rng.uniform(0.06, 0.2)
    x1, y1 = width * rng.uniform(0.8, 0.94), height * rng.uniform(0.8, 0.94)
    return x0, y0, x1, y1


def _render_jpeg(rng: random.Random, size: tuple[int, int], box: tuple[float, float, float, float]) -> bytes:
    field = Image.frombytes("RGB", (8, 6), rng.randbytes(8 * 6 * 3)).resize(size, Image.Resampling.BICUBIC)
    ImageDraw.Draw(field).ellipse(box, fill=tuple(rng.randbytes(3)))
    noise = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    Image.blend(field, noise, _NOISE_ALPHA).save(buf, "JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


def _render_trimap(
    rng: random.Random, size: tuple[int, int], box: tuple[float, float, float, float], ring: int
) -> bytes:
    """Ellipse pet=1 with border=3 on background=2; a noisy band of width ``ring`` sets the PNG size."""
    clean = Image.new("L", size, 2)
    ImageDraw.Draw(clean).ellipse(box, fill=1, outline=3, width=max(1, min(size) // 60))
    noise = Image.frombytes("L", size, rng.randbytes(size[0] * size[1])).point(_TRIMAP_LUT)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, outline=255, width=ring)
    buf = io.BytesIO()
    Image.composite(noise, clean, mask).save(buf, "PNG")
    return buf.getvalue()


def _scaled(scale: float, portrait: bool = False) -> tuple[int, int]:
    w, h = max(_MIN_SIDE, round(_BASE_W * scale)), max(_MIN_SIDE, round(_BASE_H * scale))
    return (h, w) if portrait else (w, h)


def _tune(seed: int, sample_kib: int) -> tuple[float, int]:
    """Find the image scale and trimap ring width that hit the target sample size."""
    jpeg_target = sample_kib * 1024 * (1 - _TRIMAP_SHARE)
    scale = 1.0
    for _ in range(4):
        rng = random.Random(f"{seed}:tune")
        size = _scaled(scale)
        got = len(_render_jpeg(rng, size, _ellipse_box(rng, *size)))
        scale *= math.sqrt(jpeg_target / got)
    size = _scaled(scale)
    png_target = sample_kib * 1024 * _TRIMAP_SHARE
    lo, hi = 1, max(1, min(size) // 3)
    while lo < hi:  # smallest ring whose PNG reaches the target
        mid = (lo + hi) // 2
        rng = random.Random(f"{seed}:tune")
        if len(_render_trimap(rng, size, _ellipse_box(rng, *size), mid)) >= png_target:
            hi = mid
        else:
            lo = mid + 1
    return scale, lo


def _jpeg_insert_offset(jpeg: bytes) -> int:
    """Offset right after SOI and, if present, the JFIF APP0 segment."""
    if jpeg[2:4] == b"\xff\xe0":
        return 4 + int.from_bytes(jpeg[4:6], "big")
    return 2


@lru_cache(maxsize=4)
def _build_pool(seed: int, sample_kib: int, pool_size: int) -> tuple[_Base, ...]:
    scale, ring = _tune(seed, sample_kib)
    pool: list[_Base] = []
    for i in range(pool_size):
        rng = random.Random(f"{seed}:base:{i}")
        size = _scaled(scale, portrait=i % 4 == 3)
        box = _ellipse_box(rng, *size)
        jpeg = _render_jpeg(rng, size, box)
        png = _render_trimap(rng, size, box, ring)
        pool.append(_Base(jpeg, _jpeg_insert_offset(jpeg), png, size))
    return tuple(pool)


def _comment(sample: Sample, seed: int) -> bytes:
    return f"sds-example-data key={sample.key} seed={seed}".encode()


def _jpeg_bytes(base: _Base, comment: bytes) -> bytes:
    """Base JPEG with a COM segment carrying ``comment`` (unique bytes, same pixels)."""
    at = base.jpeg_insert_at
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return base.jpeg[:at] + segment + base.jpeg[at:]


def _png_bytes(base: _Base, comment: bytes) -> bytes:
    """Base PNG with a tEXt chunk after IHDR carrying ``comment``."""
    data = b"Comment\x00" + comment
    body = b"tEXt" + data
    chunk = len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    at = 8 + 25  # signature + IHDR chunk
    return base.png[:at] + chunk + base.png[at:]


def _jpeg_len(base: _Base, comment: bytes) -> int:
    return len(base.jpeg) + 4 + len(comment)


def _png_len(base: _Base, comment: bytes) -> int:
    return len(base.png) + 12 + len(b"Comment\x00") + len(comment)


# ------------------------------------------------------------------------------------------------ plan


def plan(
    n_samples: int,
    seed: int = DEFAULT_SEED,
    sample_kib: int = DEFAULT_SAMPLE_KIB,
    incomplete_fraction: float = DEFAULT_INCOMPLETE_FRACTION,
) -> Plan:
    """Decide every record, its defects and the manifest (renders only the small base pool).

    With ``k = defect_count(...)`` samples each: (a) trimap missing, (b) trimap empty, (c) no
    list.txt line, (d) empty image; up to 3 complete samples get macOS ``._`` junk files and one
    list.txt line names a key without files. ``incomplete_fraction=0`` gives a clean dataset.
    """
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    if sample_kib < 1:
        raise ValueError("sample_kib must be >= 1")
    if not 0 <= incomplete_fraction <= 1:
        raise ValueError("incomplete_fraction must be within [0, 1]")
    pool = _build_pool(seed, sample_kib, min(_POOL_SIZE, n_samples))

    samples = [
        Sample(index=i, key=sample_key(i), breed=BREEDS[i % len(BREEDS)], base=i % len(pool)) for i in range(n_samples)
    ]
    k = defect_count(n_samples, incomplete_fraction)
    n_junk = min(3, n_samples - len(REASONS) * k) if k else 0
    picks = random.Random(f"{seed}:defects").sample(range(n_samples), len(REASONS) * k + n_junk)
    for j, idx in enumerate(picks):
        s = samples[idx]
        kind = j // k if k else len(REASONS)
        if kind == 0:
            samples[idx] = replace(s, trimap="missing")
        elif kind == 1:
            samples[idx] = replace(s, trimap="empty")
        elif kind == 2:
            samples[idx] = replace(s, labelled=False)
        elif kind == 3:
            samples[idx] = replace(s, image="empty")
        else:
            samples[idx] = replace(s, junk=True)
    orphans = (sample_key(n_samples),) if k else ()

    labels = {s.key: s.breed for s in samples if s.labelled}
    labels.update({key: BREEDS[n_samples % len(BREEDS)] for key in orphans})
    lines = [f"{key} {b.class_id} {b.species} {b.breed_id}\n" for key, b in _sorted_items(labels)]
    list_txt = (LIST_HEADER + "".join(lines)).encode()
    split_txt = tuple(
        (path, "".join(line for line in lines if split_of(line.split(" ", 1)[0]) == name).encode())
        for name, path in SPLIT_PATHS.items()
    )

    total, files = len(list_txt) + sum(len(b) for _, b in split_txt), 1 + len(split_txt)
    incomplete: dict[str, list[str]] = {r: [] for r in REASONS}
    complete: list[Sample] = []
    junk_files: list[str] = []
    for s in samples:
        comment = _comment(s, seed)
        base = pool[s.base]
        total += _jpeg_len(base, comment) if s.image == "ok" else 0
        total += _png_len(base, comment) if s.trimap == "ok" else 0
        files += 1 + (s.trimap != "missing")
        if s.junk:
            junk_files.extend(s.junk_paths)
            total += 2 * len(_JUNK_BYTES)
            files += 2
        reason = s.reason
        if reason is None:
            complete.append(s)
        else:
            incomplete[reason].append(s.key)

    complete_keys = _sort_keys(s.key for s in complete)
    by_key = {s.key: s for s in complete}
    manifest: Manifest = {
        "samples": n_samples,
        "complete": complete_keys,
        "classes": {key: str(by_key[key].breed.class_id) for key in complete_keys},
        "incomplete": {r: _sort_keys(keys) for r, keys in incomplete.items()},
        "junk_files": sorted(junk_files),
        "values_without_files": list(orphans),
        "total_bytes": total,
        "files": files,
        "seed": seed,
        "sample_kib": sample_kib,
        "splits": {name: [k for k in complete_keys if split_of(k) == name] for name in SPLIT_PATHS},
    }
    return Plan(
        n_samples, seed, sample_kib, incomplete_fraction, tuple(samples), orphans, pool, list_txt, manifest, split_txt
    )


def _sorted_items(labels: dict[str, Breed]) -> list[tuple[str, Breed]]:
    return [(key, labels[key]) for key in _sort_keys(labels)]


def render(p: Plan) -> Iterator[tuple[str, bytes]]:
    """Yield ``(relative path, bytes)`` for every dataset file (not ``expected.json``)."""
    yield LIST_PATH, p.list_txt
    yield from p.split_txt
    for s in p.samples:
        comment = _comment(s, p.seed)
        base = p.pool[s.base]
        yield s.image_path, _jpeg_bytes(base, comment) if s.image == "ok" else b""
        if s.trimap != "missing":
            yield s.trimap_path, _png_bytes(base, comment) if s.trimap == "ok" else b""
        if s.junk:
            for path in s.junk_paths:
                yield path, _JUNK_BYTES


def generate(
    n_samples: int,
    seed: int = DEFAULT_SEED,
    sample_kib: int = DEFAULT_SAMPLE_KIB,
    incomplete_fraction: float = DEFAULT_INCOMPLETE_FRACTION,
) -> Iterator[tuple[str, bytes]]:
    """Shortcut for ``render(plan(...))``."""
    return render(plan(n_samples, seed, sample_kib, incomplete_fraction))


def manifest_json(manifest: Manifest) -> bytes:
    """Serialized ``expected.json``."""
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------------------------- writers


def write_dir(
    root: Path,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    sample_kib: int = DEFAULT_SAMPLE_KIB,
    incomplete_fraction: float = DEFAULT_INCOMPLETE_FRACTION,
) -> Manifest:
    """Write the dataset under ``root`` plus ``root/expected.json``; return the manifest."""
    p = plan(n_samples, seed, sample_kib, incomplete_fraction)
    root = Path(root)
    made: set[Path] = set()
    for rel, data in render(p):
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
    (root / MANIFEST_NAME).write_bytes(manifest_json(p.manifest))
    return p.manifest


def _run_bounded(put: Callable[[str, bytes], object], items: Iterable[tuple[str, bytes]], workers: int) -> None:
    """Run ``put`` over ``items`` on a thread pool with a bounded number of files in flight."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[object]] = set()
        for name, data in items:
            if len(pending) >= 4 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()
            pending.add(pool.submit(put, name, data))
        for fut in wait(pending).done:
            fut.result()


def write_ais(
    endpoint: str,
    bucket: str,
    prefix: str = "",
    provider: str = "ais",
    workers: int = 8,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    sample_kib: int = DEFAULT_SAMPLE_KIB,
    incomplete_fraction: float = DEFAULT_INCOMPLETE_FRACTION,
    token: str | None = None,
) -> Manifest:
    """Upload the dataset to ``<provider>://<bucket>/<prefix>...`` (bucket created if missing; `token`: an
    AIS AuthN token)."""
    from aistore.sdk import Client

    p = plan(n_samples, seed, sample_kib, incomplete_fraction)
    from aistore.sdk.errors import AISError

    bck = Client(endpoint, token=token).bucket(bucket, provider=provider)
    try:
        bck.head()  # creating needs a cluster-wide right (AIS with AuthN): only when the bucket is missing
    except AISError as e:  # a HEAD's 404 has no body to tell ErrBckNotFound by
        if e.status_code != 404:
            raise
        bck.create(exist_ok=True)

    def put(name: str, data: bytes) -> object:
        return bck.object(prefix + name).get_writer().put_content(data)

    _run_bounded(put, render(p), max(1, workers))
    put(MANIFEST_NAME, manifest_json(p.manifest))
    return p.manifest


# ------------------------------------------------------------------------------------ small-file datasets

PROMOTE_ROOT = Path("/var/lib/ais/promote")
"""Where AIS targets accept files to promote into objects (the local cluster's target pods mount it from this host)."""

PROMOTE_BATCH_FILES = 400_000
"""Files per promote request (400 k took 191 s on the local cluster; 2.5 M in one request timed out)."""

SMALL_FIELDS = ({"pattern": "data/*.bin", "name": "bin"}, {"pattern": "meta/*.json", "name": "json"})


def small_files(n_samples: int, seed: int, size: int, missing_every: int = 100) -> Iterator[tuple[str, bytes]]:
    """A many-small-files dataset: ``data/<key>.bin`` (``size`` random bytes) and ``meta/<key>.json`` per
    sample, except that every ``missing_every``-th sample has no ``meta`` file (skipped as ``missing:json``)."""
    rng = random.Random(seed)
    for i in range(n_samples):
        key = f"s{i:08d}"
        yield f"data/{key}.bin", rng.randbytes(size)
        if missing_every and i % missing_every == missing_every - 1:
            continue
        yield f"meta/{key}.json", json.dumps({"i": i}).encode()


def small_counts(n_samples: int, missing_every: int = 100) -> dict[str, int]:
    """Complete samples and files of `small_files`."""
    missing = n_samples // missing_every if missing_every else 0
    return {"complete": n_samples - missing, "missing": missing, "files": 2 * n_samples - missing}


def write_small_ais(
    endpoint: str,
    bucket: str,
    n_samples: int,
    seed: int = 0,
    size: int = 4096,
    missing_every: int = 100,
    files_per_promote: int = PROMOTE_BATCH_FILES,
) -> dict[str, int]:
    """Create `small_files` as objects of a new bucket by promoting files (see `promote_files`)."""
    promote_files(endpoint, bucket, small_files(n_samples, seed, size, missing_every), files_per_promote)
    return small_counts(n_samples, missing_every)


def promote_files(
    endpoint: str, bucket: str, files: Iterable[tuple[str, bytes]], files_per_promote: int = PROMOTE_BATCH_FILES
) -> int:
    """Create `files` ((name, bytes), streamed) as objects of `bucket` (created if missing) by promoting them
    (fast: no HTTP request per object); returns how many.

    Files are staged and promoted `files_per_promote` at a time: a target counts a promoted directory's files
    before it answers the proxy, and for a few million files that outlasts the control-plane timeout.
    Only for the local cluster, whose targets run on this host and read `PROMOTE_ROOT`.
    """
    import shutil

    from aistore.sdk import Client

    client = Client(endpoint)
    bck = client.bucket(bucket)
    bck.create(exist_ok=True)
    staging = PROMOTE_ROOT / f"{bucket}-{os.getpid()}"

    def promote() -> None:
        job = bck.object("").promote(str(staging), recursive=True)
        if job:
            client.job(job).wait(timeout=1800)
        shutil.rmtree(staging, ignore_errors=True)

    staged = total = 0
    made: set[Path] = set()
    try:
        for name, data in files:
            path = staging / name
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(data)
            staged += 1
            if staged == files_per_promote:
                promote()
                total, staged, made = total + staged, 0, set()
        if staged:
            promote()
            total += staged
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return total


# ------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    from sds_tools.layouts import LAYOUT_NAMES, TABLE_FORMATS

    ap = argparse.ArgumentParser(
        prog="sds-example-data",
        description="Generate a deterministic example dataset (real JPEG/PNG/WAV bytes): Oxford-IIIT-Pet-shaped by "
        "default, or another --layout; writes the files plus expected.json.",
    )
    ap.add_argument("--layout", choices=("oxford", *LAYOUT_NAMES), default="oxford", help="dataset layout")
    size = ap.add_mutually_exclusive_group()
    size.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"oxford: images (default {DEFAULT_SAMPLES}); imagefolder: train images per class; audio-csv: clips; "
        "coco, hf-metadata: images",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help=f"oxford: full Oxford size ({FULL_SAMPLES} images); imagefolder: ImageNet-1k",
    )
    ap.add_argument("--shrink", type=int, help="imagefolder --full: ImageNet-1k's counts per class divided by N")
    ap.add_argument("--classes", type=int, help="imagefolder: number of classes")
    ap.add_argument("--per-class", type=int, help="imagefolder: train images per class (as --samples)")
    ap.add_argument("--val-per-class", type=int, help="imagefolder: val images per class")
    ap.add_argument("--table", choices=TABLE_FORMATS, help="hf-metadata: metadata table format (default jsonl)")
    ap.add_argument("--seed", type=int, default=None, help=f"default {DEFAULT_SEED} (oxford), 0 (other layouts)")
    kib_help = f"target KiB per jpg+png (oxford, default {DEFAULT_SAMPLE_KIB}) or per JPEG (other layouts: 3)"
    ap.add_argument("--sample-kib", type=int, default=None, help=kib_help)
    ap.add_argument("--incomplete-fraction", type=float, default=None, help="oxford only")
    dest = ap.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", type=Path, help="write to this directory")
    dest.add_argument("--ais-endpoint", help="AIStore endpoint URL (needs --bucket)")
    dest.add_argument(
        "--s3-bucket",
        help="write straight to this S3 bucket (S3_ENDPOINT, AWS_ACCESS_KEY_ID, ... from the environment)",
    )
    ap.add_argument("--bucket")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--provider", default="ais")
    ap.add_argument("--workers", type=int, default=8, help="upload threads")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``sds-example-data``)."""
    from sds_tools.layouts import layout_output, write_layout_ais, write_layout_dir
    from sds_tools.s3 import write_s3

    ap = _parser()
    args = ap.parse_args(argv)
    if args.ais_endpoint and not args.bucket:
        ap.error("--ais-endpoint needs --bucket")
    if args.out is not None and (args.bucket or args.prefix):
        ap.error("--bucket/--prefix only apply with --ais-endpoint")
    if args.s3_bucket and args.bucket:
        ap.error("--bucket is for --ais-endpoint; --s3-bucket names the S3 bucket")
    where = str(args.out) if args.out is not None else f"{args.provider}://{args.bucket}/{args.prefix}"
    if args.s3_bucket:
        where = f"s3://{args.s3_bucket}/{args.prefix}"
    start = time.perf_counter()
    takes = {  # the flags each layout takes besides the destination and --seed
        "oxford": {"samples", "full", "sample_kib", "incomplete_fraction"},
        "imagefolder": {"samples", "full", "shrink", "classes", "per_class", "val_per_class", "sample_kib"},
        "audio-csv": {"samples"},
        "coco": {"samples", "sample_kib"},
        "hf-metadata": {"samples", "table", "sample_kib"},
    }
    for flag in sorted(set().union(*takes.values()) - takes[args.layout]):
        if getattr(args, flag) not in (None, False):
            ap.error(f"--{flag.replace('_', '-')} does not apply to --layout {args.layout}")
    if args.layout != "oxford":
        if args.samples is not None and args.per_class is not None:
            ap.error("--samples and --per-class both give imagefolder's train images per class: give one")
        if args.shrink is not None and not args.full:
            ap.error("--shrink divides ImageNet-1k's counts: it needs --full")
        if args.full and any(v is not None for v in (args.classes, args.per_class, args.val_per_class)):
            ap.error("--full (ImageNet-1k's count) fixes --classes, --per-class and --val-per-class")
        main_size = {"imagefolder": "train_per_class", "audio-csv": "clips"}.get(args.layout, "images")
        flags = {
            main_size: args.per_class if args.per_class is not None else args.samples,
            "classes": args.classes,
            "val_per_class": args.val_per_class,
            "full": args.full or None,
            "shrink": args.shrink,
            "table": args.table,
            "kib": args.sample_kib,
        }
        size: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
        seed = 0 if args.seed is None else args.seed
        try:
            if args.out is not None:
                stats = write_layout_dir(args.layout, args.out, seed, **size)
            elif args.s3_bucket:
                files, expected, stats = layout_output(args.layout, seed, **size)
                write_s3(args.s3_bucket, [*files, (MANIFEST_NAME, expected)], args.prefix, args.workers)
            else:
                stats = write_layout_ais(
                    args.layout, args.ais_endpoint, args.bucket, args.prefix, args.provider, args.workers, seed, **size
                )
        except ValueError as exc:
            ap.error(str(exc))
        print(
            f"sds-example-data: {stats['files']} files, {stats['bytes'] / 2**20:.1f} MiB "
            f"({args.layout}, {stats['samples']} samples) -> {where} in {time.perf_counter() - start:.1f} s"
        )
        return 0
    n = FULL_SAMPLES if args.full else (DEFAULT_SAMPLES if args.samples is None else args.samples)
    seed = DEFAULT_SEED if args.seed is None else args.seed
    kib = DEFAULT_SAMPLE_KIB if args.sample_kib is None else args.sample_kib
    fraction = DEFAULT_INCOMPLETE_FRACTION if args.incomplete_fraction is None else args.incomplete_fraction
    try:
        if args.out is not None:
            manifest = write_dir(args.out, n, seed, kib, fraction)
        elif args.s3_bucket:
            p = plan(n, seed, kib, fraction)
            manifest = p.manifest
            write_s3(args.s3_bucket, [*render(p), (MANIFEST_NAME, manifest_json(manifest))], args.prefix, args.workers)
        else:
            manifest = write_ais(
                args.ais_endpoint, args.bucket, args.prefix, args.provider, args.workers, n, seed, kib, fraction
            )
    except ValueError as exc:
        ap.error(str(exc))
    secs = time.perf_counter() - start
    print(
        f"sds-example-data: {manifest['files']} files, {manifest['total_bytes'] / 2**20:.1f} MiB "
        f"({n} samples, {len(manifest['complete'])} complete) -> {where} in {secs:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
