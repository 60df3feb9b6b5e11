"""Per-sample transforms in the converter (`spec.transform`): the user's function, then the built-in resize.

A transform sees a sample's members after grouping and labels and before encoding. What it does to a sample is
one of: members out (written), `None` (dropped, counted as `transform-dropped`) or an exception (skipped,
counted as `transform-error:<ExceptionType>`). Nothing is lost silently. Pillow is imported here only: the
operator never imports this module.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

from sharded_dataset_operator.core.spec import IMAGE_FORMATS

DROPPED = "transform-dropped"
ERROR_PREFIX = "transform-error:"
KEY = "__key__"  # as in webdataset: the sample's key, given to user functions; what they return for it is ignored

Members = list[tuple[str, bytes]]
UserFunction = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Skip:
    """A sample the transform did not produce: the counted reason and, for errors, what was raised."""

    reason: str
    detail: str = ""


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size within `max_side` pixels on the longest side, aspect kept, never larger than the original."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_image(data: bytes, max_side: int, fmt: str, quality: int) -> bytes:
    """`data` fitted within `max_side` and encoded as `fmt` (jpeg, png, webp), deterministically.

    An image already within the limit and already in the target format is returned byte for byte.
    """
    with Image.open(io.BytesIO(data)) as opened:
        if max(opened.size) <= max_side and (opened.format or "").lower() == fmt:
            return data
        img = ImageOps.exif_transpose(opened)  # pixels as displayed: the size limit applies to what users see
        img.load()
    size = fit(img.width, img.height, max_side)
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if fmt == "jpeg":
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        img.save(out, "JPEG", quality=quality, optimize=False, progressive=False)
    elif fmt == "webp":
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB")
        img.save(out, "WEBP", quality=quality, method=4)
    else:
        img.save(out, "PNG", optimize=False, compress_level=6)
    return out.getvalue()


def load_function(name: str, importer: Callable[[str], Any] = importlib.import_module) -> UserFunction:
    """`module:function` imported from the worker's image; an error here is the spec's, not a sample's."""
    module_name, _, attr = name.partition(":")
    module = importer(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AttributeError(f"{module_name} has no callable {attr!r}")
    result: UserFunction = fn
    return result


def _valid_members(result: Any) -> Members:
    if not isinstance(result, dict):
        raise TypeError(f"the function returned {type(result).__name__}, not a dict of members (or None)")
    members: Members = []
    for name, value in result.items():
        if name == KEY:
            continue
        if not isinstance(name, str) or not name or "/" in name or name.startswith("__") or name.startswith("."):
            raise ValueError(f"invalid member name {name!r}")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"member {name!r} is {type(value).__name__}, not bytes")
        members.append((name, bytes(value)))
    if not members:
        raise ValueError("the function returned no members (return None to drop a sample)")
    return members


class Transformer:
    """The configured transforms of one worker, applied sample by sample."""

    def __init__(self, config: dict[str, Any], function: UserFunction | None = None) -> None:
        self.function = function
        resize = config.get("resize") or None
        self.resize = resize
        self.resize_to = None
        if resize:
            member = str(resize["member"])
            stem = member.rsplit(".", 1)[0] if "." in member else member
            self.resize_to = f"{stem}.{IMAGE_FORMATS[str(resize['format'])]}"

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Transformer | None:
        if not config:
            return None
        fn = load_function(str(config["function"]["name"])) if config.get("function") else None
        return cls(config, fn)

    def apply(self, key: str, members: Members) -> Members | Skip:
        try:
            out: Members = members
            if self.function is not None:
                result = self.function({KEY: key, **dict(members)})
                if result is None:
                    return Skip(DROPPED)
                out = _valid_members(result)
            if self.resize is not None:
                out = self._resize(out)
        except Exception as e:  # a user's function may raise anything: count it, keep converting
            return Skip(f"{ERROR_PREFIX}{type(e).__name__}", f"{type(e).__name__}: {e}")
        return out

    def _resize(self, members: Members) -> Members:
        assert self.resize is not None and self.resize_to is not None
        member = str(self.resize["member"])
        if member not in {n for n, _ in members}:
            return members  # an optional member this sample does not have
        if self.resize_to != member and self.resize_to in {n for n, _ in members}:
            raise ValueError(f"resizing {member} to {self.resize_to} would overwrite an existing member")
        fmt, side, quality = str(self.resize["format"]), int(self.resize["maxSide"]), int(self.resize["quality"])
        return [
            (self.resize_to, resize_image(data, side, fmt, quality)) if name == member else (name, data)
            for name, data in members
        ]
