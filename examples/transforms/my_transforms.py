"""An example user transform for `spec.transform.function` (see examples/05-user-function.yaml).

`cats_with_foreground` keeps the cat samples of an Oxford-IIIT-Pet-shaped dataset (cat breeds are the keys
that start with a capital letter) and adds `fg.txt`: the share of the image the pet covers, read from the
trimap. Dog samples are dropped, which the operator counts as `transform-dropped`.

A transform gets the sample's members as `dict[str, bytes]` plus `__key__`, and returns the members to write
or None to drop the sample. It must be deterministic so that reruns write identical shards.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

TRIMAP_FOREGROUND = 1  # Oxford-IIIT Pet trimaps: 1 pet, 2 background, 3 border


def cats_with_foreground(sample: dict[str, Any]) -> dict[str, bytes] | None:
    if not sample["__key__"][:1].isupper():
        return None
    with Image.open(io.BytesIO(sample["trimap.png"])) as trimap:
        histogram = trimap.histogram()
    share = histogram[TRIMAP_FOREGROUND] / sum(histogram)
    members = {name: data for name, data in sample.items() if not name.startswith("__")}
    members["fg.txt"] = f"{share:.4f}".encode()
    return members
