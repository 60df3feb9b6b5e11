"""Where raw files come from: an AIS bucket (under a prefix) or a mounted volume.

A source is listed as a stream (`files`, in the source's own order: the planner sorts), read in batches
(`read_many`: Get-Batch for AIS, or one GET per file when the cluster lacks Get-Batch or the config asks
for it; direct file reads for a volume), and its label table is streamed line by line (`lines`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sharded_dataset_operator.clients.ais import Ais, BatchUnsupported, BucketNotFound, ListingError, MissingObject
from sharded_dataset_operator.core.samples import RawFile
from sharded_dataset_operator.pods.reads import Vanished

log = logging.getLogger("sds.converter")

READS_BATCH = "batch"
READS_OBJECT = "object"


class SourceError(Exception):
    """The source cannot be read at all (missing bucket or directory); retrying will not help."""


@dataclass(slots=True)
class ListingStats:
    files: int = 0
    pages: int = 0


@dataclass(slots=True)
class ReadStats:
    batch_requests: int = 0
    object_requests: int = 0
    files: int = 0


class Source(Protocol):
    listing: ListingStats
    reads: ReadStats

    def files(self) -> Iterator[RawFile]:
        """Every file once, paths relative to the dataset root; raises ListingError on an inconsistent listing."""
        ...

    def read_many(self, paths: Sequence[str]) -> list[bytes]:
        """Contents in order; raises MissingFile if one is gone."""
        ...

    def lines(self, path: str) -> Iterator[str] | None:
        """A text file's lines, streamed; None if it does not exist."""
        ...

    def open_file(self, path: str) -> BinaryIO | None:
        """A file to read and seek (a metadata table), None if it does not exist; the caller closes it."""
        ...

    def describe(self) -> str: ...


