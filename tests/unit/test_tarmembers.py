"""A tar stream's members from its headers: the same names and sizes as Python's tarfile lists (without
directories, as AIS lists), whatever the chunking and the tar format; anything but a whole tar is an error."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from sharded_dataset_operator.core.tarmembers import BLOCK, TarFormatError, tar_members

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT}


def build(fmt: int, members: list[tarfile.TarInfo], data: bytes = b"") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data[: info.size] or b"\x07" * info.size) if info.isreg() else None)
    return out.getvalue()


def info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.size, i.type, i.linkname, i.mtime = size, kind, link, 0
    return i


def chunked(data: bytes, rng: random.Random, sizes: tuple[int, ...]) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        step = rng.choice(sizes)
        out.append(data[pos : pos + step])
        pos += step
    return out


def listed_by_tarfile(data: bytes) -> list[tuple[str, int]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [(m.name, m.size) for m in tar.getmembers() if not m.isdir()]


def sample_members(rng: random.Random, fmt: str) -> list[tarfile.TarInfo]:
    members = [info("dir/", kind=tarfile.DIRTYPE)]
    for i in range(rng.randrange(1, 40)):
        ext = rng.choice(["jpg", "cls", "json", "seg.png"])
        members.append(info(f"k{i:05d}.{ext}", rng.choice([0, 1, 511, 512, 513, rng.randrange(20_000)])))
    members.append(info("nested/" * 20 + "long-name.jpg", 700))  # 147 characters: ustar prefix, pax, GNU L
    if fmt != "ustar":
        members.append(info("ünïcödé-" + "x" * 120 + ".txt", 3))  # past ustar's 100+155 split rules
    members.append(info("link.jpg", kind=tarfile.SYMTYPE, link="k00000.jpg"))
    return members


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("seed", range(6))
def test_lists_what_tarfile_lists_for_any_chunking(fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    data = build(FORMATS[fmt], sample_members(rng, fmt))
    want = listed_by_tarfile(data)
    assert len(want) > 2
    for sizes in ((1,), (7, 511, 512, 513), (BLOCK,), (len(data),), (1 << 20,)):
        assert list(tar_members(chunked(data, rng, sizes))) == want, sizes


def test_a_pax_size_record_overrides_the_header_size() -> None:
    member = info("big.bin", 600)
    member.pax_headers = {"size": "600"}
    data = build(tarfile.PAX_FORMAT, [member])
    # the header's own size field says 0 bytes (as writers do past 8 GiB); the pax record rules
    header_at = data.index(b"big.bin")
    field = header_at + 124
    patched = data[:field] + b"00000000000\x00" + data[field + 12 :]
    assert list(tar_members([patched])) == [("big.bin", 600)]


def test_an_empty_archive_has_no_members() -> None:
    assert list(tar_members([build(tarfile.USTAR_FORMAT, [])])) == []


@pytest.mark.parametrize("cut", [1, BLOCK - 1, BLOCK, BLOCK + 100, -1024 - 1, -2 * 10240 + 1])
def test_a_stream_cut_short_is_an_error(cut: int) -> None:
    data = build(tarfile.USTAR_FORMAT, [info("a.jpg", 3000), info("a.cls", 2)])
    end = data.index(bytes(1024), 3 * BLOCK + 3072)  # where the end-of-archive blocks start
    cut_at = cut if cut > 0 else max(1, end + 1024 + cut)
    with pytest.raises(TarFormatError, match="ends"):
        list(tar_members([data[:cut_at]]))


def test_a_header_off_its_boundary_is_an_error() -> None:
    data = build(tarfile.USTAR_FORMAT, [info("a.jpg", 3000), info("a.cls", 2)])
    shifted = data[:BLOCK] + data[BLOCK + 512 :]  # the first member loses a block of its data
    with pytest.raises(TarFormatError, match="no ustar magic"):
        list(tar_members([shifted]))


def test_bytes_after_the_end_of_archive_are_an_error() -> None:
    data = build(tarfile.USTAR_FORMAT, [info("a.jpg", 3)])
    with pytest.raises(TarFormatError, match="after the end-of-archive"):
        list(tar_members([data, b"\x00" * 100, b"junk"]))
    assert list(tar_members([data, bytes(4096)])) == [("a.jpg", 3)]  # zero padding is fine


@pytest.mark.parametrize(
    "field", [b"0000000x000\x00", b"-0000000001\x00", b"00000000009\x00", b"  +17 \x00\x00\x00\x00\x00\x00"]
)
def test_a_size_that_is_not_an_octal_number_is_an_error(field: bytes) -> None:
    data = build(tarfile.USTAR_FORMAT, [info("a.jpg", 3)])
    with pytest.raises(TarFormatError, match="not a number"):
        list(tar_members([data[:124] + field + data[136:]]))


def test_an_extended_header_with_no_member_after_it_is_an_error() -> None:
    data = build(tarfile.PAX_FORMAT, [info("p" * 150 + ".jpg", 3)])
    pax_header_and_data = 2 * BLOCK
    with pytest.raises(TarFormatError, match="without the member"):
        list(tar_members([data[:pax_header_and_data] + bytes(10240)]))
