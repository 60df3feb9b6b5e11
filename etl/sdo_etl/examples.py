"""The project's example ETLs, configured by environment variables (the ETL's init arguments).

- `ResizeImage`: an image object fitted within `MAX_SIDE` pixels and encoded as `FORMAT` (jpeg, png, webp) at
  `QUALITY`: exactly the converter's built-in resize (`spec.transform.resize`), run next to the data instead.
- `CenterCropShard`: for readers, on whole published shards (`spec.serve.etl`): every image member
  centre-cropped to a square of `SIZE` pixels.
"""

from __future__ import annotations

import copy
import io
import os
import tarfile

from aistore.sdk.etl.webserver.fastapi_server import FastAPIServer
from PIL import Image, ImageOps

from sharded_dataset_operator.pods.transforms import resize_image


class ResizeImage(FastAPIServer):  # type: ignore[misc]
    def __init__(self, host: str = "0.0.0.0", port: int = 8000) -> None:
        super().__init__(host=host, port=port)
        self.max_side = int(os.environ.get("MAX_SIDE", "256"))
        self.format = os.environ.get("FORMAT", "jpeg")
        self.quality = int(os.environ.get("QUALITY", "90"))

    def transform(self, data: bytes, path: str, etl_args: str) -> bytes:
        return resize_image(data, self.max_side, self.format, self.quality)


def center_crop(data: bytes, size: int, quality: int) -> bytes:
    """The image's centred square, scaled to `size` x `size` pixels, as RGB JPEG at `quality` (deterministic)."""
    with Image.open(io.BytesIO(data)) as opened:
        img = ImageOps.exif_transpose(opened)
        img.load()
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality, optimize=False, progressive=False)
    return out.getvalue()


def crop_shard(shard: bytes, member: str, size: int, quality: int) -> bytes:
    """A WebDataset tar shard with every `<key>.<member>` centre-cropped (`center_crop`); the other members,
    the order and each entry's metadata as they were."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(shard), mode="r:") as src, tarfile.open(fileobj=out, mode="w:") as dst:
        for info in src:
            f = src.extractfile(info) if info.isfile() else None
            if f is None:
                continue
            data = f.read()
            if info.name.endswith(f".{member}"):
                data = center_crop(data, size, quality)
            entry = copy.copy(info)
            entry.size = len(data)
            dst.addfile(entry, io.BytesIO(data))
    return out.getvalue()


class CenterCropShard(FastAPIServer):  # type: ignore[misc]
    """Applied by readers to published shards on the fly (`spec.serve.etl`): `MEMBER` (image.jpg) of every
    sample centre-cropped to `SIZE` (224) pixels square, JPEG `QUALITY` (90)."""

    def __init__(self, host: str = "0.0.0.0", port: int = 8000) -> None:
        super().__init__(host=host, port=port)
        self.member = os.environ.get("MEMBER", "image.jpg")
        self.size = int(os.environ.get("SIZE", "224"))
        self.quality = int(os.environ.get("QUALITY", "90"))

    def transform(self, data: bytes, path: str, etl_args: str) -> bytes:
        return crop_shard(data, self.member, self.size, self.quality)