class AisSource:
    def __init__(
        self, ais: Ais, bucket: str, provider: str, prefix: str, reads: str = READS_BATCH, warm: bool = False
    ) -> None:
        self.ais, self.bucket, self.provider, self.prefix = ais, bucket, provider, prefix
        self.mode = reads
        self.warm = warm  # a remote bucket prefetched into AIS for this run: read with Get-Batch from AIS's copies
        self.listing = ListingStats()
        self.reads = ReadStats()

    @property
    def remote(self) -> bool:
        """A remote bucket (s3://... through AIS): listed as its backend has it, read at its current version."""
        return self.provider != "ais"

    def files(self) -> Iterator[RawFile]:
        n = len(self.prefix)
        if self.remote:
            # a remote bucket is listed by its own backend, page by page with continuation tokens (the targets'
            # count would only be of the objects AIS has cached so far)
            yield from self._listed(n)
            return
        # the bucket's own count, to check the listing against, asked for meanwhile (the summary is a job that
        # takes seconds; both see the same bucket unless it changes during the listing, which fails either way)
        with ThreadPoolExecutor(1, thread_name_prefix="count") as pool:
            counting = pool.submit(self.ais.object_count, self.bucket, self.provider, self.prefix)
            yield from self._listed(n)
            counted = counting.result()
        # AIS 5.0's paged listing can skip objects when a directory has siblings named like it plus a
        # character sorting before '/' (e.g. `train/` next to `train.txt`): cross-check the count.
        if counted != self.listing.files:
            raise ListingError(
                f"listing {self.describe()} returned {self.listing.files} objects but the cluster counts {counted}; "
                "refusing to convert a partial listing (names such as 'd.txt' next to a directory 'd/' trigger "
                "an AIS 5.0 paged-listing bug; renaming them avoids it)"
            )

    def _listed(self, n: int) -> Iterator[RawFile]:
        try:
            # the tag of a remote object is its backend's current ETag (a rewrite with the same size changes it)
            props = "name,size,checksum"
            pages = self.ais.list_pages(
                self.bucket, self.provider, self.prefix, props=props, ahead=True, remote_props=self.remote
            )
            for page in pages:
                self.listing.pages += 1
                for e in page:
                    self.listing.files += 1
                    if len(e.name) > n:
                        yield RawFile(e.name[n:], int(e.size or 0), str(e.checksum or ""))
        except BucketNotFound as e:
            raise SourceError(f"source bucket {self.describe()} not found") from e

    def read_many(self, paths: Sequence[str]) -> list[bytes]:
        names = [self.prefix + p for p in paths]
        if self.mode == READS_BATCH and (not self.remote or self.warm):
            try:
                out = self.ais.get_batch(self.bucket, names, self.provider)
                self.reads.batch_requests += 1
                self.reads.files += len(out)
                return out
            except MissingObject as e:
                if not self.remote:
                    raise Vanished(f"{e} (it disappeared during conversion)") from e
                # not (or no longer) in AIS although prefetched (evicted meanwhile): this batch from the backend
                log.info("%s: reading this batch from the remote store", e)
            except BatchUnsupported as e:
                log.warning("Get-Batch is not available (%s): reading one object at a time", e)
                self.mode = READS_OBJECT
        # One GET each. A remote bucket's objects are read at the backend's current version: AIS fetches an object
        # it does not hold, or holds an older copy of, and serves the rest from its targets (Get-Batch serves only
        # what AIS holds, without asking the backend: it would read stale copies and miss uncached objects).
        out = []
        for name in names:
            if self.remote:
                data = self.ais.get(self.bucket, name, self.provider, latest=True)
            else:
                data = self.ais.get(self.bucket, name, self.provider, direct=True)
            self.reads.object_requests += 1
            if data is None:
                raise Vanished(f"{self.provider}://{self.bucket}/{name} disappeared during conversion")
            out.append(data)
        self.reads.files += len(out)
        return out

    def lines(self, path: str) -> Iterator[str] | None:
        if not self.ais.exists(self.bucket, self.prefix + path, self.provider):
            return None
        return self.ais.stream_lines(self.bucket, self.prefix + path, self.provider, latest=self.remote)

    def open_file(self, path: str) -> BinaryIO | None:
        """The object copied into a temporary file (Parquet needs to seek; a 450 MB COCO file stays on disk)."""
        spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned open: the caller closes it)
        try:
            if not self.ais.copy_to(self.bucket, self.prefix + path, spool, self.provider, latest=self.remote):
                spool.close()
                return None
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def describe(self) -> str:
        return f"{self.provider}://{self.bucket}/{self.prefix}"


class VolumeSource:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.listing = ListingStats()
        self.reads = ReadStats()

    def files(self) -> Iterator[RawFile]:
        if not self.root.is_dir():
            raise SourceError(f"source directory {self.root} does not exist")
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            self.listing.pages += 1
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                if full.is_symlink() or not full.is_file():
                    continue
                self.listing.files += 1
                st = full.stat()
                yield RawFile(path=full.relative_to(self.root).as_posix(), size=st.st_size, tag=str(st.st_mtime_ns))

    def read_many(self, paths: Sequence[str]) -> list[bytes]:
        out = []
        for p in paths:
            try:
                out.append((self.root / p).read_bytes())
            except FileNotFoundError as e:
                raise Vanished(f"{self.root / p} disappeared during conversion") from e
        self.reads.files += len(out)
        return out

    def lines(self, path: str) -> Iterator[str] | None:
        full = self.root / path
        if not full.is_file():
            return None

        def read() -> Iterator[str]:
            with open(full, encoding="utf-8", errors="replace") as f:
                for line in f:
                    yield line.rstrip("\r\n")

        return read()

    def open_file(self, path: str) -> BinaryIO | None:
        full = self.root / path
        return open(full, "rb") if full.is_file() else None

    def describe(self) -> str:
        return f"volume:{self.root}"


__all__ = ["AisSource", "ListingError", "Source", "SourceError", "VolumeSource"]
