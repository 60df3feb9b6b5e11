"""Metadata tables and COCO-style annotation files, read by the planner: every row becomes value records of the
sample its join column names, for the planner's external sort (`samples.value_record`).

Memory: one row (CSV, TSV, JSON Lines) or one record batch (Parquet); a COCO file is streamed element by
element and its annotations are brought to their image by a second external sort (runs in the output bucket),
so only one image's annotations are held at a time. Rows that cannot be used are counted by reason.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

from sharded_dataset_operator.core import naming
from sharded_dataset_operator.core.coco import CocoError, annotation_image_id, coco_elements, coco_member, image_of
from sharded_dataset_operator.core.extsort import ExternalSorter, RunStore
from sharded_dataset_operator.core.keys import key_problem
from sharded_dataset_operator.core.layout import COCO, TableRule
from sharded_dataset_operator.core.samples import Grouper, value_record
from sharded_dataset_operator.core.tables import Row, TableError, TableSpec, json_member, read_rows, value_text

NO_FIELD = "no-field"  # the row names a path no field pattern matches
INVALID_KEY = "invalid-key"  # the row's key is not a valid sample key


class MetadataError(Exception):
    """A table or annotation file cannot be used at all (the message names it): the plan fails."""


def _key(grouper: Grouper, table: TableRule, join: str) -> str | None:
    if table.join_by == "path":  # `./0001.jpg` and `0001.jpg` name the same file
        return grouper.key_of(posixpath.normpath(table.prefix + join))
    return join if key_problem(join, grouper.layout.key.mode != "basename") is None else None


def _row_records(grouper: Grouper, table: TableRule, key: str, row: Row) -> Iterator[str]:
    for member in table.members:
        record = value_record(key, member.name, value_text(row.values.get(member.column)))
        if record is not None:
            yield record
    if table.json_member:
        chosen = {c: row.values.get(c) for c in table.json_columns}
        record = value_record(key, table.json_member, json_member(chosen))
        if record is not None:
            yield record


def table_records(
    grouper: Grouper, table: TableRule, stream: BinaryIO, counts: Counter[str], store: RunStore, base: str, buffer: int
) -> Iterator[str]:
    """The value records of one table (rows not used are counted in `counts` by reason)."""
    if table.format == COCO:
        yield from _coco_records(grouper, table, stream, counts, store, base, buffer)
        return
    spec = TableSpec(
        path=table.path,
        format=table.format,
        join=table.join_column,
        select=table.selected(),
        delimiter=table.delimiter,
        quoting=table.quoting,
        header=table.header,
        columns=table.columns,
    )
    try:
        for row in read_rows(spec, stream):
            if isinstance(row, str):
                counts[row] += 1
                continue
            key = _key(grouper, table, row.join)
            if key is None:
                counts[NO_FIELD if table.join_by == "path" else INVALID_KEY] += 1
                continue
            yield from _row_records(grouper, table, key, row)
    except TableError as e:
        raise MetadataError(str(e)) from e


def _coco_records(
    grouper: Grouper, table: TableRule, stream: BinaryIO, counts: Counter[str], store: RunStore, base: str, buffer: int
) -> Iterator[str]:
    """Images and their annotations, joined by image id through an external sort; one JSON member per image."""
    assert table.json_member is not None
    sorter = ExternalSorter(store, f"{naming.plan_run_prefix(base)}coco-", buffer_bytes=buffer)
    try:
        try:
            for section, element in coco_elements(stream):
                if section == "images":
                    image = image_of(element)
                    if isinstance(image, str):
                        counts[image] += 1
                    else:
                        sorter.add(f"{json.dumps(image.id)}\0i\0{json.dumps(image.record, ensure_ascii=False)}")
                elif section == "annotations":
                    image_id = annotation_image_id(element)
                    if image_id is None:
                        counts["bad-annotation"] += 1
                    else:
                        sorter.add(f"{json.dumps(image_id)}\0a\0{json.dumps(element, ensure_ascii=False)}")
        except CocoError as e:
            raise MetadataError(f"annotation file {table.path}: {e}") from e
        current: str | None = None
        images: list[dict[str, object]] = []
        annotations: list[dict[str, object]] = []

        def flush() -> Iterator[str]:
            if len(images) > 1:
                counts["duplicate-image-id"] += len(images)
            elif not images:
                counts["annotation-without-image"] += len(annotations)
            else:
                file_name = str(images[0].get("file_name"))
                key = grouper.key_of(table.prefix + file_name)
                if key is None:
                    counts[NO_FIELD] += 1
                    return
                record = value_record(key, str(table.json_member), coco_member(images[0], annotations))
                if record is not None:
                    yield record

        for record in sorter.sorted():
            image_id, kind, body = record.split("\0", 2)
            if image_id != current:
                if current is not None:
                    yield from flush()
                current, images, annotations = image_id, [], []
            (images if kind == "i" else annotations).append(json.loads(body))
        if current is not None:
            yield from flush()
    finally:
        sorter.close()
