"""Where raw files come from: an AIS bucket (under a prefix) or a mounted volume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ..clients.ais import Ais, BucketNotFound
from ..samples import RawFile


class SourceError(Exception):
    """The source cannot be read at all (missing bucket or directory); retrying will not help."""


class Source(Protocol):
    def list(self) -> list[RawFile]:
        """Every file, with paths relative to the dataset root, sorted."""

    def read(self, path: str) -> bytes | None:
        """File content, or None if it vanished."""

    def describe(self) -> str: ...


class AisSource:
    def __init__(self, ais: Ais, bucket: str, provider: str, prefix: str) -> None:
        self.ais, self.bucket, self.provider, self.prefix = ais, bucket, provider, prefix

    def list(self) -> list[RawFile]:
        try:
            entries = list(self.ais.list_objects(self.bucket, self.provider, self.prefix))
        except BucketNotFound as e:
            raise SourceError(f"source bucket {self.describe()} not found") from e
        n = len(self.prefix)
        return sorted((RawFile(path=e.name[n:], size=e.size) for e in entries if len(e.name) > n), key=lambda f: f.path)

    def read(self, path: str) -> bytes | None:
        return self.ais.get(self.bucket, self.prefix + path, self.provider, direct=True)

    def describe(self) -> str:
        return f"{self.provider}://{self.bucket}/{self.prefix}"


class VolumeSource:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def list(self) -> list[RawFile]:
        if not self.root.is_dir():
            raise SourceError(f"source directory {self.root} does not exist")
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for fn in filenames:
                full = Path(dirpath) / fn
                if full.is_symlink() or not full.is_file():
                    continue
                files.append(RawFile(path=full.relative_to(self.root).as_posix(), size=full.stat().st_size))
        return sorted(files, key=lambda f: f.path)

    def read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except FileNotFoundError:
            return None

    def describe(self) -> str:
        return f"volume:{self.root}"
