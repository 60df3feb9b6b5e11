"""Unit tests for the example-data generator (no network)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sds_tools import exampledata as ed

N = 60
KIB = 24  # small samples keep the tests fast


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return dict(ed.generate(N, seed=7, sample_kib=KIB))


@pytest.fixture(scope="module")
def manifest() -> ed.Manifest:
    return ed.plan(N, seed=7, sample_kib=KIB).manifest


def _labels(list_txt: bytes) -> dict[str, tuple[int, int, int]]:
    out: dict[str, tuple[int, int, int]] = {}
    for line in list_txt.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, cls, species, breed = line.split()
        out[key] = (int(cls), int(species), int(breed))
    return out


def test_breeds_match_oxford() -> None:
    by_name = {b.name: b for b in ed.BREEDS}
    assert len(by_name) == 37
    assert [b.class_id for b in ed.BREEDS] == list(range(1, 38))
    assert (by_name["Abyssinian"].class_id, by_name["Abyssinian"].species) == (1, 1)
    assert by_name["boxer"].class_id == 9 and by_name["British_Shorthair"].class_id == 10
    assert (by_name["yorkshire_terrier"].class_id, by_name["yorkshire_terrier"].breed_id) == (37, 25)
    assert sorted(b.breed_id for b in ed.BREEDS if b.species == 1) == list(range(1, 13))
    assert sorted(b.breed_id for b in ed.BREEDS if b.species == 2) == list(range(1, 26))
    assert all((b.species == 1) == b.name[0].isupper() for b in ed.BREEDS)


def test_keys_round_robin() -> None:
    assert ed.sample_key(0) == "Abyssinian_1"
    assert ed.sample_key(36) == "yorkshire_terrier_1"
    assert ed.sample_key(37) == "Abyssinian_2"


def test_deterministic() -> None:
    first = list(ed.generate(30, seed=3, sample_kib=KIB))
    ed._build_pool.cache_clear()
    second = list(ed.generate(30, seed=3, sample_kib=KIB))
    assert first == second
    assert dict(ed.generate(30, seed=4, sample_kib=KIB)) != dict(first)


def test_images_and_trimaps_decode(files: dict[str, bytes]) -> None:
    jpgs = {p: b for p, b in files.items() if p.startswith("images/") and "/._" not in p and b}
    assert jpgs
    for path, data in jpgs.items():
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.format == "JPEG" and img.mode == "RGB"
        assert min(img.size) >= 16
        png = files.get(path.replace("images/", "annotations/trimaps/").replace(".jpg", ".png"))
        if png:
            tri = Image.open(io.BytesIO(png))
            tri.load()
            assert tri.format == "PNG" and tri.mode == "L"
            assert tri.size == img.size
            assert {value for _, value in tri.getcolors()} == {1, 2, 3}


def test_list_txt(files: dict[str, bytes], manifest: ed.Manifest) -> None:
    text = files[ed.LIST_PATH]
    header = text.decode().splitlines()[:6]
    assert all(line.startswith("#") for line in header)
    labels = _labels(text)
    keys = list(labels)
    assert keys == sorted(keys, key=str.lower)
    for key in manifest["complete"]:
        assert str(labels[key][0]) == manifest["classes"][key]
    breeds = {b.name: b for b in ed.BREEDS}
    for key, (cls, species, breed_id) in labels.items():
        b = breeds[key.rsplit("_", 1)[0]]
        assert (cls, species, breed_id) == (b.class_id, b.species, b.breed_id)


def test_manifest_matches_files(files: dict[str, bytes], manifest: ed.Manifest) -> None:
    labels = _labels(files[ed.LIST_PATH])
    jpgs = [p for p in files if p.startswith("images/") and "/._" not in p]
    assert manifest["samples"] == len(jpgs) == N
    assert manifest["files"] == len(files)
    assert manifest["total_bytes"] == sum(len(b) for b in files.values())
    inc = manifest["incomplete"]
    assert set(inc) == set(ed.REASONS)
    assert all(len(keys) >= 1 for keys in inc.values())

    def img(k: str) -> str:
        return f"images/{k}.jpg"

    def tri(k: str) -> str:
        return f"annotations/trimaps/{k}.png"

    for k in inc[ed.REASON_MISSING_TRIMAP]:
        assert files[img(k)] and tri(k) not in files and k in labels
    for k in inc[ed.REASON_EMPTY_TRIMAP]:
        assert files[img(k)] and files[tri(k)] == b"" and k in labels
    for k in inc[ed.REASON_MISSING_CLS]:
        assert files[img(k)] and files[tri(k)] and k not in labels
    for k in inc[ed.REASON_EMPTY_IMAGE]:
        assert files[img(k)] == b"" and files[tri(k)] and k in labels
    for k in manifest["complete"]:
        assert files[img(k)] and files[tri(k)] and k in labels
    all_incomplete = [k for keys in inc.values() for k in keys]
    assert len(all_incomplete) == len(set(all_incomplete))
    assert len(manifest["complete"]) + len(all_incomplete) == N
    assert manifest["complete"] == sorted(manifest["complete"], key=str.lower)

    (orphan,) = manifest["values_without_files"]
    assert orphan in labels
    assert not any(orphan in p for p in files if p != ed.LIST_PATH)


def test_junk_files(files: dict[str, bytes], manifest: ed.Manifest) -> None:
    junk = manifest["junk_files"]
    assert junk and any(p.startswith("images/._") for p in junk)
    assert any(p.startswith("annotations/trimaps/._") for p in junk)
    for path in junk:
        assert 0 < len(files[path]) < 100
        key = path.rsplit("/._", 1)[1].rsplit(".", 1)[0]
        assert key in manifest["complete"]
    assert {p for p in files if "/._" in p} == set(junk)


def test_defect_counts() -> None:
    assert ed.defect_count(9, 0.01) == 0
    assert ed.defect_count(10, 0.01) == 1
    assert ed.defect_count(7390, 0.01) == 18
    assert ed.defect_count(1000, 0) == 0
    clean = ed.plan(20, sample_kib=KIB, incomplete_fraction=0).manifest
    assert len(clean["complete"]) == 20 and not clean["junk_files"] and not clean["values_without_files"]
    small = ed.plan(5, sample_kib=KIB).manifest
    assert len(small["complete"]) == 5


def test_average_sample_size_near_target() -> None:
    p = ed.plan(200)
    files = dict(ed.render(p))
    sizes = [len(files[f"images/{k}.jpg"]) + len(files[f"annotations/trimaps/{k}.png"]) for k in p.manifest["complete"]]
    avg_kib = sum(sizes) / len(sizes) / 1024
    assert 0.75 * 110 <= avg_kib <= 1.25 * 110
    trimap_kib = sum(len(files[f"annotations/trimaps/{k}.png"]) for k in p.manifest["complete"])
    assert 4 <= trimap_kib / len(sizes) / 1024 <= 14


def test_unique_files_differ(files: dict[str, bytes]) -> None:
    jpgs = [b for p, b in files.items() if p.endswith(".jpg") and "/._" not in p and b]
    pngs = [b for p, b in files.items() if p.endswith(".png") and "/._" not in p and b]
    assert len(set(jpgs)) == len(jpgs)
    assert len(set(pngs)) == len(pngs)


def test_write_dir_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["--samples", "40", "--sample-kib", str(KIB), "--seed", "5", "--out", str(out)]
    assert ed.main(argv) == 0
    assert "files" in capsys.readouterr().out
    manifest = json.loads((out / "expected.json").read_text())
    assert manifest == json.loads(ed.manifest_json(ed.plan(40, seed=5, sample_kib=KIB).manifest))
    on_disk = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    on_disk.pop("expected.json")
    assert on_disk == dict(ed.generate(40, seed=5, sample_kib=KIB))
    assert manifest["total_bytes"] == sum(len(b) for b in on_disk.values())


def test_cli_rejects_bad_destinations() -> None:
    with pytest.raises(SystemExit):
        ed.main(["--ais-endpoint", "http://x"])  # no --bucket
    with pytest.raises(SystemExit):
        ed.main(["--samples", "3"])  # no destination
    with pytest.raises(SystemExit):
        ed.main(["--out", "/tmp/x", "--ais-endpoint", "http://x", "--bucket", "b"])


class _FakeObject:
    def __init__(self, store: dict[str, bytes], name: str) -> None:
        self.store, self.name = store, name

    def get_writer(self) -> _FakeObject:
        return self

    def put_content(self, content: bytes) -> None:
        self.store[self.name] = content


class _FakeBucket:
    def __init__(self, store: dict[str, bytes]) -> None:
        self.store = store
        self.created: list[bool] = []

    def create(self, exist_ok: bool = False) -> None:
        self.created.append(exist_ok)

    def head(self) -> None:  # the bucket does not exist yet: write_ais creates it
        from aistore.sdk.errors import AISError

        if not self.created:
            raise AISError(404, "", "http://ais:51080/v1/buckets/raw", "")  # what a HEAD's 404 raises

    def object(self, name: str) -> _FakeObject:
        return _FakeObject(self.store, name)


def test_write_ais_with_fake_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import aistore.sdk

    store: dict[str, bytes] = {}
    bucket = _FakeBucket(store)
    calls: list[tuple[Any, ...]] = []

    class FakeClient:
        def __init__(self, endpoint: str, token: str | None = None) -> None:
            calls.append(("client", endpoint))

        def bucket(self, name: str, provider: str = "ais") -> _FakeBucket:
            calls.append(("bucket", name, provider))
            return bucket

    monkeypatch.setattr(aistore.sdk, "Client", FakeClient)
    manifest = ed.write_ais("http://ais:51080", "raw", prefix="pets/", workers=2, n_samples=25, sample_kib=KIB)
    assert calls == [("client", "http://ais:51080"), ("bucket", "raw", "ais")]
    assert bucket.created == [True]
    expected = {"pets/" + p: b for p, b in ed.generate(25, sample_kib=KIB)}
    assert json.loads(store.pop("pets/expected.json")) == json.loads(ed.manifest_json(manifest))
    assert store == expected
